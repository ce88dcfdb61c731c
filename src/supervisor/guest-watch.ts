// One guest's watchdog loop: scan (kernel snapshot + the guest's own report)
// -> detectors -> confirmed findings -> ladder step (persisted) -> action ->
// verify with the next scans. Every await has a bound, so one guest's trouble
// never stalls the others, and every failure is recorded, not thrown.
import { analyzeScan } from '../detectors/index.js';
import { FindingTracker } from '../detectors/findings.js';
import type { BaselineStore } from '../detectors/baseline.js';
import { kernelKey } from '../detectors/baseline.js';
import type { Finding, GuestReport } from '../detectors/types.js';
import type { EventSink } from '../events/sink.js';
import type { EventInput } from '../events/types.js';
import {
  completeAction, initialLadderState, ladderSummary, resumeAfterRestart, step,
  type ActiveFault, type GuestLadderState, type LadderEvent,
} from '../policy/ladder.js';
import type { LadderStateStore } from '../policy/ladder-store.js';
import type { ActionKind, Policy } from '../policy/types.js';
import { DEFAULT_ACTION_TIMEOUT_MS, executeAction, type CriticalProcessConfig } from '../recovery/actions.js';
import type { GuestController } from '../recovery/guest-controller.js';
import { errorMessage } from '../util/errors.js';
import type { KernelSnapshot } from '../views/types.js';
import type { KernelScanner } from './kernel-scanner.js';
import type { SyscallTableTrap, TrapStatus } from '../trap/syscall-table-trap.js';

export interface GuestWatchOptions {
  readonly controller: GuestController;
  readonly scanner: KernelScanner | null;
  readonly critical: readonly CriticalProcessConfig[];
  readonly scanIntervalMs: number;
  readonly policy: () => { policy: Policy; version: number | null };
  readonly ladders: LadderStateStore;
  readonly baselines: BaselineStore;
  readonly sink: EventSink | null;
  readonly actionTimeoutsMs?: Partial<Record<ActionKind, number>>;
  readonly log?: (line: string) => void;
  readonly bootTimeoutMs?: number;
  readonly agentTimeoutMs?: number;
  /** The KVM write trap on the syscall tables, and QEMU's pid to attach it to; absent: off. */
  readonly trap?: { readonly guard: SyscallTableTrap; readonly qemuPid: () => number | undefined } | null;
}

export interface ScanSummary {
  readonly startedAtMs: number;
  readonly durationMs: number;
  readonly findings: readonly Finding[];
  readonly snapshotError: string | null;
  readonly agent: GuestReport['agent'];
  /** The write trap's state after this scan (absent when the trap is off). */
  readonly trap?: { readonly status: TrapStatus; readonly detail: string | null; readonly refusedWrites: number };
}

export class GuestWatch {
  readonly name: string;
  private state: GuestLadderState;
  private readonly tracker: FindingTracker;
  private stopped = false;
  private wake: (() => void) | undefined;
  scans = 0;
  lastScan: ScanSummary | null = null;

  constructor(private readonly o: GuestWatchOptions) {
    this.name = o.controller.name;
    this.state = o.ladders.load(this.name) ?? initialLadderState(this.name);
    this.tracker = new FindingTracker((k) => this.o.policy().policy.faults[k].confirmScans);
    // A reboot the guest starts itself: the next kernel may put anything on the protected pages.
    o.controller.onGuestReset?.(() => this.o.trap?.guard.beforeKernelRestart());
  }

  get ladderState(): GuestLadderState { return this.state; }

  private log(line: string): void {
    (this.o.log ?? ((l: string) => console.log(l)))(`[${this.name}] ${line}`);
  }

  private record(events: EventInput[]): void {
    if (!this.o.sink || events.length === 0) return;
    try {
      this.o.sink.recordMany(events);
    } catch (e) {
      this.log(`event store refused events: ${errorMessage(e)}`);
    }
  }

  private ladderEvents(events: readonly LadderEvent[]): EventInput[] {
    return events.map((e) => {
      if (e.type === 'alert') this.log(`ALERT ${e.reason}`);
      else this.log(`ladder ${e.fault}: ${e.reason}`);
      return {
        kind: 'ladder-step' as const,
        payload: e.type === 'step'
          ? { guest: this.name, fault: e.fault, findingId: e.findingId, step: e.step, action: e.action, attempt: e.attempt, reason: e.reason.slice(0, 1000) }
          : { guest: this.name, fault: e.fault ?? 'policy', findingId: null, step: null, action: null, attempt: 0, reason: `alert: ${e.reason}`.slice(0, 1000) },
      };
    });
  }

