// Kernel text diffs, judged. The text-diff view (src/views/text-diff.ts) lists the instructions
// that differ from a clean copy of the text; this decides, by what owns the new code, which are
// the kernel instrumenting itself and which are patches:
//   - ftrace: a 5-byte call at a function's fentry site to ftrace_caller/ftrace_regs_caller, to a
//     trampoline of a registered ftrace ops (or, without the ftrace view, to a copy of those
//     callers' code), to a BPF trampoline; or the site back to its NOP;
//   - kprobes: int3 at a registered kprobe's address, or an optimized kprobe's jmp there;
//   - BPF dispatchers (bpf_dispatcher_*_func) jumping into BPF code;
//   - SMP alternatives: a lock prefix switched to ds and back;
//   - jump labels and static calls are masked by the view already.
// Everything else (a jmp/call into a module or memory nobody owns, int3 where no kprobe is, any
// other bytes) is kernel-integrity-changed with the function, offset, bytes, the new instruction,
// its destination and the destination's owner. Legitimate changes raise nothing; they are listed
// as "instrumented" in the evidence of whatever else is raised.
import type { KernelSnapshot, TextBranch, TextSite, TextSiteGroup } from '../views/types.js';
import { FTRACE_SELF } from '../views/ftrace-labels.js';
import { sameHashKind, type KernelBaseline } from './baseline.js';
import { hex, type DetectorResult, type JsonValue, type Observation } from './types.js';

const FTRACE_CALLERS = new Set(['ftrace_caller', 'ftrace_regs_caller']);
const DISPATCHERS = new Set(['x64_sys_call', 'ia32_sys_call', 'x32_sys_call']);

/** True when the snapshot's text diff is against a clean copy whose hashes are the baseline's (same boot). */
export function textDiffTrusted(snap: KernelSnapshot, baseline: KernelBaseline | null): boolean {
  const d = snap.textDiff;
  const was = baseline?.boot.textHash ?? null;
  if (!d?.reference || was === null || !baseline || baseline.boot.slide !== hex(snap.kernel.kaslrSlide)) return false;
  return d.errors.length === 0 && (d.reference.textHash === was || d.reference.pagedHash === was);
}

function ownerJson(b: TextBranch): JsonValue {
  switch (b.owner.kind) {
    case 'kernel': return { kind: 'kernel', symbol: b.owner.symbol };
    case 'module': return { kind: 'module', module: b.owner.module, symbol: b.owner.symbol };
    default: return b.looksLike ? { kind: 'unknown', looksLike: b.looksLike } : { kind: 'unknown' };
  }
}

function ownerText(b: TextBranch): string {
  switch (b.owner.kind) {
    case 'kernel': return b.owner.symbol;
    case 'module': return `module ${b.owner.module}`;
    default: return 'memory no module or kernel symbol owns';
  }
}

const within = (a: bigint, start: bigint, size: number | bigint): boolean => a >= start && a < start + BigInt(size);

/** Who legitimately owns a fentry call's target, or null. */
function ftraceOwner(snap: KernelSnapshot, b: TextBranch): string | null {
  if (b.owner.kind === 'kernel' && FTRACE_CALLERS.has(b.owner.symbol)) return `ftrace (${b.owner.symbol})`;
  if (b.owner.kind !== 'unknown') return null;
  const ops = snap.ftrace?.ops.find((o) => o.trampoline !== 0n && within(b.target, o.trampoline, Math.max(o.trampolineSize, 1)));
  if (ops) return `ftrace ops ${hex(ops.address)} trampoline`;
  const region = snap.moduleArea?.regions.find((r) => within(b.target, r.start, r.size));
  if (region?.owner === 'ftrace-trampoline') return 'ftrace trampoline';
  if (region?.owner === 'bpf-jit') return `BPF trampoline${region.name ? ` (${region.name})` : ''}`;
  const prog = snap.bpf?.programs.find((p) => p.jited && within(b.target, p.jited.start, p.jited.size));
  if (prog) return `BPF program ${prog.name}`;
  // Without the ftrace view, an ops' trampoline is known by being a copy of ftrace's own caller.
  if (!snap.ftrace && b.looksLike === 'ftrace-trampoline') return 'ftrace trampoline (a copy of ftrace_regs_caller)';
  return null;
}

