// Starting a critical service's command in the guest, for every controller. A definition names an
// absolute program, and distributions disagree on where it lives: Debian 12, Ubuntu 20.04+ and
// RHEL 7+ merged /bin and /sbin into /usr, Debian 11 did not (its systemctl is /bin/systemctl only).
// When the agent cannot spawn a program from one of those folders, its twin across the merge is
// tried once; the result says which one ran.
import type { ProcessCommand } from './guest-controller.js';
import { NotReachableError, TimeoutError, errorMessage } from '../util/errors.js';

export interface StartExecResult {
  exitCode: number | undefined;
  signal: number | undefined;
  stderr: Buffer;
}

/** The same program on the other side of the /usr merge (/usr/bin/x <-> /bin/x, /usr/sbin/x <-> /sbin/x), if any. */
export function usrMergeTwin(path: string): string | undefined {
  const m = /^(\/usr)?\/(s?bin)\/([^/]+)$/.exec(path);
  if (!m || m[3] === '.' || m[3] === '..') return undefined;
  return m[1] ? `/${m[2]}/${m[3]}` : `/usr/${m[2]}/${m[3]}`;
}

/**
 * Runs `cmd` through `exec` (the agent's guest-exec, waited for) and resolves with what ran; rejects
 * when it did not start or exited non-zero. An agent that refused to spawn the program (an error
 * other than a timeout or a lost connection) gets the program's /usr-merge twin once.
 */
export async function startInGuest(
  guest: string, cmd: ProcessCommand,
  exec: (path: string, args: string[]) => Promise<StartExecResult>,
): Promise<string> {
  let path = cmd.path;
  let note = '';
  let r: StartExecResult;
  try {
    r = await exec(path, [...cmd.args]);
  } catch (e) {
    const twin = usrMergeTwin(path);
    if (!twin || e instanceof TimeoutError || e instanceof NotReachableError) throw e;
    try {
      r = await exec(twin, [...cmd.args]);
    } catch (e2) {
      throw new Error(`${errorMessage(e)} (nor could it start ${twin}: ${errorMessage(e2).slice(0, 300)})`);
    }
    note = ` (${path} did not start: ${errorMessage(e).slice(0, 200)})`;
    path = twin;
  }
  const what = [path, ...cmd.args].join(' ');
  if (r.exitCode !== 0) {
    throw new Error(`guest ${guest}: ${what} exited ${r.exitCode ?? `by signal ${r.signal}`}: ${r.stderr.toString().trim().slice(0, 300) || 'no message'}${note}`);
  }
  return `started ${what}${note}`;
}
