// GuestController for a domain that libvirt defines and runs. libvirt owns the
// QEMU process and both of its sockets, so the monitor, the guest agent, the
// lifecycle and the events all go through libvirt (src/libvirt/virsh.ts). The
// RAM file is the domain's memory-backend-file (memoryBacking source file,
// shared, in qemu.conf's memory_backing_dir), found from QEMU itself; the QEMU
// pid comes from libvirt's pid file. An image restore destroys the domain,
// recreates the qcow2 overlay its boot disk points at over the golden image
// (the overlay's backing file, recorded at preflight) and starts it again.
import { accessSync, constants, rmSync, statfsSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Virsh, VirshError } from '../libvirt/virsh.js';
import { AGENT_CHANNEL_XML, SHARED_FILE_MEMORY_XML, domainFacts } from '../libvirt/domain-xml.js';
import { agentExec, agentShell, type AgentExecute } from '../qemu/guest-agent-client.js';
import { isRecord } from '../qemu/json-lines.js';
import { readPid, processAlive } from '../util/pid.js';
import { findOnPath, run } from '../util/exec.js';
import { withTimeout } from '../util/deadline.js';
import { errorMessage } from '../util/errors.js';
import type { GuestReport } from '../detectors/types.js';
import type { GuestController, GuestExecResult, ProcessCommand } from './guest-controller.js';
import { PROC_STAT_COMMAND, parseProcStat } from './proc-stat.js';
import { boundGuestReport } from '../detectors/guest-report.js';
import { readBootId, waitForNewBoot } from './boot-id.js';

const TMPFS_MAGIC = 0x01021994;
const HUGETLBFS_MAGIC = 0x958458f6;
/** virsh calls that only ask libvirt something. */
const QUICK_MS = 15_000;

/** The golden image an image restore recreates the domain's overlay from (read at preflight). */
interface RestoreSource {
  readonly overlay: string;
  readonly golden: string;
  readonly goldenFormat: string;
}

export class LibvirtGuestController implements GuestController {
  bootGeneration = 0;
  private ram: string | undefined;
  private restore: RestoreSource | undefined;
  private events: { close(): void; readonly alive: boolean } | undefined;
  private readonly resetListeners: (() => void)[] = [];
  /** Starts and stops of our own, so a lifecycle event we caused is not taken for someone else's. */
  private ownLifecycle = 0;
  private closed = false;

  constructor(
    readonly name: string,
    readonly domain: string,
    readonly virsh: Virsh,
    private readonly log: (line: string) => void = () => undefined,
  ) {}

  private get what(): string { return `guest ${this.name} (libvirt domain ${this.domain})`; }

  onGuestReset(listener: () => void): void {
    this.resetListeners.push(listener);
  }

  /** The QEMU pid from libvirt's pid file (the write trap attaches to it); undefined when not running. */
  get qemuPid(): number | undefined {
    const pid = readPid(join(this.virsh.conn.stateDir, `${this.domain}.pid`));
    return pid !== undefined && processAlive(pid) ? pid : undefined;
  }

  /** The guest's RAM file, as the running QEMU says (it changes with every start of the domain). */
  async ramPath(): Promise<string> {
    if (this.ram === undefined) this.ram = await this.locateRam();
    return this.ram;
  }

  /** HMP through libvirt's monitor passthrough. */
  hmp(command: string): Promise<string> {
    return this.virsh.hmp(this.domain, command, QUICK_MS);
  }

