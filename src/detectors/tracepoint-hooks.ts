// Tracepoint hooks: a probe on a tracepoint (tracepoint_probe_register: how
// rootkits watch sys_enter/sys_exit, sched_process_fork/exec and the like) whose
// code is in a module or in no known code. The kernel's own users are no
// finding: tracefs trace events and perf (their class probes, proven through
// the probe's data), BPF raw tracepoints (the kernel's __bpf_trace_<name> with
// a real program behind it, judged by the BPF view), and every other probe in
// kernel text (the tracers', ftrace's and perf's syscall probes). A static call
// that reaches neither the tracepoint's iterator nor one of its probes is one too.
import type { KernelSnapshot, TracepointInfo, TracepointProbe } from '../views/types.js';
import { ownerJson, ownerText } from './ftrace-hooks.js';
import { hex, type DetectorResult, type JsonValue, type Observation } from './types.js';

/** Most probes listed in one observation's evidence. */
const EVIDENCE_PROBES = 16;

function probeJson(p: TracepointProbe): JsonValue {
  return { func: hex(p.func), data: hex(p.data), prio: p.prio, owner: ownerJson(p.owner), via: p.via ? { ...p.via } : null };
}

/** Why this probe is a hook, or null when it is the kernel's own. */
function hookReason(p: TracepointProbe): string | null {
  if (p.via?.kind === 'trace-event' || p.via?.kind === 'perf') return null;
  if (p.via?.kind === 'bpf') return p.via.id === null ? 'BPF raw tracepoint probe with no BPF program behind its data' : null;
  if (p.owner.kind === 'unknown') return 'probe owned by no known code';
  if (p.owner.kind === 'module') return 'probe in a module';
  return null;
}

function observation(tp: TracepointInfo, func: bigint, data: bigint | null, summary: string, reason: string, owner: JsonValue, module: string | null): Observation {
  const name = tp.name ?? hex(tp.address);
  return {
    kind: 'tracepoint-hook',
    key: `tracepoint@${hex(tp.address)}:${hex(func)}:${data === null ? 'call' : hex(data)}`,
    summary,
    target: module,
    evidence: {
      tracepoint: name, address: hex(tp.address), definedBy: tp.module ?? 'kernel', enabled: tp.enabled,
      func: hex(func), data: data === null ? null : hex(data), owner, module, reason,
      call: tp.call !== undefined ? hex(tp.call) : null, iterator: hex(tp.iterator),
      probes: tp.probes.slice(0, EVIDENCE_PROBES).map(probeJson), probeCount: tp.probes.length,
    },
  };
}

export function detectTracepointHooks(snap: KernelSnapshot): DetectorResult {
  const v = snap.tracepoints;
  // Absent: a snapshot made without this view (older, or a scan that skipped it) judges nothing here.
  if (!v) return { observations: [], undetermined: [] };
  if (v.errors.length > 0 && v.count === 0) return { observations: [], undetermined: ['tracepoint-hook'] };
  const observations: Observation[] = [];
  for (const tp of v.tracepoints) {
    const name = tp.name ?? hex(tp.address);
    for (const p of tp.probes) {
      const reason = hookReason(p);
      if (!reason) continue;
      const module = p.owner.kind === 'module' ? p.owner.module : null;
      observations.push(observation(tp, p.func, p.data, `probe on tracepoint ${name} runs ${ownerText(p.owner, p.func)}${p.via?.kind === 'bpf' ? ' (a BPF trampoline without a program)' : ''}`,
        reason, ownerJson(p.owner), module));
    }
    // The call sites go through the static call: with the key on it must reach the iterator or a probe.
    if (tp.enabled && tp.call !== undefined && tp.probes.length > 0 && tp.call !== tp.iterator && !tp.probes.some((p) => p.func === tp.call)) {
      const owner = tp.callOwner ?? { kind: 'unknown' as const };
      observations.push(observation(tp, tp.call, null, `tracepoint ${name}'s static call reaches ${ownerText(owner, tp.call)}, neither its iterator nor one of its probes`,
        'static call reaches code that is not the tracepoint\'s iterator or probe', ownerJson(owner), owner.kind === 'module' ? owner.module : null));
    }
  }
  return { observations, undetermined: [] };
}
