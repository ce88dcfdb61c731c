// Critical processes: each configured process must be on the kernel's task
// list (one missing from the task list is a fault). Without a
// kernel snapshot the guest's own report stands in, and the evidence says so.
import type { KernelSnapshot } from '../views/types.js';
import type { DetectorResult, GuestReport, Observation } from './types.js';

export interface CriticalProcessSpec {
  /** Name used in findings and as the recovery target. */
  readonly name: string;
  /** task_struct.comm to look for (at most 15 characters); defaults to name. */
  readonly comm?: string;
}

const COMM_MAX = 15;

export function detectMissingCritical(specs: readonly CriticalProcessSpec[], snap: KernelSnapshot | null, report: GuestReport | null): DetectorResult {
  if (specs.length === 0) return { observations: [], undetermined: [] };
  let running: Set<string>;
  let source: 'task-list' | 'guest-ps';
  if (snap && snap.tasks.errors.length === 0 && snap.tasks.tasks.length > 0) {
    running = new Set(snap.tasks.tasks.filter((t) => !t.kernelThread).map((t) => t.comm));
    source = 'task-list';
  } else if (report?.agent === 'ok') {
    // Zombies have exited; they do not count as running.
    running = new Set(report.processes.filter((p) => p.state !== 'Z' && p.state !== 'X').map((p) => p.comm));
    source = 'guest-ps';
  } else {
    return { observations: [], undetermined: ['critical-process-missing'] };
  }
  const observations: Observation[] = [];
  for (const s of specs) {
    const comm = (s.comm ?? s.name).slice(0, COMM_MAX);
    if (running.has(comm)) continue;
    observations.push({
      kind: 'critical-process-missing',
      key: s.name,
      summary: `critical process ${s.name} (comm "${comm}") is not in the ${source}`,
      target: s.name,
      evidence: { process: s.name, comm, checkedIn: source },
    });
  }
  return { observations, undetermined: [] };
}