const at = (s: TextSite): string => s.function === null ? hex(s.address) : `${s.function}+0x${s.offset.toString(16)}`;

/** Why a changed instruction is the kernel's own instrumentation, or null for a patch. */
function legitimate(snap: KernelSnapshot, s: TextSite, kprobes: ReadonlySet<bigint>): string | null {
  const probed = kprobes.has(s.address) || (snap.kprobes?.probes.some((p) => p.addr === s.address) ?? false);
  if (s.int3 && probed) return `kprobe at ${at(s)}`;
  const b = s.branch;
  // An optimized kprobe: a jmp at the probe into the kprobe slots (module-area memory no module owns).
  if (b?.kind === 'jmp' && probed && b.owner.kind === 'unknown') {
    const region = snap.moduleArea?.regions.find((r) => within(b.target, r.start, r.size));
    if (!region || region.owner === 'kprobe-slots') return `optimized kprobe at ${at(s)}`;
  }
  if (s.atEntry && b?.kind === 'call') {
    const o = ftraceOwner(snap, b);
    if (o) return `${o} called at ${at(s)}`;
  }
  // ftrace repoints its own caller's call (to the ops list function or a single ops' function) and graph jmp.
  if (b && s.function !== null && FTRACE_SELF.has(s.function) && s.offset === 0) {
    if (b.owner.kind === 'kernel') return `ftrace's ${s.function} now reaches ${b.owner.symbol}`;
    if (snap.ftrace?.ops.some((o) => o.func === b.target)) return `ftrace's ${s.function} now reaches a registered ops' function`;
  }
  if (b?.kind === 'jmp' && s.function !== null && /^bpf_dispatcher_\w+_func$/.test(s.function) && b.owner.kind !== 'module') return `BPF dispatcher ${s.function}`;
  // SMP alternatives: a lock prefix (f0) switched to ds (3e) or back as CPUs come and go.
  if (s.old.length === s.new.length) {
    const diff: number[] = [];
    for (let i = 0; i < s.old.length; i += 2) if (s.old.slice(i, i + 2) !== s.new.slice(i, i + 2)) diff.push(i);
    const pair = diff.length === 1 ? `${s.old.slice(diff[0], (diff[0] as number) + 2)}${s.new.slice(diff[0], (diff[0] as number) + 2)}` : '';
    if (pair === 'f03e' || pair === '3ef0') return `SMP alternatives at ${at(s)}`;
  }
  return null;
}

export function siteEvidence(s: TextSite): { [k: string]: JsonValue } {
  return {
    function: s.function, offset: s.offset, address: hex(s.address), old: s.old, new: s.new,
    oldInstruction: s.oldInstruction, instruction: s.instruction,
    destination: s.branch ? hex(s.branch.target) : null, owner: s.branch ? ownerJson(s.branch) : null,
    module: s.branch?.owner.kind === 'module' ? s.branch.owner.module : null,
  };
}

export function siteText(s: TextSite): string {
  const dest = s.branch ? ` (${s.branch.kind} to ${hex(s.branch.target)}, ${ownerText(s.branch)})` : '';
  return `${at(s)}: ${s.instruction}${dest}, was ${s.oldInstruction}${s.oldTarget ? ` (${s.oldTarget})` : ''}`;
}

/**
 * The changes of a dispatch switch's body that are no instrumentation (none: the body is only
 * traced), when the view's clean copy is the baseline's body; null when they cannot be explained.
 */
export function dispatcherSites(snap: KernelSnapshot, name: string, baselineHash: string): readonly TextSite[] | null {
  const d = snap.textDiff?.dispatchers.find((x) => x.name === name && x.referenceHash === baselineHash);
  if (!d || d.sites.length === 0) return null;
  const kprobes = new Set(snap.textDiff?.kprobeAddresses ?? []);
  return d.sites.filter((s) => legitimate(snap, s, kprobes) === null);
}

