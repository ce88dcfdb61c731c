// kprobe hooks: a kprobe (or kretprobe) with a handler no known code owns, or
// with a module's handler on a function rootkits hook (hook-targets.ts). The
// kernel's own users (tracefs kprobe events and perf probes: kprobe_dispatcher,
// kretprobe_dispatcher; BPF kprobe programs through them) have their handlers
// in kernel text; a probe with no handler at all (the register/unregister trick
// that finds kallsyms_lookup_name) runs nobody's code.
import type { KernelSnapshot, KprobeHandler, KprobeInfo } from '../views/types.js';
import { hookTargetCategory } from './hook-targets.js';
import { ownerJson, ownerText } from './ftrace-hooks.js';
import { hex, type DetectorResult, type Observation } from './types.js';

function handlersOf(p: KprobeInfo): readonly KprobeHandler[] {
  if (p.handlers) return p.handlers;
  const out: KprobeHandler[] = [];
  if (p.preHandler !== 0n) out.push({ role: 'pre', address: p.preHandler, owner: p.handlerOwner });
  if (p.postHandler !== 0n) out.push({ role: 'post', address: p.postHandler, owner: p.handlerOwner });
  return out;
}

export function detectKprobeHooks(snap: KernelSnapshot): DetectorResult {
  const v = snap.kprobes;
  // Absent: a snapshot made without this view (older, or a scan that skipped it) judges nothing here.
  if (!v) return { observations: [], undetermined: [] };
  if (v.errors.length > 0 && v.probes.length === 0) return { observations: [], undetermined: ['kprobe-hook'] };
  const observations: Observation[] = [];
  for (const p of v.probes) {
    const hs = handlersOf(p);
    const unknown = hs.find((h) => h.owner.kind === 'unknown');
    const mod = hs.find((h) => h.owner.kind === 'module');
    const where = p.symbol ?? hex(p.addr);
    const category = p.symbol ? hookTargetCategory(p.symbol) : null;
    const culprit = unknown ?? (mod && category ? mod : undefined);
    if (!culprit) continue;
    const module = culprit.owner.kind === 'module' ? culprit.owner.module : null;
    observations.push({
      kind: 'kprobe-hook',
      key: `kprobe@${hex(p.address)}:${hex(p.addr)}:${hex(culprit.address)}`,
      summary: `kprobe on ${where} runs ${ownerText(culprit.owner, culprit.address)} (${culprit.role} handler)`,
      target: module,
      evidence: {
        kprobe: hex(p.address), probed: hex(p.addr), symbol: p.symbol, symbolName: p.symbolName ?? null, category, module,
        flags: p.flags, aggregate: p.aggregate !== undefined ? hex(p.aggregate) : null,
        handlers: hs.map((h) => ({ role: h.role, address: hex(h.address), owner: ownerJson(h.owner) })),
        reason: unknown ? 'handler owned by no known code' : 'module handler on a function rootkits hook',
      },
    });
  }
  return { observations, undetermined: [] };
}
