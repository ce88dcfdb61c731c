// ftrace hooks: a registered ftrace_ops whose handler no known code owns (not
// kernel text, not a module on the list or under /sys/module), or whose handler
// is a module's and whose filter selects functions rootkits hook (hook-targets.ts);
// and function entry sites ftrace still calls out of for an ops that is no longer
// registered. The kernel's own ops (function tracer, kprobes on ftrace, perf,
// BPF trampolines' direct ops) have their handler in kernel text and are not
// judged by what they trace; fprobe and livepatch ops are judged by the user
// code their kernel handler runs (entry/exit handlers, replacement functions).
import type { FtraceOps, HandlerOwner, KernelSnapshot } from '../views/types.js';
import { hookTargetCategory } from './hook-targets.js';
import { hex, type DetectorResult, type JsonValue, type Observation } from './types.js';

/** Most hooked function names an observation's evidence lists. */
const MAX_EVIDENCE_NAMES = 64;

export function ownerJson(o: HandlerOwner): JsonValue {
  switch (o.kind) {
    case 'kernel': return { kind: 'kernel', symbol: o.symbol };
    case 'module': return { kind: 'module', module: o.module, symbol: o.symbol };
    default: return { kind: 'unknown' };
  }
}

export function ownerText(o: HandlerOwner, at: bigint): string {
  switch (o.kind) {
    case 'kernel': return `kernel ${o.symbol}`;
    case 'module': return `module ${o.module} (${hex(at)})`;
    default: return `${hex(at)}, code no kernel symbol or module owns`;
  }
}

/** The filtered functions rootkits hook, each with why. */
export function sensitiveTargets(names: readonly string[]): { name: string; category: string }[] {
  const out: { name: string; category: string }[] = [];
  for (const n of names) {
    const c = hookTargetCategory(n);
    if (c) out.push({ name: n, category: c });
  }
  return out;
}

function hooked(ops: FtraceOps): string {
  if (ops.tracesAll) return 'every function';
  const n = ops.filterCount ?? ops.filter.length;
  return ops.filter.slice(0, 4).join(', ') + (n > 4 ? ` and ${n - 4} more` : '') || 'no function yet';
}

export function detectFtraceHooks(snap: KernelSnapshot): DetectorResult {
  const v = snap.ftrace;
  // Absent: a snapshot made without this view (older, or a scan that skipped it) judges nothing here.
  if (!v) return { observations: [], undetermined: [] };
  // The ops list could not be read at all (record walk errors alone leave the ops to judge).
  if (v.ops.length === 0 && v.errors.some((e) => !/^ftrace: (records|ftrace_page)/.test(e.where))) return { observations: [], undetermined: ['ftrace-hook'] };
  const observations: Observation[] = [];
  for (const ops of v.ops) {
    // The ops' own handler, and the user code a kernel handler runs for it (fprobe, livepatch).
    const code = [{ role: 'func', address: ops.func, owner: ops.funcOwner }, ...(ops.handlers ?? [])];
    const unknown = code.find((c) => c.owner.kind === 'unknown');
    const mod = code.find((c) => c.owner.kind === 'module');
    const culprit = unknown ?? mod;
    if (!culprit) continue;
    const o = culprit.owner;
    const module = o.kind === 'module' ? o.module : null;
    const via = culprit.role === 'func' ? '' : ` (its ${culprit.role} handler, run by kernel ${ops.funcOwner.kind === 'kernel' ? ops.funcOwner.symbol : 'code'})`;
    const base = {
      ops: hex(ops.address), handler: hex(culprit.address), role: culprit.role, owner: ownerJson(o), module, flags: ops.flags,
      trampoline: ops.trampoline === 0n ? null : hex(ops.trampoline), tracesAll: ops.tracesAll,
      filterCount: ops.filterCount ?? ops.filter.length, hooked: ops.filter.slice(0, MAX_EVIDENCE_NAMES),
    };
    const key = `ops@${hex(ops.address)}:${hex(culprit.address)}`;
    if (o.kind === 'unknown') {
      observations.push({
        kind: 'ftrace-hook', key,
        summary: `ftrace ops at ${hex(ops.address)} runs ${ownerText(o, culprit.address)}${via} in front of ${hooked(ops)}`,
        target: null,
        evidence: { ...base, reason: 'handler owned by no known code' },
      });
      continue;
    }
    if (o.kind !== 'module') continue;
    // A module's handler: only what it traces can tell a hook from a module's own instrumentation.
    const hits = ops.tracesAll ? [{ name: 'every function', category: 'all' }] : sensitiveTargets(ops.filter);
    if (hits.length === 0) continue;
    observations.push({
      kind: 'ftrace-hook', key,
      summary: `module ${o.module} hooks ${hits.slice(0, 4).map((h) => h.name).join(', ')}${hits.length > 4 ? ` and ${hits.length - 4} more` : ''} through ftrace (handler ${hex(culprit.address)}${via})`,
      target: o.module,
      evidence: { ...base, reason: 'module handler on functions rootkits hook', targets: hits.slice(0, MAX_EVIDENCE_NAMES).map((h) => ({ name: h.name, category: h.category })) },
    });
  }
  // Direct calls to code no known code owns are left to the module-area view (a BPF trampoline is no module's).
  const unclaimed = v.unclaimedSites ?? [];
  if (unclaimed.length > 0) {
    observations.push({
      kind: 'ftrace-hook',
      key: `unclaimed:${[...unclaimed].sort().slice(0, 16).join(',')}`,
      summary: `ftrace calls out of ${unclaimed.slice(0, 4).join(', ')}${unclaimed.length > 4 ? ` and ${unclaimed.length - 4} more` : ''} for no registered ftrace ops (an ops taken off ftrace_ops_list after it was installed)`,
      target: null,
      evidence: {
        reason: 'enabled ftrace sites no registered ops selects', count: unclaimed.length,
        sites: unclaimed.slice(0, MAX_EVIDENCE_NAMES).map((site) => ({ site, category: hookTargetCategory(site) })),
      },
    });
  }
  return { observations, undetermined: [] };
}

/** A one-line note on legitimate instrumentation in effect (information, not a fault). */
export function instrumentationNote(snap: KernelSnapshot): string | null {
  const parts: string[] = [];
  const f = snap.ftrace;
  if (f && f.ops.length > 0) parts.push(`${f.ops.length} ftrace ops (${f.ops.map((o) => o.funcOwner.kind === 'kernel' ? o.funcOwner.symbol : o.funcOwner.kind === 'module' ? `module ${o.funcOwner.module}` : hex(o.func)).join(', ')})`);
  if (f?.enabledCount) parts.push(`${f.enabledCount} live ftrace call sites`);
  const k = snap.kprobes;
  if (k && k.probes.length > 0) parts.push(`${k.probes.length} kprobes (${k.probes.slice(0, 4).map((p) => p.symbol ?? hex(p.addr)).join(', ')}${k.probes.length > 4 ? ', ...' : ''})`);
  return parts.length > 0 ? `kernel instrumented: ${parts.join('; ')}` : null;
}