  /**
   * What every rung of this guest's ladder needs, checked now: libvirtd answering, the domain
   * defined, shared file memory, the agent channel, reboots that restart, a qcow2 overlay as boot
   * disk over a readable golden image, qemu-img. Every problem names the guest and the field.
   */
  async preflight(): Promise<string[]> {
    const errors: string[] = [];
    const say = (what: string): void => { errors.push(`guest ${this.name}: /image/libvirt: ${what}`); };
    let xml: string;
    try {
      xml = await this.virsh.dumpXml(this.domain, { inactive: true }, QUICK_MS);
    } catch (e) {
      if (e instanceof VirshError && !e.unreachable && /failed to get domain|Domain not found/i.test(e.stderr)) {
        say(`domain "${this.domain}" is not defined in libvirt at ${this.virsh.conn.uri} (virsh list --all)`);
      } else {
        say(`libvirtd is not reachable at ${this.virsh.conn.uri}: ${errorMessage(e)}`);
      }
      return errors;
    }
    let facts;
    try {
      facts = domainFacts(xml);
    } catch (e) {
      say(`domain "${this.domain}": ${errorMessage(e)}`);
      return errors;
    }
    if (!facts.fileMemory || !facts.sharedMemory) {
      say(`domain "${this.domain}" has no shared file memory (introspection maps its RAM file): add ${SHARED_FILE_MEMORY_XML}, with memory_backing_dir on a tmpfs in qemu.conf`);
    }
    if (!facts.agentChannel) say(`domain "${this.domain}" has no guest agent channel: add ${AGENT_CHANNEL_XML} to <devices>`);
    if (facts.onReboot === 'destroy') say(`domain "${this.domain}" has <on_reboot>destroy</on_reboot>: a reboot would stop it; use restart`);
    if (!findOnPath('qemu-img')) say('qemu-img not found on PATH (apt-get install qemu-utils)');
    const disk = facts.bootDisk;
    if (!disk) {
      say(`domain "${this.domain}" has no file-backed disk: an image restore needs its boot disk to be a qcow2 overlay over the golden image`);
    } else if (disk.format !== 'qcow2') {
      say(`domain "${this.domain}"'s boot disk ${disk.file} is ${disk.format}: an image restore needs a qcow2 overlay whose backing file is the golden image`);
    } else if (findOnPath('qemu-img')) {
      try {
        const src = await this.restoreSource(disk.file);
        const problem = (f: string, mode: number): string | null => {
          try { accessSync(f, mode); return null; } catch (e) { const c = (e as NodeJS.ErrnoException).code; return c === 'ENOENT' ? 'does not exist' : c === 'EACCES' ? 'permission denied' : errorMessage(e); }
        };
        const g = problem(src.golden, constants.R_OK);
        if (g) say(`golden image ${src.golden} (the backing file of ${disk.file}) ${g}`);
        const d = problem(dirname(disk.file), constants.W_OK);
        if (d) say(`the folder of the boot disk's overlay ${dirname(disk.file)} is not writable (${d}): an image restore recreates ${disk.file}`);
        if (!g && !d) this.restore = src;
      } catch (e) {
        say(errorMessage(e));
      }
    }
    return errors;
  }

  private async restoreSource(overlay: string): Promise<RestoreSource> {
    // -U: the domain may be running, holding the image's lock.
    const r = await run('qemu-img', ['info', '-U', '--output=json', overlay], QUICK_MS);
    let info: unknown;
    try { info = JSON.parse(r.stdout); } catch { throw new Error(`qemu-img info ${overlay}: not JSON`); }
    const golden = isRecord(info) ? info['full-backing-filename'] ?? info['backing-filename'] : undefined;
    if (typeof golden !== 'string' || golden === '') {
      throw new Error(`boot disk ${overlay} has no backing file: make it a qcow2 overlay over the golden image (qemu-img create -f qcow2 -b GOLDEN -F qcow2 ${overlay})`);
    }
    const fmt = isRecord(info) ? info['backing-filename-format'] : undefined;
    return { overlay, golden, goldenFormat: typeof fmt === 'string' && /^(qcow2|raw)$/.test(fmt) ? fmt : 'qcow2' };
  }

