// `introvisor run`: the one composition root. It builds every adapter (the
// SQLite store and its ladder/baseline tables, QEMU guests and their
// controllers, introspection, the write trap, the record/report services) from
// a resolved SupervisorConfig and hands them to one GuestWatch loop per guest.
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { packageRoot } from '../native/binding.js';
import { EventStore } from '../store/event-store.js';
import { SqliteLadderStateStore } from '../store/ladder-state-store.js';
import { SqliteBaselineStore } from '../store/baseline-store.js';
import { loadPolicyFile } from '../policy/schema.js';
import { DEFAULT_POLICY } from '../policy/defaults.js';
import { fixedPolicySource } from '../policy/fixed-source.js';
import type { Policy } from '../policy/types.js';
import { policyProblems, type GuestCapabilities } from '../policy/preflight.js';
import type { PolicyListener, PolicySource } from '../events/sink.js';
import { QemuVm } from '../vm/qemu-vm.js';
import { guestKind, guestVmSpec, preflightVmSpec } from '../vm/guest-vm-spec.js';
import { QemuGuestController } from '../recovery/qemu-controller.js';
import { LibvirtGuestController } from '../recovery/libvirt-controller.js';
import { Virsh } from '../libvirt/virsh.js';
import { errorMessage } from '../util/errors.js';
import { makeDirs } from '../util/fs.js';
import { acquireStateLock, type HeldLock } from '../util/lock.js';
import { SyscallTableTrap } from '../trap/syscall-table-trap.js';
import { GuestWatch } from './guest-watch.js';
import { DEFAULT_IMAGE_COVERAGE_MS, IntrospectorScanner } from './kernel-scanner.js';
import { EventRecorder, type StoreHealth } from './recorder.js';
import { startServices, type Services } from './services.js';
import { ControlOperations } from '../control/operations.js';
import { startControlServer, type ControlServer } from '../control/server.js';
import { controlSocketPath } from '../control/protocol.js';
import type { GuestConfig, SupervisorConfig } from './config.js';

/** A guest's controller: QEMU run by introvisor, or a domain libvirt runs. */
export type SupervisedGuest = QemuGuestController | LibvirtGuestController;

export function vmForGuest(g: GuestConfig, runRoot: string): QemuVm {
  // Guests outlive a crashed supervisor: the next one adopts them.
  return new QemuVm(guestVmSpec(g, runRoot, { dieWithParent: false }));
}

const SOFTWARE_VERSION = (JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as { version: string }).version;

export interface SupervisorOptions {
  readonly log?: (line: string) => void;
}

/** A policy listener that refuses (so the store rolls back) a policy whose ladders the guests cannot carry out. */
export function policyGate(guests: () => readonly GuestCapabilities[]): PolicyListener<Policy> {
  return (next) => {
    const problems = policyProblems(next.policy, guests());
    if (problems.length > 0) throw new Error(problems.join('; '));
  };
}

/**
 * A policy listener that checks again what every rung of every guest's ladder needs when a new
 * policy is taken (it may reach rungs no fault has climbed yet: a golden image gone since the
 * start, a libvirt domain redefined) and says each problem as an alert. It never refuses the
 * policy: the problem is the guest's, not the policy's.
 */
export function preflightOnPolicyChange(check: () => Promise<string[]>, log: (line: string) => void): PolicyListener<Policy> {
  return async (next) => {
    const problems = await check().catch((e: unknown) => [errorMessage(e)]);
    for (const p of problems) log(`ALERT preflight at policy version ${next.version}: ${p}`);
  };
}

/** A policy source that becomes the services' policy store once they start. */
class SwitchablePolicySource implements PolicySource<Policy> {
  constructor(private source: PolicySource<Policy>) {}
  use(source: PolicySource<Policy>): void { this.source = source; }
  current(): ReturnType<PolicySource<Policy>['current']> { return this.source.current(); }
  subscribe(listener: Parameters<PolicySource<Policy>['subscribe']>[0]): () => void { return this.source.subscribe(listener); }
}

