// GuestController for a QEMU guest (src/vm/qemu-vm.ts). It also adopts a QEMU
// of this guest that is already running (a supervisor restarted after a crash
// finds its guests still up), talking to it over its QMP and agent sockets.
import { existsSync, rmSync } from 'node:fs';
import { QemuVm } from '../vm/qemu-vm.js';
import { QmpClient, type QmpEvent } from '../qemu/qmp-client.js';
import { readPid, processAlive } from '../util/pid.js';
import { GuestAgentClient } from '../qemu/guest-agent-client.js';
import { sleep } from '../util/deadline.js';
import { NotReachableError, errorMessage } from '../util/errors.js';
import type { GuestReport } from '../detectors/types.js';
import type { GuestController, GuestExecResult, ProcessCommand } from './guest-controller.js';
import { PROC_STAT_COMMAND, parseProcStat } from './proc-stat.js';
import { boundGuestReport } from '../detectors/guest-report.js';
import { readBootId, waitForNewBoot } from './boot-id.js';


export class QemuGuestController implements GuestController {
  bootGeneration = 0;
  private adoptedQmp: QmpClient | undefined;
  private adoptedPid: number | undefined;
  private adoptedAgent: GuestAgentClient | undefined;

  /** log: where notes about what a start had to do go (a disk overlay replaced). */
  constructor(readonly vm: QemuVm, private readonly log: (line: string) => void = () => undefined) {}

  /** Boots the VM; a note from the start (a replaced disk overlay) goes to the log. */
  private async boot(opts: { freshDisk?: boolean; readyTimeoutMs: number }): Promise<void> {
    const note = await this.vm.start(opts);
    if (note) this.log(note);
  }

  get name(): string { return this.vm.name; }

  private readonly resetListeners: (() => void)[] = [];
  private readonly watchedQmp = new WeakSet<QmpClient>();

  /**
   * Called on every reset of the guest's machine that QEMU reports (QMP RESET): a reboot
   * the guest started itself included, which no action of ours announces.
   */
  onGuestReset(listener: () => void): void {
    this.resetListeners.push(listener);
  }

  private watchResets(client: QmpClient): QmpClient {
    if (!this.watchedQmp.has(client)) {
      this.watchedQmp.add(client);
      client.on('event', (e: QmpEvent) => {
        if (e.event === 'RESET') for (const l of this.resetListeners) l();
      });
    }
    return client;
  }

  /** Whether a QEMU of this guest is alive (launched here or adopted). */
  get up(): boolean {
    return this.vm.running || (this.adoptedPid !== undefined && processAlive(this.adoptedPid));
  }

  /** QEMU's pid (launched or adopted). */
  get qemuPid(): number | undefined {
    return this.vm.running ? this.vm.pid : this.adoptedPid;
  }

  async ensureRunning(timeoutMs: number): Promise<'adopted' | 'started' | 'running'> {
    if (this.up && (this.vm.running || (this.adoptedQmp && !this.adoptedQmp.isClosed))) return 'running';
    this.dropAdopted();
    const pid = readPid(this.vm.pidPath);
    if (pid !== undefined && processAlive(pid) && existsSync(this.vm.qmpPath)) {
      // Another live supervisor on this guest is refused here (VmBusyError naming its pid).
      this.vm.claim();
      try {
        this.adoptedQmp = this.watchResets(await QmpClient.connect(this.vm.qmpPath, Math.min(timeoutMs, 5_000)));
        this.adoptedPid = pid;
        return 'adopted';
      } catch (e) {
        throw new Error(`guest ${this.name}: QEMU pid ${pid} is running but its QMP socket ${this.vm.qmpPath} does not answer: ${errorMessage(e)}`);
      }
    }
    await this.boot({ readyTimeoutMs: timeoutMs });
    this.watchResets(this.vm.qmp);
    this.bootGeneration++;
    return 'started';
  }

  async report(timeoutMs: number): Promise<GuestReport> {
    const takenAtMs = Date.now();
    try {
      const agent = await this.agent(timeoutMs);
      const text = await agent.shell(PROC_STAT_COMMAND, { timeoutMs });
      let processes;
      try {
        processes = parseProcStat(text, `guest ${this.name} /proc`);
      } catch (e) {
        // The agent answered, with something no /proc gives: the guest's report is malformed (a
        // finding of its own), not an agent that is down.
        return { takenAtMs, agent: 'ok', processes: [], malformed: { reasons: [errorMessage(e).slice(0, 300)], complete: false } };
      }
      return boundGuestReport({ takenAtMs, agent: 'ok', processes });
    } catch (e) {
      return boundGuestReport({ takenAtMs, agent: 'down', error: errorMessage(e) });
    }
  }