  /** Boots or adopts the guest and picks up a ladder that a previous supervisor left mid-way. */
  async start(): Promise<void> {
    const how = await this.o.controller.ensureRunning(this.o.bootTimeoutMs ?? 180_000);
    this.log(`guest ${how}`);
    if (this.state.pending) {
      const p = this.state.pending;
      const r = resumeAfterRestart(this.state, Date.now(), this.o.policy().policy);
      this.state = r.state;
      this.o.ladders.finishAction(this.state, p.actionId, 'interrupted', 'supervisor restarted during the action', Date.now());
      this.record(this.ladderEvents(r.events));
    }
  }

  /** Runs until stop(). */
  async run(): Promise<void> {
    while (!this.stopped) {
      const t0 = Date.now();
      try {
        await this.cycle();
      } catch (e) {
        // A bug or a store failure: say so, keep watching the other guests and this one.
        this.log(`watch cycle failed: ${e instanceof Error ? e.stack ?? e.message : String(e)}`);
      }
      const wait = this.o.scanIntervalMs - (Date.now() - t0);
      if (wait > 0 && !this.stopped) await new Promise<void>((r) => { const t = setTimeout(r, wait); this.wake = () => { clearTimeout(t); r(); }; });
      this.wake = undefined;
    }
    // Closing the trap fd unprotects the tables: the supervisor no longer watches the log.
    this.o.trap?.guard.close();
  }

  stop(): void {
    this.stopped = true;
    this.wake?.();
  }