export class Supervisor {
  readonly store: EventStore;
  private readonly stateLock: HeldLock;
  readonly recorder: EventRecorder;
  readonly watches: GuestWatch[] = [];
  readonly controllers: SupervisedGuest[] = [];
  private readonly policy: SwitchablePolicySource;
  private services: Services | null = null;
  private control: ControlServer | null = null;
  /** The operator's operations (control socket, page) over the guests. */
  readonly operations: ControlOperations;
  private running: Promise<void>[] = [];
  private stopping = false;
  private readonly log: (line: string) => void;

  constructor(readonly config: SupervisorConfig, opts: SupervisorOptions = {}) {
    this.log = opts.log ?? ((l) => console.log(l));
    this.policy = new SwitchablePolicySource(config.policyFile
      ? fixedPolicySource(loadPolicyFile(config.policyFile), 1, `file:${config.policyFile}`)
      : fixedPolicySource(DEFAULT_POLICY, 0, 'defaults'));
    // One supervisor per state: a second one on this database refuses to start, naming the owner.
    makeDirs(dirname(config.database));
    this.stateLock = acquireStateLock(config.database);
    try {
      this.store = new EventStore({ path: config.database, deviceId: config.deviceId });
    } catch (e) {
      this.stateLock.release();
      throw e;
    }
    this.recorder = new EventRecorder(this.store, { onInvalid: (p) => this.log(`event not recorded (a bug): ${p}`) });
    this.recorder.onHealthChange((h) => this.storeHealthChanged(h));
    const ladders = new SqliteLadderStateStore(this.store.db, config.database);
    const baselines = new SqliteBaselineStore(this.store.db);
    const virsh = new Virsh(config.libvirt);
    for (const g of config.guests) {
      const log = (l: string): void => this.log(`[${g.name}] ${l}`);
      const ctl: SupervisedGuest = guestKind(g) === 'libvirt'
        ? new LibvirtGuestController(g.name, g.image.libvirt as string, virsh, log)
        : new QemuGuestController(vmForGuest(g, config.runDir), log);
      this.controllers.push(ctl);
      this.watches.push(new GuestWatch({
        controller: ctl,
        scanner: g.introspection
          ? new IntrospectorScanner(ctl instanceof QemuGuestController ? ctl.vm.ramPath : () => ctl.ramPath(), { hmp: (c) => ctl.hmp(c) }, true, DEFAULT_IMAGE_COVERAGE_MS, (l) => this.log(`[${g.name}] ${l}`))
          : null,
        critical: g.critical,
        scanIntervalMs: g.scanIntervalMs,
        ...(g.bootTimeoutMs ? { bootTimeoutMs: g.bootTimeoutMs } : {}),
        ...(g.agentTimeoutMs ? { agentTimeoutMs: g.agentTimeoutMs } : {}),
        agentIntervalMs: g.agentIntervalMs,
        policy: this.policy,
        ladders,
        baselines,
        recorder: this.recorder,
        actionTimeoutsMs: config.actionTimeoutsMs,
        log: this.log,
        // Next to the database: the state that outlives a supervisor.
        timingsDir: join(dirname(config.database), 'timings'),
        trap: g.writeTrap === 'off' ? null : {
          guard: new SyscallTableTrap({ guest: g.name, action: g.writeTrap, log: (l) => this.log(`[${g.name}] ${l}`) }),
          qemuPid: () => ctl.qemuPid,
        },
      }));
    }
    this.operations = new ControlOperations({
      guests: this.watches, record: (e) => this.recorder.record(e), log: this.log,
      demoGuests: config.guests.filter((g) => g.image.lab === true).map((g) => g.name),
    });
  }

  /** Where the control socket listens (in the run directory). */
  get controlSocket(): string { return controlSocketPath(this.config.runDir); }

  private get capabilities(): GuestCapabilities[] {
    return this.config.guests.map((g) => ({ name: g.name, introspection: g.introspection, critical: g.critical.map((c) => ({ name: c.name, canStart: c.start !== undefined })) }));
  }

  /** Says what the running policy's ladders cannot do on these guests (at start: an alert, nothing refused). */
  private preflight(): void {
    const active = this.policy.current();
    if (!active) return;
    for (const p of policyProblems(active.policy, this.capabilities)) this.log(`ALERT policy version ${active.version}: ${p}`);
  }

