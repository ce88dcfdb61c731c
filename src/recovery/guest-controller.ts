// What recovery (and the supervisor's scans) need from a guest, behind one
// small interface so the ladder engine and supervisor logic stay testable.
// The QEMU implementation is ./qemu-controller.ts.
import type { GuestReport } from '../detectors/types.js';

export interface ProcessCommand {
  readonly path: string;
  readonly args: readonly string[];
}

export interface GuestExecResult {
  readonly exitCode: number | null;
  readonly signal: number | null;
  readonly stdout: Buffer;
  readonly stderr: Buffer;
  readonly truncated: boolean;
}

export interface GuestController {
  readonly name: string;
  /** Bumped whenever the guest kernel restarts under us (reboot, reset, restore): kernel views must be rebuilt. */
  readonly bootGeneration: number;
  /** Registers a callback for every machine reset QEMU reports, guest-initiated reboots included. */
  onGuestReset?(listener: () => void): void;
  /** Makes sure the VM runs: adopts a running QEMU of this guest or boots one. */
  ensureRunning(timeoutMs: number): Promise<'adopted' | 'started' | 'running'>;
  /** The guest's own process list through its agent; never throws (agent trouble is `agent: 'down'`). */
  report(timeoutMs: number): Promise<GuestReport>;
  startProcess(cmd: ProcessCommand, timeoutMs: number): Promise<string>;
  killProcess(pid: number, timeoutMs: number): Promise<string>;
  rebootOs(timeoutMs: number): Promise<string>;
  restartVm(timeoutMs: number): Promise<string>;
  restoreImage(timeoutMs: number): Promise<string>;
  /** Hold: pause the vCPUs (QMP stop), or stop the VM. */
  pause(timeoutMs: number): Promise<string>;
  stop(timeoutMs: number): Promise<string>;
  /** Lets the vCPUs of a paused guest run again (QMP cont); an operator's release of a hold. */
  resume?(timeoutMs: number): Promise<string>;
  /** Runs a program in the guest through its agent, for an operator. */
  exec?(argv: readonly string[], timeoutMs: number): Promise<GuestExecResult>;
  /**
   * Waits until the guest agent answers (any boot): a guest adopted while an action that restarts
   * its kernel was under way is still booting, and is not down.
   */
  waitForAgent?(timeoutMs: number): Promise<string>;
  /** The last lines of the guest's serial console as written (hostile text: shown, never parsed). */
  consoleTail?(lines: number): string;
  /** Releases connections; leaves the VM as it is unless stopGuest. */
  close(opts: { stopGuest: boolean }): Promise<void>;
}