export function detectTextChanges(snap: KernelSnapshot, baseline: KernelBaseline | null): DetectorResult {
  const d = snap.textDiff;
  if (!d || !baseline) return { observations: [], undetermined: [] };
  if (textDiffTrusted(snap, baseline)) return judge(snap, d.sites, d.fentryGroups, d.dispatchers, d.truncated ? d.pagesChanged : null, new Set(d.kprobeAddresses));
  // No clean copy (a dump judged elsewhere): the text hash observation stands (kernel-integrity.ts);
  // beside it, what the function entries show without old bytes.
  const was = baseline.boot.textHash;
  const now = snap.integrity.textHash;
  if (!d.entries || was === null || now === null || baseline.boot.slide !== hex(snap.kernel.kaslrSlide) || !sameHashKind(was, now) || was === now) return { observations: [], undetermined: [] };
  return judge(snap, d.entries.sites, d.entries.fentryGroups, [], null, new Set(d.kprobeAddresses));
}

function judge(snap: KernelSnapshot, sites: readonly TextSite[], groups: readonly TextSiteGroup[], dispatchers: NonNullable<KernelSnapshot['textDiff']>['dispatchers'],
  truncatedPages: number | null, kprobes: ReadonlySet<bigint>): DetectorResult {
  const instrumented: string[] = [];
  const observations: Observation[] = [];
  for (const g of groups) {
    const why = g.state === 'nop' ? `${g.count} fentry sites back to their NOP` : g.branch ? ftraceOwner(snap, g.branch) : null;
    if (why !== null) { instrumented.push(g.state === 'nop' ? why : `${g.count} function entries call ${why}`); continue; }
    const b = g.branch as TextBranch;
    observations.push({
      kind: 'kernel-integrity-changed',
      key: `text:fentry-call:${hex(b.target)}`,
      summary: `${g.count} kernel function entries (${g.examples.join(', ')}) now call ${hex(b.target)} in ${ownerText(b)}, not ftrace`,
      target: null,
      evidence: { what: 'kernel text', sites: g.count, functions: [...g.examples], instruction: `call ${hex(b.target)}`, destination: hex(b.target), owner: ownerJson(b), module: b.owner.kind === 'module' ? b.owner.module : null },
    });
  }
  const patched: TextSite[] = [];
  const changedDispatchers = new Set(dispatchers.map((x) => x.name));
  for (const s of sites) {
    // A dispatch switch's own changes are explained with its body hash (kernel-integrity.ts).
    if (s.function !== null && DISPATCHERS.has(s.function) && changedDispatchers.has(s.function)) continue;
    const why = legitimate(snap, s, kprobes);
    if (why !== null) instrumented.push(why); else patched.push(s);
  }
  for (const d2 of dispatchers) for (const s of d2.sites) { const why = legitimate(snap, s, kprobes); if (why !== null) instrumented.push(why); }
  for (const s of patched) {
    observations.push({
      kind: 'kernel-integrity-changed',
      key: `text:${at(s)}:${s.new}`,
      summary: `kernel text changed at ${siteText(s)}`,
      target: null,
      evidence: { what: 'kernel text', ...siteEvidence(s), instrumented: instrumented.slice(0, 20) },
    });
  }
  if (truncatedPages !== null) {
    observations.push({
      kind: 'kernel-integrity-changed',
      key: 'text:more-sites',
      summary: `kernel text changed at more places than explained (${truncatedPages} pages differ from the clean copy)`,
      target: null,
      evidence: { what: 'kernel text', pages: truncatedPages, listed: sites.length, instrumented: instrumented.slice(0, 20) },
    });
  }
  return { observations, undetermined: [] };
}

/** What the kernel's own instrumentation changed in its text (for reports; no fault). */
export function textInstrumentation(snap: KernelSnapshot, baseline: KernelBaseline | null): string[] {
  const d = snap.textDiff;
  if (!d || !textDiffTrusted(snap, baseline)) return [];
  const kprobes = new Set(d.kprobeAddresses);
  const out: string[] = [];
  for (const g of d.fentryGroups) {
    const why = g.state === 'nop' ? 'NOP' : g.branch ? ftraceOwner(snap, g.branch) : null;
    if (why !== null) out.push(`${g.count} fentry sites: ${why}`);
  }
  for (const s of [...d.sites, ...d.dispatchers.flatMap((x) => x.sites)]) { const why = legitimate(snap, s, kprobes); if (why !== null) out.push(why); }
  return out;
}