  async ensureRunning(timeoutMs: number): Promise<'adopted' | 'started' | 'running'> {
    if (!this.restore) {
      const problems = await this.preflight();
      if (problems.length) throw new Error(problems.join('; '));
    }
    const state = await this.virsh.state(this.domain, QUICK_MS);
    if (state === 'running' || state === 'paused' || state === 'pmsuspended') {
      const known = this.ram !== undefined && this.events?.alive === true;
      this.watch();
      if (this.ram === undefined) this.ram = await this.locateRam();
      return known ? 'running' : 'adopted';
    }
    await this.startDomain(timeoutMs);
    return 'started';
  }

  async report(timeoutMs: number): Promise<GuestReport> {
    const takenAtMs = Date.now();
    try {
      const text = await agentShell(this.agentCall, PROC_STAT_COMMAND, { timeoutMs });
      let processes;
      try {
        processes = parseProcStat(text, `guest ${this.name} /proc`);
      } catch (e) {
        return { takenAtMs, agent: 'ok', processes: [], malformed: { reasons: [errorMessage(e).slice(0, 300)], complete: false } };
      }
      return boundGuestReport({ takenAtMs, agent: 'ok', processes });
    } catch (e) {
      return boundGuestReport({ takenAtMs, agent: 'down', error: errorMessage(e) });
    }
  }

  async startProcess(cmd: ProcessCommand, timeoutMs: number): Promise<string> {
    const r = await agentExec(this.agentCall, cmd.path, [...cmd.args], { timeoutMs });
    const what = [cmd.path, ...cmd.args].join(' ');
    if (r.exitCode !== 0) {
      throw new Error(`guest ${this.name}: ${what} exited ${r.exitCode ?? `by signal ${r.signal}`}: ${r.stderr.toString().trim().slice(0, 300) || 'no message'}`);
    }
    return `started ${what}`;
  }

  async killProcess(pid: number, timeoutMs: number): Promise<string> {
    if (!Number.isInteger(pid) || pid <= 1) throw new Error(`guest ${this.name}: refusing to kill pid ${pid}`);
    await agentShell(this.agentCall, `kill -9 ${pid}`, { timeoutMs });
    return `killed pid ${pid}`;
  }

