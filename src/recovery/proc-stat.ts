// The guest's process list from its /proc/<pid>/stat lines (read in the guest
// through the agent: one exec, no ps dependency).
import type { GuestProcess } from '../detectors/types.js';

/** The command the guest runs; processes that exit mid-read are skipped silently. */
// Without the reporting shell itself ($$): it has exited by the time the kernel is read, and would
// otherwise be a process only the guest lists in every report. The list is built in the shell, so
// cat (forked after the glob) is not in it either.
export const PROC_STAT_COMMAND = 's=; for f in /proc/[0-9]*/stat; do [ "$f" = "/proc/$$/stat" ] || s="$s $f"; done; cat $s 2>/dev/null; true';

/** Parses "pid (comm) S ppid ..." lines; comm may hold spaces and parentheses. */
export function parseProcStat(text: string, where: string): GuestProcess[] {
  const out: GuestProcess[] = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    const open = line.indexOf(' (');
    const close = line.lastIndexOf(') ');
    if (open < 0 || close < open) throw new Error(`${where}: not a /proc/PID/stat line: ${JSON.stringify(line.slice(0, 120))}`);
    const pid = Number(line.slice(0, open));
    const rest = line.slice(close + 2).split(' ');
    const ppid = Number(rest[1]);
    const state = rest[0] ?? '';
    if (!Number.isInteger(pid) || pid <= 0 || !Number.isInteger(ppid) || ppid < 0 || !/^[A-Za-z]$/.test(state)) {
      throw new Error(`${where}: bad pid/state/ppid in /proc stat line: ${JSON.stringify(line.slice(0, 120))}`);
    }
    out.push({ pid, ppid, comm: line.slice(open + 2, close), state });
  }
  return out;
}