  async startProcess(cmd: ProcessCommand, timeoutMs: number): Promise<string> {
    const agent = await this.agent(timeoutMs);
    const r = await agent.exec(cmd.path, [...cmd.args], { timeoutMs });
    const what = [cmd.path, ...cmd.args].join(' ');
    if (r.exitCode !== 0) {
      throw new Error(`guest ${this.name}: ${what} exited ${r.exitCode ?? `by signal ${r.signal}`}: ${r.stderr.toString().trim().slice(0, 300) || 'no message'}`);
    }
    return `started ${what}`;
  }

  async killProcess(pid: number, timeoutMs: number): Promise<string> {
    if (!Number.isInteger(pid) || pid <= 1) throw new Error(`guest ${this.name}: refusing to kill pid ${pid}`);
    const agent = await this.agent(timeoutMs);
    await agent.shell(`kill -9 ${pid}`, { timeoutMs });
    return `killed pid ${pid}`;
  }

  async rebootOs(timeoutMs: number): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    const before = await this.bootId(Math.min(5_000, timeoutMs)).catch(() => null);
    let via = 'guest agent guest-shutdown reboot';
    try {
      if (before === null) throw new Error('the guest agent does not answer');
      const agent = await this.agent(5_000);
      await agent.shutdown('reboot');
    } catch (e) {
      // The agent cannot ask; the keyboard's ctrl-alt-delete reaches init (inittab ::ctrlaltdel).
      via = `ctrl-alt-delete (agent: ${errorMessage(e)})`;
      await this.qmp().execute('send-key', { keys: [{ type: 'qcode', data: 'ctrl' }, { type: 'qcode', data: 'alt' }, { type: 'qcode', data: 'delete' }] });
    }
    this.bootGeneration++;
    const after = await this.waitForBoot(before, deadline, 'OS reboot');
    return `rebooted via ${via}; boot id ${before ?? '?'} -> ${after}`;
  }

  async waitForAgent(timeoutMs: number): Promise<string> {
    return `guest agent answers; boot id ${await this.waitForBoot(null, Date.now() + timeoutMs, 'boot after an interrupted action')}`;
  }

  async restartVm(timeoutMs: number): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    if (!this.up) {
      this.dropAdopted();
      await this.boot({ readyTimeoutMs: timeoutMs });
      this.bootGeneration++;
      return 'VM was gone: relaunched';
    }
    const before = await this.bootId(Math.min(3_000, timeoutMs)).catch(() => null);
    try {
      await this.qmp().execute('system_reset', undefined, 5_000);
      // A paused guest (held earlier) does not boot until continued.
      await this.qmp().execute('cont', undefined, 5_000).catch(() => undefined);
    } catch (e) {
      // QMP does not answer: the QEMU is wedged; stop it and launch anew.
      await this.stopQemu(10_000);
      await this.boot({ readyTimeoutMs: Math.max(deadline - Date.now(), 1) });
      this.bootGeneration++;
      return `QMP system_reset failed (${errorMessage(e)}): QEMU relaunched`;
    }
    this.bootGeneration++;
    const after = await this.waitForBoot(before, deadline, 'VM reset');
    return `QMP system_reset; boot id ${before ?? '?'} -> ${after}`;
  }

  async restoreImage(timeoutMs: number): Promise<string> {
    const t0 = Date.now();
    await this.stopQemu(10_000);
    rmSync(this.vm.spec.overlay, { force: true });
    const stoppedMs = Date.now() - t0;
    await this.boot({ freshDisk: true, readyTimeoutMs: Math.max(timeoutMs - stoppedMs, 1) });
    this.bootGeneration++;
    return `overlay ${this.vm.spec.overlay} recreated from ${this.vm.spec.baseImage}; stopped in ${stoppedMs} ms, booted in ${this.vm.lastBootMs} ms`;
  }

  /** HMP through QMP (the introspection engine reads CR3/CR4 with `info registers`). */
  hmp(command: string): Promise<string> {
    return this.qmp().hmp(command);
  }

  async pause(timeoutMs: number): Promise<string> {
    await this.qmp().execute('stop', undefined, timeoutMs);
    return 'vCPUs paused (QMP stop)';
  }

  async resume(timeoutMs: number): Promise<string> {
    await this.qmp().execute('cont', undefined, timeoutMs);
    return 'vCPUs running (QMP cont)';
  }

  async exec(argv: readonly string[], timeoutMs: number): Promise<GuestExecResult> {
    const [path, ...args] = argv;
    if (path === undefined) throw new Error(`guest ${this.name}: exec needs a program`);
    const agent = await this.agent(timeoutMs);
    const r = await agent.exec(path, args, { timeoutMs });
    return { exitCode: r.exitCode ?? null, signal: r.signal ?? null, stdout: r.stdout, stderr: r.stderr, truncated: r.truncated };
  }

  async stop(timeoutMs: number): Promise<string> {
    await this.stopQemu(timeoutMs);
    return 'VM stopped';
  }

  consoleTail(lines: number): string {
    return this.vm.consoleTail(lines);
  }

  async close(opts: { stopGuest: boolean }): Promise<void> {
    if (opts.stopGuest) await this.stopQemu(10_000).catch(() => undefined);
    this.dropAdopted();
    this.vm.release();
  }

  /**
   * Kills this guest's QEMU (launched or adopted) with SIGKILL at once, for a supervisor told to stop
   * now; then waits (at most waitMs) for it to go and removes the files it leaves.
   */
  async killNow(waitMs = 2_000): Promise<void> {
    const adopted = this.vm.running ? undefined : this.adoptedPid;
    this.vm.retire();
    if (adopted !== undefined && processAlive(adopted)) {
      try { process.kill(adopted, 'SIGKILL'); } catch { /* gone */ }
    }
    const until = Date.now() + waitMs;
    while (adopted !== undefined && processAlive(adopted) && Date.now() < until) await sleep(20);
    this.dropAdopted();
    // QEMU never removes its RAM file, and one killed leaves its sockets too.
    this.vm.removeLeftovers();
    this.vm.release();
  }

  private qmp(): QmpClient {
    if (this.vm.running) return this.watchResets(this.vm.qmp);
    if (this.adoptedQmp && !this.adoptedQmp.isClosed) return this.adoptedQmp;
    throw new NotReachableError(`guest ${this.name}: QMP not connected (the VM is not running)`);
  }

  private async agent(timeoutMs: number): Promise<GuestAgentClient> {
    if (this.vm.running) return this.vm.agent();
    if (!this.up) throw new NotReachableError(`guest ${this.name}: the VM is not running`);
    if (!this.adoptedAgent || this.adoptedAgent.isClosed) this.adoptedAgent = await GuestAgentClient.connect(this.vm.agentPath, Math.min(timeoutMs, 5_000));
    return this.adoptedAgent;
  }

  private async bootId(timeoutMs: number): Promise<string> {
    const agent = await this.agent(timeoutMs);
    return readBootId((c, ms) => agent.shell(c, { timeoutMs: ms }), `guest ${this.name}`, timeoutMs);
  }

  /** Waits until the agent answers from a boot other than `before`: the guest really came back. */
  private waitForBoot(before: string | null, deadline: number, what: string): Promise<string> {
    return waitForNewBoot({
      shell: async (c, ms) => (await this.agent(ms)).shell(c, { timeoutMs: ms }),
      who: `guest ${this.name}`, before, deadline, what, readTimeoutMs: 3_000, pollMs: 500,
    });
  }

  private async stopQemu(graceMs: number): Promise<void> {
    if (this.vm.running) {
      await this.vm.stop(graceMs);
      return;
    }
    const pid = this.adoptedPid;
    if (pid !== undefined && processAlive(pid)) {
      try { await this.adoptedQmp?.execute('quit', undefined, graceMs); } catch { /* killed below */ }
      const until = Date.now() + graceMs;
      while (processAlive(pid) && Date.now() < until) await sleep(50);
      if (processAlive(pid)) {
        try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
        while (processAlive(pid)) await sleep(20);
      }
    }
    this.dropAdopted();
    // QEMU never removes its RAM file, and one killed hard leaves its sockets too.
    if (pid !== undefined && !processAlive(pid)) this.vm.removeLeftovers();
  }

  private dropAdopted(): void {
    this.adoptedAgent?.close();
    this.adoptedAgent = undefined;
    this.adoptedQmp?.close();
    this.adoptedQmp = undefined;
    this.adoptedPid = undefined;
  }
}