  /** One scan and, when the ladder says so, one action. */
  async cycle(): Promise<ScanSummary> {
    const { policy, version } = this.o.policy();
    const ctl = this.o.controller;
    const t0 = Date.now();
    const report = await ctl.report(this.o.agentTimeoutMs ?? 5_000);
    let snapshot: KernelSnapshot | null = null;
    let snapshotError: string | null = this.o.scanner ? null : 'kernel introspection is off for this guest';
    if (this.o.scanner) {
      try {
        snapshot = await this.o.scanner.scan(ctl.bootGeneration);
      } catch (e) {
        snapshotError = errorMessage(e);
      }
    }
    const baseline = snapshot ? this.o.baselines.load(this.name, kernelKey(snapshot)) : null;
    // The trap: (re)armed on the tables this scan found readable, its log drained into events and a per-boot tally.
    const trap = this.o.trap ? this.o.trap.guard.update({
      qemuPid: this.o.trap.qemuPid(),
      bootGeneration: ctl.bootGeneration,
      tables: snapshot && snapshot.syscallTables.length > 0 && snapshot.syscallTables.every((t) => t.errors.length === 0) ? snapshot.syscallTables : null,
      translate: snapshot && this.o.scanner?.translate ? (va) => this.o.scanner?.translate?.(va) ?? null : null,
    }) : null;
    const analysis = analyzeScan({ nowMs: t0, snapshot, snapshotError, report, critical: this.o.critical, baseline, ...(trap ? { refusedWrites: trap.tally } : {}) });
    if (analysis.baselineToRecord) {
      this.o.baselines.save(this.name, analysis.baselineToRecord);
      this.log(baseline ? 'kernel baseline: new boot recorded' : 'kernel baseline recorded at the first clean scan');
    }
    const tracked = this.tracker.update(analysis, t0);
    const events: EventInput[] = [...(trap?.events ?? [])];
    for (const f of tracked.cleared) {
      this.log(`finding cleared: ${f.kind} ${f.id}`);
      events.push({ kind: 'finding', payload: { guest: this.name, findingId: f.id, fault: f.kind, state: 'cleared', severity: f.severity, summary: f.summary.slice(0, 1000), evidence: f.evidence } });
    }
    for (const f of tracked.raised) {
      this.log(`finding raised: ${f.kind}: ${f.summary}`);
      events.push({ kind: 'finding', payload: { guest: this.name, findingId: f.id, fault: f.kind, state: 'raised', severity: f.severity, summary: f.summary.slice(0, 1000), evidence: f.evidence } });
    }
    const durationMs = Date.now() - t0;
    this.scans++;
    events.push({
      kind: 'scan',
      payload: {
        guest: this.name, startedAtMs: t0, durationMs,
        outcome: snapshotError && report.agent === 'down' ? 'failed' : tracked.findings.length > 0 ? 'faults' : 'clean',
        findings: tracked.raised.length,
        error: [snapshotError, report.agent === 'down' ? `agent: ${report.error}` : null].filter(Boolean).join('; ').slice(0, 2000) || null,
        policyVersion: version,
        stats: {
          tasks: snapshot?.tasks.tasks.length ?? -1,
          guestProcesses: report.agent === 'ok' ? report.processes.length : -1,
          modules: snapshot?.modules.modules.length ?? -1,
          openFindings: tracked.findings.length,
          viewErrors: snapshot ? snapshot.tasks.errors.length + snapshot.pidIdr.errors.length + snapshot.runQueues.errors.length + snapshot.modules.errors.length + snapshot.integrity.errors.length : -1,
          ...(trap ? { trapArmed: trap.status === 'armed' ? 1 : 0, refusedWrites: trap.events.length } : {}),
        },
      },
    });

    const faults: ActiveFault[] = tracked.findings.map((f) => ({ kind: f.kind, findingId: f.id, summary: f.summary, target: f.target }));
    const r = step(this.state, { nowMs: Date.now(), scanAtMs: t0, faults, undetermined: analysis.undetermined, policy });
    this.state = r.state;
    this.o.ladders.save(this.state);
    events.push(...this.ladderEvents(r.events));
    this.record(events);

    const d = r.decision;
    if (d.kind === 'act') {
      const a = d.action;
      this.log(`action ${a.action} (attempt ${a.attempt}/${a.count}) for ${a.fault}${a.target ? ` on ${a.target}` : ''}`);
      const timeout = this.o.actionTimeoutsMs?.[a.action] ?? DEFAULT_ACTION_TIMEOUT_MS[a.action];
      // A restarted kernel may put anything on the table's old pages: unprotect them first (re-armed after the next clean scan).
      if (a.action === 'reboot-os' || a.action === 'restart-vm' || a.action === 'restore-image') this.o.trap?.guard.beforeKernelRestart();
      const res = await executeAction(ctl, a, this.o.critical, timeout);
      const c = completeAction(this.state, a.actionId, { ok: res.ok, error: res.error }, Date.now(), policy);
      this.state = c.state;
      this.o.ladders.finishAction(this.state, a.actionId, res.ok ? 'ok' : 'failed', res.error, Date.now());
      this.log(`action ${a.action} ${res.ok ? 'done' : 'FAILED'} in ${res.durationMs} ms: ${res.detail ?? res.error}`);
      this.record([
        {
          kind: 'action',
          payload: {
            guest: this.name, actionId: a.actionId.slice(0, 128), action: a.action, fault: a.fault, target: a.target?.slice(0, 256) ?? null,
            outcome: res.ok ? 'ok' : 'failed', error: res.error?.slice(0, 2000) ?? null, startedAtMs: a.startedAtMs, durationMs: res.durationMs,
          },
        },
        ...this.ladderEvents(c.events),
      ]);
    } else if (d.kind === 'hold') {
      let note = `held: ${d.reason}`;
      try {
        if (d.mode === 'pause') note += `; ${await ctl.pause(10_000)}`;
        else if (d.mode === 'stop') note += `; ${await ctl.stop(30_000)}`;
      } catch (e) {
        note += `; hold ${d.mode} failed: ${errorMessage(e)}`;
      }
      this.log(`HOLD ${note}`);
    }

    const ladders = ladderSummary(this.state, policy);
    this.record([{
      kind: 'guest-health',
      payload: {
        guest: this.name,
        health: this.state.held ? 'faulty' : this.state.pending || ladders.some((l) => l.phase === 'verifying') ? 'recovering'
          : report.agent === 'down' && !snapshot ? 'down' : tracked.findings.length > 0 ? 'faulty' : 'healthy',
        openFindings: tracked.findings.length,
        lastScanAtMs: t0,
        ladders: ladders.map((l) => ({ fault: l.fault, step: l.step, action: l.action, attempt: l.attempt })),
        note: this.state.held ? `held since ${new Date(this.state.held.sinceMs).toISOString()}: ${this.state.held.reason}`.slice(0, 1000) : null,
      },
    }]);
    const summary: ScanSummary = {
      startedAtMs: t0, durationMs, findings: tracked.findings, snapshotError, agent: report.agent,
      ...(trap ? { trap: { status: trap.status, detail: trap.detail, refusedWrites: trap.events.length } } : {}),
    };
    this.lastScan = summary;
    return summary;
  }
}
