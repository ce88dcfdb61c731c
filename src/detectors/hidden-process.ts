// Hidden processes: a cross view of four lists of the guest's processes —
// the kernel task list (init_task.tasks), the pid IDR (what the kernel can
// find by number, what /proc shows), the CPUs' run queues, and the guest's own
// report (its /proc through the guest agent). A pid one view holds and another
// lacks is an observation naming both sides. Races (a process that starts or
// exits between views) do not persist, so FindingTracker confirms over scans.
import type { KernelSnapshot, TaskInfo } from '../views/types.js';
import { hex, type DetectorResult, type GuestReport, type Observation } from './types.js';

export type ProcessView = 'task-list' | 'pid-idr' | 'run-queue' | 'guest-ps';

// The memory views alone are judged twice a cycle (whether to ask the guest at once, then the scan).
const memoryOnlyAnswers = new WeakMap<KernelSnapshot, DetectorResult>();

export function detectHiddenProcesses(snap: KernelSnapshot, report: GuestReport | null): DetectorResult {
  if (report !== null) return crossView(snap, report);
  let r = memoryOnlyAnswers.get(snap);
  if (!r) { r = crossView(snap, null); memoryOnlyAnswers.set(snap, r); }
  return r;
}

function crossView(snap: KernelSnapshot, report: GuestReport | null): DetectorResult {
  // A list walk that broke off would make everything past the break look hidden.
  if (snap.tasks.errors.length > 0 || snap.pidIdr.errors.length > 0 || snap.tasks.tasks.length === 0) {
    return { observations: [], undetermined: ['hidden-process'] };
  }
  const listed = new Map<number, TaskInfo>();
  const listedByAddr = new Map<bigint, TaskInfo>();
  for (const t of [...snap.tasks.tasks, ...snap.tasks.threads]) {
    listed.set(t.pid, t);
    listedByAddr.set(t.address, t);
  }
  const idr = new Map<number, bigint>();
  const idrByAddr = new Map<bigint, number>();
  for (const e of snap.pidIdr.entries) {
    idr.set(e.pid, e.task);
    idrByAddr.set(e.task, e.pid);
  }
  const queued = new Map<bigint, number>();
  for (const rq of snap.runQueues.cpus) {
    for (const a of rq.queued) if (a !== rq.idle) queued.set(a, rq.cpu);
    // The idle task (pid 0, not on any list) is rq->curr when the CPU idles.
    if (rq.current !== 0n && rq.current !== rq.idle && (listedByAddr.has(rq.current) || idrByAddr.has(rq.current))) queued.set(rq.current, rq.cpu);
  }
  const ps = report?.agent === 'ok' ? new Map(report.processes.map((p) => [p.pid, p])) : null;

  const observations: Observation[] = [];
  const add = (pid: number | null, address: bigint | null, comm: string, holders: ProcessView[], lacking: ProcessView[]): void => {
    const who = pid !== null ? `pid ${pid} (${comm})` : `task ${address === null ? '?' : hex(address)}`;
    observations.push({
      kind: 'hidden-process',
      key: `${pid ?? (address === null ? '?' : hex(address))}:${comm}:${lacking.join(',')}`,
      summary: `${who} is in ${holders.join(', ')} but not in ${lacking.join(', ')}`,
      target: pid !== null ? String(pid) : null,
      evidence: { pid, comm, task: address === null ? null : hex(address), inViews: holders, missingFrom: lacking },
    });
  };

  const pids = new Set<number>([...listed.keys(), ...idr.keys(), ...(ps?.keys() ?? [])]);
  for (const pid of [...pids].sort((a, b) => a - b)) {
    if (pid === 0) continue;
    const t = listed.get(pid);
    const idrAddr = idr.get(pid);
    const addr = t?.address ?? idrAddr ?? null;
    const p = ps?.get(pid);
    // The guest's /proc lists thread-group leaders only.
    const isProcess = t ? t.pid === t.tgid : true;
    // Every view has it (the usual case): nothing to build.
    if (t && idrAddr !== undefined && (!ps || !isProcess || p)) continue;
    const comm = t?.comm ?? p?.comm ?? '?';
    const holders: ProcessView[] = [];
    const lacking: ProcessView[] = [];
    (t ? holders : lacking).push('task-list');
    (idrAddr !== undefined ? holders : lacking).push('pid-idr');
    if (addr !== null && queued.has(addr)) holders.push('run-queue');
    if (ps && isProcess) (p ? holders : lacking).push('guest-ps');
    if (lacking.length > 0 && holders.length > 0) add(pid, addr, comm, holders, lacking);
  }
  // Queued tasks no list knows at all (unlinked and removed from the IDR).
  for (const [addr] of queued) {
    if (!listedByAddr.has(addr) && !idrByAddr.has(addr)) add(null, addr, '?', ['run-queue'], ['task-list', 'pid-idr']);
  }
  return { observations, undetermined: [] };
}
