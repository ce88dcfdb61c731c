// eBPF programs that can hide or alter, judged by what the verified program can do, not by
// its name: a return-value override (bpf_override_return / prog->kprobe_override, a
// BPF_MODIFY_RETURN tracing program, an LSM program deciding a security hook, an extension
// replacing another program's function), writes to user memory (bpf_probe_write_user: how
// eBPF rootkits rewrite getdents buffers, sudoers reads and execve arguments), and signals
// sent from a kernel hook (bpf_send_signal: killing whoever looks). Tracing programs that only
// read, count and emit events are ordinary instrumentation and raise nothing.
import type { BpfProgramInfo, KernelSnapshot } from '../views/types.js';
import { hex, type DetectorResult, type Observation } from './types.js';

/** Helpers that change what the kernel or a process sees, and why each is a risk. */
const ALTERING_HELPERS: ReadonlyMap<string, string> = new Map([
  ['bpf_override_return', 'overrides the probed function\'s return value'],
  ['bpf_probe_write_user', 'writes into user memory'],
  ['bpf_send_signal', 'sends signals from a kernel hook'],
  ['bpf_send_signal_thread', 'sends signals from a kernel hook'],
]);

/** Why this program can hide or alter; empty when it cannot. */
export function bpfRisks(p: BpfProgramInfo): string[] {
  const reasons: string[] = [];
  for (const h of p.helpers) {
    const why = ALTERING_HELPERS.get(h);
    if (why) reasons.push(`calls ${h}: ${why}`);
  }
  if (p.kprobeOverride && !p.helpers.includes('bpf_override_return')) reasons.push('kprobe_override set: may override the probed function\'s return value');
  if (p.type === 'BPF_PROG_TYPE_LSM') reasons.push('LSM program: decides a security hook (can deny, or hide by denying)');
  if (p.type === 'BPF_PROG_TYPE_TRACING' && p.attachType === 'BPF_MODIFY_RETURN') reasons.push('fmod_ret program: replaces the function\'s return value');
  if (p.type === 'BPF_PROG_TYPE_EXT') reasons.push('extension program: replaces a function of another BPF program');
  return reasons;
}

export function detectBpfHooks(snap: KernelSnapshot): DetectorResult {
  const view = snap.bpf;
  if (!view) return { observations: [], undetermined: [] };
  const observations: Observation[] = [];
  for (const p of view.programs) {
    const reasons = bpfRisks(p);
    if (reasons.length === 0) continue;
    const at = p.attachTo ? ` on ${p.attachTo}` : '';
    observations.push({
      kind: 'bpf-hook',
      key: `bpf:${p.id}:${p.name}`,
      summary: `eBPF program ${p.id} "${p.name}" (${p.type}${p.attachType ? `/${p.attachType}` : ''}${at}) can alter: ${reasons.join('; ')}`,
      target: null,
      evidence: {
        id: p.id, name: p.name, type: p.type, attachType: p.attachType, attachTo: p.attachTo,
        helpers: [...p.helpers], reasons, kprobeOverride: p.kprobeOverride,
        address: hex(p.address), tag: p.tag ?? null, jited: p.jited ? { start: hex(p.jited.start), size: p.jited.size } : null,
      },
    });
  }
  // Programs the view could not read (an unreadable IDR, a damaged entry) leave the kind unjudged.
  const unread = view.errors.some((e) => e.where === 'bpf: profile' || e.where.startsWith('bpf: prog_idr'));
  return { observations, undetermined: unread ? ['bpf-hook'] : [] };
}
