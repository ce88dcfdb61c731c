// `introvisor run`: every configured guest watched concurrently in one
// process, each by its own GuestWatch loop; SQLite (the event store's
// database) holds events, ladder state and kernel baselines.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../native/binding.js';
import { EventStore } from '../store/event-store.js';
import { SqliteLadderStateStore } from '../policy/ladder-store.js';
import { SqliteBaselineStore } from '../detectors/baseline-store.js';
import { loadPolicyFile } from '../policy/schema.js';
import { DEFAULT_POLICY } from '../policy/defaults.js';
import type { Policy } from '../policy/types.js';
import { QemuVm } from '../vm/qemu-vm.js';
import { guestVmSpec, preflightVmSpec } from '../vm/guest-vm-spec.js';
import { defaultSupervisorRunRoot } from '../vm/guest-layout.js';
import { QemuGuestController } from '../recovery/qemu-controller.js';
import { errorMessage } from '../util/errors.js';
import { GuestWatch } from './guest-watch.js';
import { SyscallTableTrap } from '../trap/syscall-table-trap.js';
import { startRecordReport, type RecordReport } from '../telemetry/record-report.js';
import { IntrospectorScanner } from './kernel-scanner.js';
import type { GuestConfig, SupervisorConfig } from './config.js';

export function vmForGuest(g: GuestConfig, runRoot: string): QemuVm {
  // Guests outlive a crashed supervisor: the next one adopts them.
  return new QemuVm(guestVmSpec(g, runRoot, { dieWithParent: false }));
}

const SOFTWARE_VERSION = (JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as { version: string }).version;

export interface SupervisorOptions {
  readonly log?: (line: string) => void;
}

export class Supervisor {
  readonly store: EventStore;
  readonly watches: GuestWatch[] = [];
  readonly controllers: QemuGuestController[] = [];
  private readonly filePolicy: { policy: Policy; version: number | null };
  private report: RecordReport | null = null;
  private running: Promise<void>[] = [];
  private readonly log: (line: string) => void;

  constructor(readonly config: SupervisorConfig, opts: SupervisorOptions = {}) {
    this.log = opts.log ?? ((l) => console.log(l));
    this.filePolicy = config.policy ? { policy: loadPolicyFile(config.policy), version: 1 } : { policy: DEFAULT_POLICY, version: null };
    this.store = new EventStore({ path: config.database, deviceId: config.deviceId ?? 'introvisor' });
    const ladders = new SqliteLadderStateStore(this.store.db, config.database);
    const baselines = new SqliteBaselineStore(this.store.db);
    const runRoot = config.runDir ?? defaultSupervisorRunRoot();
    const timeouts = Object.fromEntries(Object.entries(config.actionTimeoutsSec ?? {}).map(([k, v]) => [k, v * 1000]));
    for (const g of config.guests) {
      const ctl = new QemuGuestController(vmForGuest(g, runRoot), (l) => this.log(`[${g.name}] ${l}`));
      this.controllers.push(ctl);
      // The trap needs the syscall tables' addresses, so it rides on introspection.
      const trapAction = g.introspection === false ? 'off' : g.writeTrap ?? config.writeTrap ?? 'gp';
      this.watches.push(new GuestWatch({
        controller: ctl,
        scanner: g.introspection === false ? null : new IntrospectorScanner(ctl.vm.ramPath, { hmp: (c) => ctl.hmp(c) }),
        critical: (g.critical ?? []).map((c) => ({
          name: c.name, ...(c.comm ? { comm: c.comm } : {}),
          ...(c.start ? { start: { path: c.start[0] as string, args: c.start.slice(1) } } : {}),
        })),
        scanIntervalMs: 1000 * (g.scanIntervalSec ?? config.scanIntervalSec ?? 2),
        ...(g.bootTimeoutSec ? { bootTimeoutMs: 1000 * g.bootTimeoutSec } : {}),
        ...(g.agentTimeoutSec ? { agentTimeoutMs: 1000 * g.agentTimeoutSec } : {}),
        policy: () => this.policy,
        ladders,
        baselines,
        sink: this.store,
        actionTimeoutsMs: timeouts,
        log: this.log,
        trap: trapAction === 'off' ? null : {
          guard: new SyscallTableTrap({ guest: g.name, action: trapAction, log: (l) => this.log(`[${g.name}] ${l}`) }),
          qemuPid: () => ctl.qemuPid,
        },
      }));
    }
  }

  /** The running policy: the policy store's (updated over the air) when reporting is on, else the policy file. */
  get policy(): { policy: Policy; version: number | null } {
    const active = this.report?.policy.current();
    return active ? { policy: active.policy, version: active.version } : this.filePolicy;
  }

  /** Boots or adopts every guest (concurrently; one that fails to start is retried by its loop) and starts watching. */
  async start(): Promise<void> {
    // What every rung of every guest's ladder needs, checked before anything starts.
    const problems = this.controllers.flatMap((c) => preflightVmSpec(c.vm.spec));
    if (problems.length) throw new Error(`preflight: ${problems.join('; ')}`);
    const r = this.config.report;
    if (r) {
      this.report = await startRecordReport(this.store, { ...r, ...(r.initialPolicy || !this.config.policy ? {} : { initialPolicy: this.config.policy }) }, {
        softwareVersion: SOFTWARE_VERSION,
        log: this.log,
      });
    }
    this.running = this.watches.map(async (w) => {
      for (let attempt = 1; ; attempt++) {
        try {
          await w.start();
          break;
        } catch (e) {
          this.log(`[${w.name}] cannot start the guest (attempt ${attempt}): ${errorMessage(e)}`);
          await new Promise((r) => setTimeout(r, Math.min(60_000, 2_000 * attempt)));
        }
      }
      await w.run();
    });
  }

  /** Graceful stop: each loop finishes its cycle, then guests stop (or stay, per onExit) and the store closes. */
  async stop(): Promise<void> {
    for (const w of this.watches) w.stop();
    await Promise.allSettled(this.running);
    const stopGuests = (this.config.onExit ?? 'stop-guests') === 'stop-guests';
    await Promise.allSettled(this.controllers.map((c) => c.close({ stopGuest: stopGuests })));
    await this.report?.stop();
    this.store.close();
  }
}
