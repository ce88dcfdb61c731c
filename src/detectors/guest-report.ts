// Bounds on what the guest says about itself. The guest agent answers for the
// guest, so a hostile guest writes its own report: every count and string in it
// is cut to what a real guest can have before a detector looks at it, and what
// was cut is said (GuestReport.malformed), never thrown.
import type { GuestProcess, GuestReport } from './types.js';

export const GUEST_REPORT_LIMITS = {
  /** The kernel's default pid_max on up to 32 CPUs: a guarded guest has no more processes. */
  maxProcesses: 32_768,
  /**
   * The longest name /proc/PID/stat can show. A task's comm is 15 bytes (TASK_COMM_LEN), but
   * /proc prints kernel threads and workqueue workers with more ("kworker/0:1H-kblockd") from a
   * 64-byte buffer (proc_task_name), so a real guest reports up to 63.
   */
  commBytes: 63,
  /** PID_MAX_LIMIT on 64-bit kernels. */
  maxPid: 4_194_304,
  /** An agent error is the guest's text too. */
  errorChars: 500,
} as const;

/** The first `max` bytes of s as UTF-8, never splitting a character. */
export function cutUtf8(s: string, max: number): string {
  if (s.length <= max / 3) return s; // every UTF-16 unit is at most 3 bytes
  const b = Buffer.from(s.length > max ? s.slice(0, max) : s, 'utf8');
  if (b.length <= max) return s.length > max ? b.toString('utf8') : s;
  let end = max;
  while (end > 0 && ((b[end] as number) & 0xc0) === 0x80) end--; // back to a character's first byte
  return b.subarray(0, end).toString('utf8');
}

const validProcess = (p: GuestProcess): boolean =>
  Number.isInteger(p.pid) && p.pid > 0 && p.pid <= GUEST_REPORT_LIMITS.maxPid &&
  Number.isInteger(p.ppid) && p.ppid >= 0 && p.ppid <= GUEST_REPORT_LIMITS.maxPid &&
  typeof p.state === 'string' && p.state.length === 1 && typeof p.comm === 'string';

/**
 * The report with every process name, the process count and the error text cut
 * to their bounds. A report within bounds comes back as the same object; one
 * that was cut carries `malformed` (why; and whether the list is still
 * complete, which a cross-view needs). Idempotent. Linear in the number of
 * processes looked at, which is itself bounded.
 */
export function boundGuestReport(report: GuestReport): GuestReport {
  const L = GUEST_REPORT_LIMITS;
  if (report.agent === 'down') {
    return report.error.length <= L.errorChars ? report : { ...report, error: `${report.error.slice(0, L.errorChars)} ... (cut from ${report.error.length} characters)` };
  }
  const given = report.processes;
  let needsWork = given.length > L.maxProcesses;
  for (let i = 0; !needsWork && i < given.length; i++) {
    const p = given[i] as GuestProcess;
    if (!validProcess(p) || Buffer.byteLength(p.comm, 'utf8') > L.commBytes) needsWork = true;
  }
  if (!needsWork) return report;

  const reasons: string[] = [...(report.malformed?.reasons ?? [])];
  let complete = report.malformed?.complete ?? true;
  const processes: GuestProcess[] = [];
  let longNames = 0;
  let longest = 0;
  let bad = 0;
  const n = Math.min(given.length, L.maxProcesses);
  for (let i = 0; i < n; i++) {
    const p = given[i] as GuestProcess;
    if (!validProcess(p)) { bad++; continue; }
    const comm = cutUtf8(p.comm, L.commBytes);
    if (comm !== p.comm) { longNames++; longest = Math.max(longest, p.comm.length); }
    processes.push(comm === p.comm ? p : { ...p, comm });
  }
  if (given.length > L.maxProcesses) {
    reasons.push(`${given.length} processes reported, more than the ${L.maxProcesses} a guest can have; the first ${L.maxProcesses} kept`);
    complete = false;
  }
  if (longNames > 0) reasons.push(`${longNames} process name${longNames === 1 ? '' : 's'} longer than ${L.commBytes} bytes (the longest ${longest} characters), cut to what /proc can show`);
  if (bad > 0) {
    reasons.push(`${bad} entries with a bad pid, ppid or state dropped`);
    complete = false;
  }
  return { ...report, processes, malformed: { reasons, complete } };
}
