// Where a guest's files live on the host: its run folder (QMP and agent sockets,
// pid file, console log), its writable disk overlay and its RAM backing file.
// Everyone that needs one of these paths (the supervisor, `inspect`, the lab)
// asks here, so they cannot disagree.
import { createHash } from 'node:crypto';
import { join, resolve } from 'node:path';
import { runDir, shmDir } from '../util/paths.js';

export interface GuestLayout {
  /** Sockets, pid file and console log live here. */
  readonly dir: string;
  readonly qmpSocket: string;
  readonly agentSocket: string;
  readonly pidFile: string;
  readonly consoleLog: string;
  /** The default writable disk: a qcow2 overlay on the golden image. */
  readonly overlay: string;
  /** A UEFI guest's own copy of the firmware's variable store (NVRAM). */
  readonly uefiVars: string;
  /** Guest RAM backing file under INTROVISOR_SHM, mapped by the introspection engine. */
  readonly ramPath: string;
}

/** The supervisor's run root when its config names none. */
export const defaultSupervisorRunRoot = (): string => join(runDir(), 'supervisor');
/** The lab's run root (tests, benchmarks, lab tools). */
export const labRunRoot = (): string => join(runDir(), 'lab');

/**
 * The layout of guest `name` under `runRoot`. The RAM file's name carries a short hash of the run
 * root: two supervisors (or a supervisor and the lab) with a guest of the same name never share
 * or delete each other's RAM file.
 */
export function guestLayout(runRoot: string, name: string): GuestLayout {
  const root = resolve(runRoot);
  const dir = join(root, 'guests', name);
  const tag = createHash('sha256').update(root).digest('hex').slice(0, 8);
  return {
    dir,
    qmpSocket: join(dir, 'qmp.sock'),
    agentSocket: join(dir, 'qga.sock'),
    pidFile: join(dir, 'qemu.pid'),
    consoleLog: join(dir, 'console.log'),
    overlay: join(dir, 'disk.qcow2'),
    uefiVars: join(dir, 'OVMF_VARS.fd'),
    ramPath: join(shmDir(), `introvisor-${tag}-${name}.ram`),
  };
}