  async rebootOs(timeoutMs: number): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    const before = await this.bootId(Math.min(5_000, timeoutMs)).catch(() => null);
    let via = 'virsh reboot --mode agent';
    try {
      if (before === null) throw new Error('the guest agent does not answer');
      await this.virsh.run(['reboot', this.domain, '--mode', 'agent'], QUICK_MS);
    } catch (e) {
      // The agent cannot ask; the keyboard's ctrl-alt-delete reaches init.
      via = `ctrl-alt-delete (agent: ${errorMessage(e)})`;
      await this.virsh.run(['send-key', this.domain, 'KEY_LEFTCTRL', 'KEY_LEFTALT', 'KEY_DELETE'], QUICK_MS);
    }
    this.bootGeneration++;
    const after = await this.waitForBoot(before, deadline, 'OS reboot');
    return `rebooted via ${via}; boot id ${before ?? '?'} -> ${after}`;
  }

  /** Waits until the agent answers from any boot (a guest adopted mid-reboot is booting, not down). */
  async waitForAgent(timeoutMs: number): Promise<string> {
    return `guest agent answers; boot id ${await this.waitForBoot(null, Date.now() + timeoutMs, 'boot after an interrupted action')}`;
  }

  async restartVm(timeoutMs: number): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    const state = await this.virsh.state(this.domain, QUICK_MS).catch(() => 'unknown');
    if (state === 'shut off' || state === 'crashed') {
      await this.startDomain(timeoutMs);
      return `domain was ${state}: started`;
    }
    const before = await this.bootId(Math.min(3_000, timeoutMs)).catch(() => null);
    try {
      await this.virsh.run(['reset', this.domain], QUICK_MS);
      // A paused guest (held earlier) does not boot until resumed.
      if ((await this.virsh.state(this.domain, QUICK_MS)) === 'paused') await this.virsh.run(['resume', this.domain], QUICK_MS);
    } catch (e) {
      // The monitor does not answer: the QEMU is wedged; destroy and start the domain anew.
      await this.destroy();
      await this.startDomain(Math.max(deadline - Date.now(), 1));
      return `virsh reset failed (${errorMessage(e)}): domain destroyed and started`;
    }
    this.bootGeneration++;
    const after = await this.waitForBoot(before, deadline, 'VM reset');
    return `virsh reset; boot id ${before ?? '?'} -> ${after}`;
  }

  async restoreImage(timeoutMs: number): Promise<string> {
    const t0 = Date.now();
    const src = this.restore ?? await this.preflightedRestore();
    await this.destroy();
    const stoppedMs = Date.now() - t0;
    rmSync(src.overlay, { force: true });
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', src.golden, '-F', src.goldenFormat, src.overlay], QUICK_MS);
    const t1 = Date.now();
    await this.startDomain(Math.max(timeoutMs - (t1 - t0), 1));
    return `overlay ${src.overlay} recreated from ${src.golden}; domain destroyed in ${stoppedMs} ms, booted in ${Date.now() - t1} ms`;
  }

  private async preflightedRestore(): Promise<RestoreSource> {
    const problems = await this.preflight();
    if (problems.length || !this.restore) throw new Error(problems.join('; ') || `${this.what}: no golden image known`);
    return this.restore;
  }

  async pause(timeoutMs: number): Promise<string> {
    await this.virsh.run(['suspend', this.domain], timeoutMs);
    return 'vCPUs paused (virsh suspend)';
  }

  async resume(timeoutMs: number): Promise<string> {
    await this.virsh.run(['resume', this.domain], timeoutMs);
    return 'vCPUs running (virsh resume)';
  }

  async exec(argv: readonly string[], timeoutMs: number): Promise<GuestExecResult> {
    const [path, ...args] = argv;
    if (path === undefined) throw new Error(`guest ${this.name}: exec needs a program`);
    const r = await agentExec(this.agentCall, path, args, { timeoutMs });
    return { exitCode: r.exitCode ?? null, signal: r.signal ?? null, stdout: r.stdout, stderr: r.stderr, truncated: r.truncated };
  }

  async stop(timeoutMs: number): Promise<string> {
    await withTimeout(this.destroy(), timeoutMs, `${this.what}: virsh destroy`);
    return 'domain destroyed (virsh destroy)';
  }

  /** Stop at once (a second signal to the supervisor): libvirt destroys the domain; its own start or restore in progress fails. */
  async killNow(): Promise<void> {
    this.closed = true;
    await this.destroy().catch(() => undefined);
    this.events?.close();
    this.events = undefined;
  }

  async close(opts: { stopGuest: boolean }): Promise<void> {
    this.closed = true;
    if (opts.stopGuest) await this.destroy().catch(() => undefined);
    this.events?.close();
    this.events = undefined;
  }

  /** One agent command through libvirt. */
  private readonly agentCall: AgentExecute = (command, args, timeoutMs) => this.virsh.agent(this.domain, command, args, timeoutMs);

  private async startDomain(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    this.ownLifecycle++;
    try {
      await this.virsh.run(['start', this.domain], Math.min(timeoutMs, 120_000));
    } finally {
      // Events of our own start arrive later than virsh returns; count it down after them.
      setTimeout(() => { this.ownLifecycle--; }, 5_000).unref();
    }
    this.ram = undefined;
    this.bootGeneration++;
    this.watch();
    this.ram = await this.locateRam();
    await this.waitForBoot(null, deadline, 'start');
  }

  /** Destroys the domain (an already stopped one is fine). */
  private async destroy(): Promise<void> {
    this.ownLifecycle++;
    try {
      await this.virsh.run(['destroy', this.domain], 30_000);
    } catch (e) {
      if (!(e instanceof VirshError && /not running/i.test(e.stderr))) throw e;
    } finally {
      setTimeout(() => { this.ownLifecycle--; }, 5_000).unref();
    }
    this.ram = undefined;
  }

  /**
   * The RAM file from the running QEMU: its memory-backend-file object(s) and their mem-path,
   * which must be shared and on a tmpfs (or hugetlbfs).
   */
  private async locateRam(): Promise<string> {
    const objects = await this.virsh.qmp(this.domain, 'qom-list', { path: '/objects' }, QUICK_MS);
    const backends = (Array.isArray(objects) ? objects : [])
      .filter((o): o is Record<string, unknown> => isRecord(o) && o.type === 'child<memory-backend-file>' && typeof o.name === 'string')
      .map((o) => o.name as string);
    if (backends.length !== 1) {
      throw new Error(`${this.what}: ${backends.length === 0 ? 'QEMU has no file-backed memory' : `QEMU has ${backends.length} memory backends (${backends.slice(0, 4).join(', ')}); one is supported`}: ${SHARED_FILE_MEMORY_XML}`);
    }
    const id = backends[0] as string;
    const path = await this.virsh.qmp(this.domain, 'qom-get', { path: `/objects/${id}`, property: 'mem-path' }, QUICK_MS);
    const share = await this.virsh.qmp(this.domain, 'qom-get', { path: `/objects/${id}`, property: 'share' }, QUICK_MS);
    if (typeof path !== 'string' || !path.startsWith('/')) throw new Error(`${this.what}: memory backend ${id} has mem-path ${JSON.stringify(path)}`);
    if (share !== true) throw new Error(`${this.what}: memory backend ${id} is not shared: add <access mode='shared'/> to <memoryBacking>`);
    let st;
    try {
      st = statSync(path);
    } catch (e) {
      throw new Error(`${this.what}: RAM file ${path}: ${errorMessage(e)}`);
    }
    if (!st.isFile()) throw new Error(`${this.what}: RAM file ${path} is not a file`);
    const fs = statfsSync(path);
    if (fs.type !== TMPFS_MAGIC && fs.type !== HUGETLBFS_MAGIC) {
      throw new Error(`${this.what}: RAM file ${path} is not on a tmpfs: set memory_backing_dir in libvirt's qemu.conf to a tmpfs folder (e.g. /dev/shm/libvirt)`);
    }
    return path;
  }

  /** Follows the domain's events: resets to the listeners; a start by someone else means a new RAM file. */
  private watch(): void {
    if (this.events?.alive || this.closed) return;
    this.events = this.virsh.watchEvents(this.domain, (name, detail) => {
      if (name === 'reboot') {
        for (const l of this.resetListeners) l();
      } else if (name === 'lifecycle' && /^(Started|Stopped)/.test(detail) && this.ownLifecycle === 0) {
        // Started or stopped outside introvisor (an operator's virsh): the RAM file changes.
        this.log(`domain ${this.domain} ${detail.split(' ')[0]?.toLowerCase()} outside introvisor`);
        this.ram = undefined;
        this.bootGeneration++;
        for (const l of this.resetListeners) l();
      }
    }, (why) => {
      if (!this.closed) this.log(`libvirt event stream ended (${why}); followed again at the next start or adoption`);
    });
  }

  private bootId(timeoutMs: number): Promise<string> {
    return readBootId((c, ms) => agentShell(this.agentCall, c, { timeoutMs: ms }), `guest ${this.name}`, timeoutMs);
  }

  /** Waits until the agent answers from a boot other than `before`. */
  private waitForBoot(before: string | null, deadline: number, what: string): Promise<string> {
    return waitForNewBoot({
      shell: (c, ms) => agentShell(this.agentCall, c, { timeoutMs: ms }),
      who: this.what, before, deadline, what, readTimeoutMs: 5_000, pollMs: 1_000,
    });
  }
}

