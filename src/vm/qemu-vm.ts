// A QEMU/KVM guest as the supervisor and the lab drive it: guest RAM in a shared
// memory-backend-file the host can map, a QMP socket, a guest-agent socket and a
// qcow2 overlay on a golden base image (restore = discard the overlay).
import { spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, statSync, unlinkSync, openSync, closeSync, fstatSync, readSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { QmpClient } from '../qemu/qmp-client.js';
import { GuestAgentClient } from '../qemu/guest-agent-client.js';
import { isRecord } from '../qemu/json-lines.js';
import { findOnPath, run } from '../util/exec.js';
import { settlesWithin, sleep } from '../util/deadline.js';
import { errorMessage, TimeoutError } from '../util/errors.js';
import { readPid, processAlive } from '../util/pid.js';
import { acquireLock, LockHeldError, type HeldLock } from '../util/lock.js';
import type { GuestLayout } from './guest-layout.js';
import { preflightVmSpec } from './guest-vm-spec.js';

export type DiskFormat = 'qcow2' | 'raw';

/** How the guest starts: a kernel QEMU loads, or the firmware boots the guest's own disk. */
export type VmBoot =
  | { readonly kind: 'kernel'; readonly kernel: string; readonly initrd: string; readonly kernelArgs: readonly string[] }
  | { readonly kind: 'firmware'; readonly firmware: 'bios' }
  /** UEFI: `vars` is the guest's own copy of `varsTemplate`, made at first boot and at each image restore. */
  | { readonly kind: 'firmware'; readonly firmware: 'uefi'; readonly code: string; readonly varsTemplate: string; readonly vars: string };

/** virtio-net on QEMU user networking (with port forwards) or on a tap interface the appliance owns. */
export type VmNetwork =
  | { readonly user: { readonly forwards?: readonly { readonly protocol?: 'tcp' | 'udp'; readonly hostAddress?: string; readonly hostPort: number; readonly guestPort: number }[] }; readonly mac?: string }
  | { readonly tap: string; readonly mac?: string };

export interface VmSpec {
  name: string;
  boot: VmBoot;
  /** The golden image; never written. */
  baseImage: string;
  baseFormat: DiskFormat;
  /** The guest's writable state: a qcow2 overlay on baseImage. */
  overlay: string;
  /** Further disks, written directly: an image restore keeps them. */
  disks: readonly { readonly path: string; readonly format: DiskFormat; readonly readOnly: boolean }[];
  network: VmNetwork | null;
  /** Where the serial console goes. */
  consoleLog: string;
  /** Checked extra QEMU arguments (src/vm/qemu-args.ts), appended last. */
  extraArgs: readonly string[];
  memoryMiB: number;
  cpus: number;
  accel: 'tcg' | 'kvm';
  cpuModel: string;
  /** Run folder (sockets, pid file, console log) and RAM file: see guest-layout.ts. */
  layout: GuestLayout;
  qemuBinary: string;
  /** Lab and tests: QEMU dies with this process. The supervisor leaves guests running. */
  dieWithParent: boolean;
}

export class VmBusyError extends Error {
  override readonly name = 'VmBusyError';
}

const NAME_RE = /^[a-z0-9][a-z0-9-]{0,31}$/;
const live = new Set<QemuVm>();

// Last resort for an exiting process (a failed test, an uncaught error): no stray lab QEMU.
// Guests that outlive their parent by design (the supervisor's) are left alone.
process.on('exit', () => {
  for (const vm of live) if (vm.spec.dieWithParent) vm.killNow();
});

export class QemuVm {
  readonly qmpPath: string;
  readonly agentPath: string;
  readonly consolePath: string;
  readonly pidPath: string;
  private child: ChildProcess | undefined;
  private exitPromise: Promise<void> = Promise.resolve();
  private qmpClient: QmpClient | undefined;
  private agentClient: GuestAgentClient | undefined;
  private stderrTail = '';
  /** This process's claim on the guest's run folder, RAM file and overlay (see claim()). */
  private ownerLock: HeldLock | undefined;
  /** Wall time of the last start() to guest-agent ready, in ms. */
  lastBootMs = 0;

  constructor(readonly spec: VmSpec) {
    if (!NAME_RE.test(spec.name)) throw new Error(`guest name "${spec.name}" must match ${NAME_RE}`);
    this.qmpPath = spec.layout.qmpSocket;
    this.agentPath = spec.layout.agentSocket;
    this.consolePath = spec.consoleLog;
    this.pidPath = spec.layout.pidFile;
  }

  /** Guest RAM backing file, mapped by the introspection engine. */
  get ramPath(): string { return this.spec.layout.ramPath; }

  get name(): string { return this.spec.name; }
  get running(): boolean { return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null; }
  get pid(): number | undefined { return this.child?.pid; }

  get qmp(): QmpClient {
    if (!this.qmpClient || this.qmpClient.isClosed) throw new Error(`guest ${this.name}: QMP is not connected (is the VM running?)`);
    return this.qmpClient;
  }

  /** The lock file that makes one process on this machine the owner of this guest's files. */
  get ownerLockPath(): string { return join(this.spec.layout.dir, 'owner.lock'); }

  /**
   * Makes this object the one owner of the guest's run folder, sockets, RAM file and overlay on
   * this machine (start() and adopting a running QEMU do this first). Another live owner, in this
   * process or another, is refused with a VmBusyError naming its pid; one left by a dead process
   * is taken over. Idempotent.
   */
  claim(): void {
    if (this.ownerLock) return;
    mkdirSync(this.spec.layout.dir, { recursive: true });
    try {
      this.ownerLock = acquireLock(this.ownerLockPath, `guest ${this.name}`);
    } catch (e) {
      if (e instanceof LockHeldError) throw new VmBusyError(`${e.message}; stop that process or give this guest another run folder`);
      throw e;
    }
  }

  /**
   * Leaves the guest's QEMU running for another owner to adopt (as a supervisor's guests outlive it):
   * closes this object's QMP and agent connections (QEMU serves one client per socket) and gives up the claim.
   */
  detach(): void {
    this.agentClient?.close();
    this.agentClient = undefined;
    this.qmpClient?.close();
    this.qmpClient = undefined;
    this.release();
  }

  /** Gives up the claim (the guest's QEMU may go on running; a later owner adopts it). */
  release(): void {
    this.ownerLock?.release();
    this.ownerLock = undefined;
  }

  /**
   * After an adopted QEMU (launched by an earlier owner) is gone: removes what it leaves behind,
   * the RAM file above all (QEMU never deletes its mem-path file). Only while this object owns
   * the guest and no live QEMU is named by the pid file.
   */
  removeLeftovers(): void {
    if (!this.ownerLock || this.running) return;
    const pid = readPid(this.pidPath);
    if (pid !== undefined && processAlive(pid)) return;
    this.cleanupFiles();
  }

  /** The guest agent, connected on first use. */
  async agent(): Promise<GuestAgentClient> {
    if (!this.agentClient || this.agentClient.isClosed) this.agentClient = await GuestAgentClient.connect(this.agentPath);
    return this.agentClient;
  }

  /**
   * Boots the VM and waits until its guest agent answers. Returns a note when it had to replace the
   * disk overlay (it was on another golden image than this guest's, e.g. one a newer lab build superseded).
   */
  /**
   * `incoming`: a state file written by saveState() from a guest of the same spec (machine, RAM
   * size, devices, golden image): the guest resumes from it instead of booting (seconds instead of
   * a boot; many guests can start from one file). The file must not change while QEMU reads it.
   */
  async start(opts: { freshDisk?: boolean; readyTimeoutMs?: number; incoming?: string } = {}): Promise<string | null> {
    if (this.running) throw new VmBusyError(`guest ${this.name} is already running (pid ${this.pid})`);
    const claimedHere = this.ownerLock === undefined;
    this.claim();
    const s = this.spec;
    let note: string | null = null;
    let qemu: string;
    try {
      const problems = preflightVmSpec(s);
      if (problems.length) throw new Error(problems.join('; '));
      qemu = findOnPath(s.qemuBinary) ?? s.qemuBinary;
      mkdirSync(s.layout.dir, { recursive: true });
      await this.claimRunDir();
      const reuse = !opts.freshDisk && existsSync(s.overlay);
      if (reuse) {
        const backing = await this.overlayBacking();
        if (backing !== s.baseImage) {
          note = `disk overlay ${s.overlay} was on ${backing ?? 'no golden image'}${backing && !existsSync(backing) ? ' (gone)' : ''}, not ${s.baseImage}: ` +
            'recreated from the golden image; disk changes made since the guest\'s last restore are lost';
        }
      }
      if (!reuse || note !== null) await this.createOverlay();
      // The firmware's variable store belongs to the guest's state: a fresh disk gets fresh variables.
      if (s.boot.kind === 'firmware' && s.boot.firmware === 'uefi' && (opts.freshDisk || !existsSync(s.boot.vars))) {
        copyFileSync(s.boot.varsTemplate, s.boot.vars);
      }
    } catch (e) {
      // Nothing was launched: a failed start leaves the guest to whoever tries next.
      if (claimedHere) this.release();
      throw e;
    }

    // Checked after the last await before the launch: a start under way when the VM was retired
    // (a supervisor stopping now) launches nothing.
    if (this.retired) {
      if (claimedHere) this.release();
      throw new Error(`guest ${this.name}: not started: the VM was retired (its supervisor is stopping)`);
    }
    const t0 = Date.now();
    const args = this.qemuArgs();
    // QEMU runs the exec: command through /bin/sh: the path is single-quoted for it.
    if (opts.incoming !== undefined) args.push('-incoming', `exec:cat ${shellQuote(opts.incoming)}`);
    const argv = s.dieWithParent && findOnPath('setpriv') ? ['setpriv', '--pdeathsig', 'KILL', qemu, ...args] : [qemu, ...args];
    const [cmd, ...rest] = argv as [string, ...string[]];
    this.stderrTail = '';
    const child = spawn(cmd, rest, { stdio: ['ignore', 'ignore', 'pipe'], detached: !s.dieWithParent });
    this.child = child;
    live.add(this);
    child.stderr?.on('data', (d: Buffer) => { this.stderrTail = (this.stderrTail + d.toString()).slice(-4000); });
    this.exitPromise = new Promise((resolve) => child.once('exit', () => { live.delete(this); this.cleanupFiles(); resolve(); }));
    child.once('error', () => undefined);
    if (!s.dieWithParent) child.unref();

    try {
      this.qmpClient = await this.connectQmp(20_000);
      await this.waitReady(opts.readyTimeoutMs ?? 120_000);
    } catch (e) {
      await this.stop();
      throw e;
    }
    this.lastBootMs = Date.now() - t0;
    return note;
  }

  /** Polls the guest agent until it answers guest-ping. */
  async waitReady(timeoutMs = 120_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let last = 'no attempt';
    while (Date.now() < deadline) {
      if (!this.running) throw new Error(`guest ${this.name}: QEMU exited during boot: ${this.stderrTail.trim() || 'no message'}\n${this.consoleTail(10)}`);
      try {
        const agent = await this.agent();
        await agent.sync(Math.min(2_000, Math.max(deadline - Date.now(), 1)));
        await agent.ping(2_000);
        return;
      } catch (e) {
        last = errorMessage(e);
        await sleep(250);
      }
    }
    throw new TimeoutError(`guest ${this.name}: guest agent not ready (${last}); console:\n${this.consoleTail(10)}`, timeoutMs);
  }

  /**
   * Writes the running guest's whole state (RAM, devices, CPU) to `path` for start({ incoming }).
   * The guest is paused at the end (QEMU's post-migration state); stop() it afterwards.
   */
  async saveState(path: string, timeoutMs = 120_000): Promise<void> {
    await this.qmp.execute('migrate', { uri: `exec:cat > ${shellQuote(path)}` });
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const r = await this.qmp.execute('query-migrate');
      const status = isRecord(r) ? r['status'] : undefined;
      if (status === 'completed') return;
      if (status === 'failed' || status === 'cancelled') throw new Error(`guest ${this.name}: saving its state to ${path}: migration ${String(status)} (${isRecord(r) ? String(r['error-desc'] ?? '') : ''})`);
      if (Date.now() > deadline) throw new TimeoutError(`guest ${this.name}: saving its state to ${path}`, timeoutMs);
      await sleep(100);
    }
  }

  /** QMP system_reset: the guest OS restarts in the same QEMU; waits for the agent. */
  async reset(readyTimeoutMs = 120_000): Promise<void> {
    await this.qmp.execute('system_reset');
    await sleep(500);
    await this.waitReady(readyTimeoutMs);
  }

  /** Stops QEMU: QMP quit, then SIGKILL if it does not exit. Removes sockets and the RAM file. */
  async stop(graceMs = 5_000): Promise<void> {
    this.agentClient?.close();
    this.agentClient = undefined;
    if (this.running) {
      try { await this.qmpClient?.execute('quit', undefined, graceMs); } catch { /* killed below */ }
      const exited = await settlesWithin(this.exitPromise, graceMs);
      if (!exited) {
        this.killNow();
        await this.exitPromise;
      }
    }
    this.qmpClient?.close();
    this.qmpClient = undefined;
    this.cleanupFiles();
    this.release();
  }

  /**
   * Clean shutdown: the guest OS powers off through its agent (QEMU exits when it does);
   * a guest that does not go within timeoutMs is stopped hard. Returns how it ended.
   */
  async shutdown(timeoutMs = 30_000): Promise<'powered-off' | 'forced'> {
    if (!this.running) return 'powered-off';
    try {
      await (await this.agent()).shutdown('powerdown');
    } catch {
      // No agent to ask (and a minimal guest has no ACPI daemon): stop it hard.
      await this.stop();
      return 'forced';
    }
    const exited = await settlesWithin(this.exitPromise, timeoutMs);
    if (exited) {
      await this.stop();
      return 'powered-off';
    }
    await this.stop();
    return 'forced';
  }

  /** Image restore: stop, discard the overlay, recreate it from the golden image, boot. */
  async restoreImage(readyTimeoutMs?: number): Promise<void> {
    await this.stop();
    rmSync(this.spec.overlay, { force: true });
    await this.start({ freshDisk: true, ...(readyTimeoutMs ? { readyTimeoutMs } : {}) });
  }

  /** The console log's last lines, from its last 16 KiB at most (the log grows with the guest's output). */
  consoleTail(lines: number): string {
    let fd: number | undefined;
    try {
      fd = openSync(this.consolePath, 'r');
      const size = fstatSync(fd).size;
      const len = Math.min(size, 16 * 1024);
      const buf = Buffer.alloc(len);
      const got = readSync(fd, buf, 0, len, size - len);
      return buf.subarray(0, got).toString('utf8').split('\n').slice(-lines).join('\n');
    } catch {
      return '(no console log)';
    } finally {
      if (fd !== undefined) closeSync(fd);
    }
  }

  private retired = false;

  /** Kills a QEMU launched here now (SIGKILL) and refuses every later start: for a process about to exit. */
  retire(): void {
    this.retired = true;
    const pid = this.child?.pid;
    if (pid !== undefined && this.running) {
      try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
      this.cleanupFiles();
    }
  }

  /** Synchronous kill for exit paths. */
  killNow(): void {
    const pid = this.child?.pid;
    if (pid !== undefined && this.running) {
      try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
    }
    this.cleanupFiles();
    this.release();
  }

  /** The QEMU command line (without the binary) this spec starts with. */
  qemuArgs(): string[] {
    const s = this.spec;
    const mem = `${s.memoryMiB}M`;
    const boot: string[] = [];
    if (s.boot.kind === 'kernel') {
      boot.push('-kernel', s.boot.kernel, '-initrd', s.boot.initrd, '-append', s.boot.kernelArgs.join(' '));
    } else if (s.boot.firmware === 'uefi') {
      boot.push('-drive', `if=pflash,format=raw,unit=0,readonly=on,file=${qemuValue(s.boot.code)}`,
        '-drive', `if=pflash,format=raw,unit=1,file=${qemuValue(s.boot.vars)}`);
    } // BIOS: QEMU's default firmware (SeaBIOS).
    const disks: string[] = [
      '-drive', `if=none,id=iv-disk0,file=${qemuValue(s.overlay)},format=qcow2`,
      '-device', `virtio-blk-pci,drive=iv-disk0${s.boot.kind === 'firmware' ? ',bootindex=0' : ''}`,
    ];
    s.disks.forEach((d, i) => {
      disks.push('-drive', `if=none,id=iv-disk${i + 1},file=${qemuValue(d.path)},format=${d.format}${d.readOnly ? ',readonly=on' : ''}`,
        '-device', `virtio-blk-pci,drive=iv-disk${i + 1}`);
    });
    const net: string[] = [];
    if (s.network === null) {
      net.push('-nic', 'none');
    } else {
      const backend = 'tap' in s.network
        ? `tap,id=iv-net0,ifname=${s.network.tap},script=no,downscript=no`
        : ['user,id=iv-net0', ...(s.network.user.forwards ?? []).map((f) => `hostfwd=${f.protocol ?? 'tcp'}:${f.hostAddress ?? '127.0.0.1'}:${f.hostPort}-:${f.guestPort}`)].join(',');
      // No option ROM: the guest boots from its disk, never over the network.
      net.push('-netdev', backend, '-device', `virtio-net-pci,netdev=iv-net0,romfile=${s.network.mac ? `,mac=${s.network.mac}` : ''}`);
    }
    return [
      '-name', `introvisor-${s.name},process=introvisor-${s.name}`,
      '-accel', s.accel,
      '-machine', 'q35,memory-backend=ram0',
      '-object', `memory-backend-file,id=ram0,size=${mem},mem-path=${s.layout.ramPath},share=on`,
      '-m', mem,
      '-smp', String(s.cpus),
      '-cpu', s.cpuModel,
      ...boot,
      '-display', 'none',
      '-nodefaults',
      '-no-user-config',
      '-serial', `file:${this.consolePath}`,
      '-qmp', `unix:${this.qmpPath},server=on,wait=off`,
      '-chardev', `socket,id=qga0,path=${this.agentPath},server=on,wait=off`,
      '-device', 'virtio-serial-pci',
      '-device', 'virtserialport,chardev=qga0,name=org.qemu.guest_agent.0',
      ...disks,
      ...net,
      '-pidfile', this.pidPath,
      ...s.extraArgs,
    ];
  }

  /** The golden image the overlay sits on, as its qcow2 header names it. */
  private async overlayBacking(): Promise<string | null> {
    const r = await run('qemu-img', ['info', '--output=json', '-U', this.spec.overlay]);
    let info: unknown;
    try { info = JSON.parse(r.stdout); } catch { throw new Error(`qemu-img info ${this.spec.overlay}: not JSON`); }
    const b = isRecord(info) ? info['backing-filename'] : undefined;
    return typeof b === 'string' ? b : null;
  }

  private async createOverlay(): Promise<void> {
    rmSync(this.spec.overlay, { force: true });
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', this.spec.baseImage, '-F', this.spec.baseFormat, this.spec.overlay]);
  }

  private async connectQmp(timeoutMs: number): Promise<QmpClient> {
    const deadline = Date.now() + timeoutMs;
    let last = '';
    while (Date.now() < deadline) {
      if (!this.running) throw new Error(`guest ${this.name}: QEMU exited at start: ${this.stderrTail.trim() || 'no message'}`);
      if (existsSync(this.qmpPath)) {
        try { return await QmpClient.connect(this.qmpPath, 5_000); } catch (e) { last = errorMessage(e); }
      }
      await sleep(50);
    }
    throw new TimeoutError(`guest ${this.name}: QMP socket ${this.qmpPath} (${last})`, timeoutMs);
  }

  /** Refuses a run dir whose sockets have a live listener; clears stale ones. */
  private async claimRunDir(): Promise<void> {
    for (const p of [this.qmpPath, this.agentPath]) {
      if (!existsSync(p)) continue;
      if (await listening(p)) {
        throw new VmBusyError(`socket path busy: ${p} already has a listener (is guest "${this.name}" running in another process?)`);
      }
      unlinkSync(p);
    }
    if (existsSync(this.spec.layout.ramPath)) {
      // Another QEMU may hold it; a stale one is just removed.
      const holder = readPid(this.pidPath);
      if (holder !== undefined && processAlive(holder)) {
        throw new VmBusyError(`guest ${this.name}: RAM file ${this.spec.layout.ramPath} belongs to running QEMU pid ${holder}`);
      }
      rmSync(this.spec.layout.ramPath, { force: true });
    }
    // Prove the RAM directory is writable now, not as a QEMU error later.
    const probe = `${this.spec.layout.ramPath}.probe`;
    closeSync(openSync(probe, 'w'));
    unlinkSync(probe);
  }

  private cleanupFiles(): void {
    // QEMU leaves its mem-path file behind; the sockets too when killed.
    for (const p of [this.spec.layout.ramPath, this.qmpPath, this.agentPath, this.pidPath]) {
      try { if (statSync(p)) rmSync(p, { force: true }); } catch { /* absent */ }
    }
  }
}

/** A path as one /bin/sh word. */
function shellQuote(path: string): string {
  return `'${path.replaceAll("'", "'\\''")}'`;
}

/** A path inside a comma-separated QEMU option value: commas are doubled. */
function qemuValue(path: string): string {
  return path.replaceAll(',', ',,');
}

function listening(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ path });
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('error', () => resolve(false));
  });
}