  /** What every rung of every guest's ladder needs (files, firmware, the libvirt domain's definition), one line per problem. */
  private async guestPreflight(): Promise<string[]> {
    const problems: string[] = [];
    for (const c of this.controllers) problems.push(...(c instanceof QemuGuestController ? preflightVmSpec(c.vm.spec) : await c.preflight()));
    return problems;
  }

  /** The store refusing writes (or taking them again): said on every channel that still works. */
  private storeHealthChanged(h: StoreHealth): void {
    if (h.ok) this.log('store: writes are taken again; the events kept in memory are recorded');
    else this.log(`ALERT store-unavailable: the event store refuses writes (${h.error}); guarding goes on, events wait in memory`);
    this.services?.storeHealthChanged(h);
  }

  private starting: Promise<void> | null = null;

  /** Boots or adopts every guest (concurrently; one that fails to start is retried by its loop) and starts watching. */
  start(): Promise<void> {
    this.starting ??= this.startOnce();
    return this.starting;
  }

  private async startOnce(): Promise<void> {
    // What every rung of every guest's ladder needs, checked before anything starts.
    const problems = await this.guestPreflight();
    if (problems.length) throw new Error(`preflight: ${problems.join('; ')}`);
    if (this.config.report) {
      this.services = await startServices(this.store, this.config.report, { softwareVersion: SOFTWARE_VERSION, log: this.log, storeHealth: () => this.recorder.health, operations: this.operations });
      this.policy.use(this.services.policy);
      // A new policy whose ladders these guests cannot carry out is refused, and the store rolls back to the previous one.
      this.policy.subscribe(policyGate(() => this.capabilities));
      this.policy.subscribe(preflightOnPolicyChange(() => this.guestPreflight(), this.log));
    }
    this.preflight();
    // The operator's console is not the guard: without it, guarding goes on.
    try {
      this.control = await startControlServer(this.controlSocket, this.operations, this.log);
    } catch (e) {
      this.log(`ALERT control socket not served: ${errorMessage(e)}`);
    }
    this.running = this.watches.map(async (w) => {
      for (let attempt = 1; !this.stopping; attempt++) {
        try {
          await w.start();
          break;
        } catch (e) {
          this.log(`[${w.name}] cannot start the guest (attempt ${attempt}): ${errorMessage(e)}`);
          await this.pause(Math.min(60_000, 2_000 * attempt));
        }
      }
      if (!this.stopping) await w.run();
    });
  }

  private readonly wakers = new Set<() => void>();
  /** A wait that stop() cuts short. */
  private pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => { clearTimeout(t); this.wakers.delete(done); resolve(); };
      const t = setTimeout(done, ms);
      this.wakers.add(done);
    });
  }

  /** Graceful stop: each loop finishes its cycle, then guests stop (or stay, per onExit) and the store closes. */
  async stop(): Promise<void> {
    this.stopping = true;
    // A stop while start() sets up (services, control socket) waits for it: what it starts after
    // this point would otherwise never be stopped. Its loops see `stopping` and boot nothing.
    await this.starting?.catch(() => undefined);
    for (const w of this.wakers) w();
    for (const w of this.watches) w.stop();
    await this.control?.close();
    await Promise.allSettled(this.running);
    const stopGuests = this.config.onExit === 'stop-guests';
    await Promise.allSettled(this.controllers.map((c) => c.close({ stopGuest: stopGuests })));
    await this.services?.stop();
    this.recorder.flush();
    this.store.close();
    this.stateLock.release();
  }

  /**
   * Stop at once, for a process about to exit (a second Ctrl-C): the cycles in progress are not
   * waited for; with onExit stop-guests the guests' QEMU are killed (a guest booting or being
   * restored included), else they stay for the next supervisor to adopt. Events waiting in memory
   * are written; the store is left to SQLite's own recovery.
   */
  async stopNow(): Promise<void> {
    this.stopping = true;
    for (const w of this.watches) w.stop();
    if (this.config.onExit === 'stop-guests') await Promise.allSettled(this.controllers.map((c) => c.killNow()));
    this.recorder.flush();
  }
}
