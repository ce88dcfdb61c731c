// One guest's watchdog loop. Each cycle is four steps:
//   observe: the guest's own report (agent), a kernel snapshot, the write trap's log;
//   judge:   detectors -> confirmed findings -> the ladder's next state (pure, ./judge.ts);
//   act:     persist that state, then run the action or hold it decided;
//   report:  the cycle's events (./report.ts), recorded through the EventRecorder.
// Every await has a bound, so one guest's trouble never stalls the others, and
// every failure is recorded, not thrown. The store failing never stops the
// watch: state lives in memory until the store takes it again.
import { FindingTracker } from '../detectors/findings.js';
import { baselineOf, kernelKey, type BaselineStore, type KernelBaseline } from '../detectors/baseline.js';
import type { Finding, GuestReport } from '../detectors/types.js';
import type { PolicySource } from '../events/sink.js';
import type { EventInput } from '../events/types.js';
import { actionEvent, ladderStepEvent } from '../events/builders.js';
import { completeAction, initialLadderState, resumeAfterRestart, type GuestLadderState, type LadderDecision } from '../policy/ladder.js';
import type { LadderStateStore } from '../policy/ladder-store.js';
import { DEFAULT_POLICY } from '../policy/defaults.js';
import type { ActionKind, Policy } from '../policy/types.js';
import { DEFAULT_ACTION_TIMEOUT_MS, executeAction, type ActionResult, type CriticalProcessConfig } from '../recovery/actions.js';
import type { GuestController, GuestExecResult } from '../recovery/guest-controller.js';
import type { ConsoleGuest, GuestObservation } from '../control/types.js';
import type { ActionProgress } from '../control/protocol.js';
import { errorMessage } from '../util/errors.js';
import { lastLineNote, loadTimings, progressLine, saveTimings, timedProgress } from '../util/progress.js';
import type { KernelSnapshot } from '../views/types.js';
import { PAGED_HASH_PREFIX } from '../views/integrity.js';
import type { SyscallTableTrap, TrapScanResult, TrapStatus } from '../trap/syscall-table-trap.js';
import type { KernelScanner } from './kernel-scanner.js';
import type { EventRecorder } from './recorder.js';
import { judge } from './judge.js';
import { actionEvents, cycleEvents, healthEvent, HealthLedger, ladderEvents, ScanLedger } from './report.js';
import { detectHiddenProcesses } from '../detectors/hidden-process.js';

/** Default interval of the guest's own view (agent `ps`, a process spawned in the guest). */
export const DEFAULT_AGENT_INTERVAL_MS = 5_000;

export interface GuestWatchOptions {
  readonly controller: GuestController;
  readonly scanner: KernelScanner | null;
  readonly critical: readonly CriticalProcessConfig[];
  readonly scanIntervalMs: number;
  /** The running policy; the one route by which policy reaches the watch. */
  readonly policy: PolicySource<Policy>;
  readonly ladders: LadderStateStore;
  readonly baselines: BaselineStore;
  readonly recorder: EventRecorder;
  readonly actionTimeoutsMs?: Readonly<Partial<Record<ActionKind, number>>>;
  readonly log?: (line: string) => void;
  readonly bootTimeoutMs?: number;
  readonly agentTimeoutMs?: number;
  /**
   * The guest's own report (agent ps) is taken at most this often, and at once when the memory
   * views disagree, a hidden-process finding is open or being confirmed, or there is no kernel
   * snapshot; between, detectors that need it are undetermined. Default DEFAULT_AGENT_INTERVAL_MS.
   */
  readonly agentIntervalMs?: number;
  /** Unchanged scans are summed up into one scan event per this interval; unchanged health repeats at it. */
  readonly summaryIntervalMs?: number;
  /** The KVM write trap on the syscall tables, and QEMU's pid to attach it to; absent: off. */
  readonly trap?: { readonly guard: SyscallTableTrap; readonly qemuPid: () => number | undefined } | null;
  /** Where the last boot's and each action's duration are kept across restarts (progress estimates); absent: in memory only. */
  readonly timingsDir?: string;
}

/** Plain progress lines in the supervisor's log while a boot runs: one this often. */
const BOOT_LOG_EVERY_MS = 10_000;

/** What one cycle saw of the guest. */
export interface Observation {
  readonly startedAtMs: number;
  readonly report: GuestReport;
  /** The report was taken in this cycle (false: kept from an earlier one). */
  readonly reportFresh: boolean;
  readonly snapshot: KernelSnapshot | null;
  readonly snapshotError: string | null;
  readonly trap: TrapScanResult | null;
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

export class GuestWatch implements ConsoleGuest {
  readonly name: string;
  private state: GuestLadderState;
  /** The ladder state the store has not taken yet (saved again at the next cycle). */
  private unsaved = false;
  private readonly tracker: FindingTracker;
  /** Baselines by kernel key: kept in memory so a store outage does not blind the integrity checks. */
  private readonly baselines = new Map<string, KernelBaseline>();
  /** The controller's boot generation each baseline's per-boot hashes were taken or first trusted in. */
  private readonly baselineBoots = new Map<string, number>();
  private stopped = false;
  private lastReport: GuestReport | null = null;
  private lastReportAtMs = -Infinity;
  /** The last cycle saw something the guest's own view must confirm or clear. */
  private wantAgent = false;
  /** The boot the finding tracker last counted observations in (the controller's generation; a guest's own reset bumps it here). */
  private trackedBoot: number | null = null;
  private guestReset = false;
  /** The kept baseline holds this boot's image hashes: scans may rehash only the rotating share. */
  private imageSettled = false;
  /** The ladder state as last saved: an unchanged state is not written again. */
  private savedState: string | null = null;
  private readonly scanLedger: ScanLedger;
  private readonly healthLedger: HealthLedger;
  private wake: (() => void) | undefined;
  scans = 0;
  /** Reports taken from the guest (each runs ps in the guest). */
  agentReports = 0;
  lastScan: ScanSummary | null = null;
  private latest: GuestObservation | null = null;
  private paused = false;
  /** Watch cycles and operator actions take turns: one thing acts on the guest at a time. */
  private turn: Promise<unknown> = Promise.resolve();

  constructor(private readonly o: GuestWatchOptions) {
    this.name = o.controller.name;
    this.state = o.ladders.load(this.name) ?? initialLadderState(this.name);
    this.scanLedger = new ScanLedger(o.summaryIntervalMs);
    this.healthLedger = new HealthLedger(o.summaryIntervalMs);
    this.tracker = new FindingTracker((k) => this.policy().policy.faults[k].confirmScans);
    // A reboot the guest starts itself: the next kernel may put anything on the protected pages.
    o.controller.onGuestReset?.(() => { this.guestReset = true; this.o.trap?.guard.beforeKernelRestart(); });
  }

  get ladderState(): GuestLadderState { return this.state; }
  get watching(): boolean { return !this.paused; }
  get criticalNames(): readonly string[] { return this.o.critical.map((c) => c.name); }

  /** The latest cycle's observation (read-only; replaced, never changed, by the next cycle). */
  latestObservation(): GuestObservation | null { return this.latest; }

  trapState(): { status: TrapStatus; detail: string | null } {
    if (!this.o.trap) return { status: 'off', detail: 'the write trap is off for this guest (config writeTrap: off)' };
    const s = this.o.trap.guard.state;
    return { status: s.status, detail: s.detail };
  }

  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const r = this.turn.then(fn, fn);
    this.turn = r.catch(() => undefined);
    return r;
  }

  pauseWatching(): void {
    this.paused = true;
    this.log('watching paused by an operator');
  }

  resumeWatching(): void {
    this.paused = false;
    this.log('watching resumed by an operator');
    this.wake?.();
  }

  /** How long each piece of work (boot, action kinds) last took here: what progress is measured against. */
  private readonly lastMs = new Map<string, number>();
  /** The boot or action under way (ladder's or operator's), for the console's progress. */
  private underWay: { readonly action: string; readonly startedAtMs: number; readonly expectedMs: number | null } | null = null;

  /** The last duration of `work` on this guest: from memory, else from the timings folder. */
  private expectedMs(work: string): number | null {
    const m = this.lastMs.get(work);
    if (m !== undefined) return m;
    if (!this.o.timingsDir) return null;
    const { timings, error } = loadTimings(this.o.timingsDir, `${this.name}.${work}`);
    if (error) this.log(`no progress estimate for ${work}: ${error}`);
    return timings ? timings.totalMs : null;
  }

  private rememberMs(work: string, ms: number): void {
    this.lastMs.set(work, ms);
    if (!this.o.timingsDir) return;
    try {
      saveTimings(this.o.timingsDir, `${this.name}.${work}`, { totalMs: ms, phases: [] });
    } catch (e) {
      this.log(`${work} duration not kept for the next estimate: ${errorMessage(e)}`);
    }
  }

  /** Runs a boot or an action as the work under way (what progress() reports); ms(r): its duration to remember, or null. */
  private async underway<T>(action: string, fn: () => Promise<T>, ms: (r: T, tookMs: number) => number | null): Promise<T> {
    const startedAtMs = Date.now();
    this.underWay = { action, startedAtMs, expectedMs: this.expectedMs(action) };
    try {
      const r = await fn();
      const took = ms(r, Date.now() - startedAtMs);
      if (took !== null) this.rememberMs(action, took);
      return r;
    } finally {
      this.underWay = null;
    }
  }

  /** The boot or recovery action under way, with its estimate and the guest console's last line; null: none. */
  progress(): ActionProgress | null {
    const u = this.underWay;
    if (!u) return null;
    return timedProgress(u.action, Date.now() - u.startedAtMs, u.expectedMs, consoleNote(this.o.controller));
  }

  /** An operator's recovery action, through the same executor as the ladder's, between cycles. */
  runAction(kind: ActionKind, target: string | null, onProgress?: (p: ActionProgress) => void): Promise<ActionResult> {
    return this.exclusive(async () => {
      if (this.state.pending) throw new Error(`guest ${this.name}: the ladder's ${this.state.pending.action} is in progress`);
      const tgt = target ?? (kind === 'restart-process' ? this.o.critical.map((c) => c.name).join(',') || null : null);
      const startedAtMs = Date.now();
      this.log(`operator action ${kind}${tgt ? ` on ${tgt}` : ''}`);
      if (kind === 'reboot-os' || kind === 'restart-vm' || kind === 'restore-image') this.o.trap?.guard.beforeKernelRestart();
      const timeout = this.o.actionTimeoutsMs?.[kind] ?? DEFAULT_ACTION_TIMEOUT_MS[kind];
      const tick = onProgress ? setInterval(() => { const p = this.progress(); if (p) onProgress(p); }, 1_000) : undefined;
      let res: ActionResult;
      try {
        res = await this.underway(kind, () => executeAction(this.o.controller, { action: kind, target: tgt }, this.o.critical, timeout), (r) => (r.ok ? r.durationMs : null));
      } finally {
        clearInterval(tick);
      }
      this.log(`operator action ${kind} ${res.ok ? 'done' : 'FAILED'} in ${res.durationMs} ms: ${res.detail ?? res.error}`);
      this.record([actionEvent({
        guest: this.name, actionId: `${this.name}:operator:${startedAtMs}:${kind}`, action: kind, fault: null, target: tgt,
        outcome: res.ok ? 'ok' : 'failed', error: res.error, startedAtMs, durationMs: res.durationMs,
      })]);
      this.wake?.();
      return res;
    });
  }

  releaseHold(): Promise<string> {
    return this.exclusive(async () => {
      const held = this.state.held;
      if (!held) throw new Error(`guest ${this.name} is not held`);
      const { policy } = this.policy();
      const exhausted = this.state.ladders.filter((l) => l.phase === 'exhausted');
      // The exhausted ladders start over: a fault still present climbs the ladder again from its first rung.
      this.adopt({ ...this.state, seq: this.state.seq + 1, held: null, ladders: this.state.ladders.filter((l) => l.phase !== 'exhausted') }, (s) => this.o.ladders.save(s));
      this.record(exhausted.map((l) => ladderStepEvent({ guest: this.name, fault: l.kind, findingId: l.findingId, step: null, action: null, attempt: 0, reason: 'hold released by an operator; ladder reset' })));
      let vm = 'the VM kept running';
      const ctl = this.o.controller;
      if (policy.onExhausted.hold === 'pause' && ctl.resume) vm = await ctl.resume(10_000);
      else if (policy.onExhausted.hold === 'stop') vm = `VM ${await ctl.ensureRunning(this.o.bootTimeoutMs ?? 180_000)}`;
      this.log(`hold released by an operator (${held.reason}); ${vm}`);
      this.wake?.();
      return `hold released (${held.reason}); ${vm}`;
    });
  }

  acceptBaseline(): Promise<string> {
    return this.exclusive(async () => {
      const snap = this.latest?.snapshot;
      if (!snap) throw new Error(`guest ${this.name}: no kernel snapshot to take as the baseline${this.latest?.snapshotError ? ` (${this.latest.snapshotError})` : ''}`);
      const b = baselineOf(snap, Date.now());
      this.keepBaseline(b, 'operator');
      return `baseline of ${b.kernelKey.slice(0, 120)} recorded from the scan at ${new Date(snap.takenAtMs).toISOString()}`;
    });
  }

  async exec(argv: readonly string[], timeoutMs: number): Promise<GuestExecResult> {
    if (!this.o.controller.exec) throw new Error(`guest ${this.name}: its controller cannot run commands`);
    return this.o.controller.exec(argv, timeoutMs);
  }

  private policy(): { policy: Policy; version: number | null } {
    const a = this.o.policy.current();
    return a ? { policy: a.policy, version: a.version } : { policy: DEFAULT_POLICY, version: null };
  }

  private log(line: string): void {
    (this.o.log ?? ((l: string) => console.log(l)))(`[${this.name}] ${line}`);
  }

  private record(events: EventInput[]): void {
    this.o.recorder.record(events);
  }

  /** Adopts a ladder state; the store gets it now or, if it refuses, at the next cycle. */
  private adopt(state: GuestLadderState, save: (s: GuestLadderState) => void, onlyIfChanged = false): void {
    this.state = state;
    // seq alone moves at every step; a state that differs only by it need not be written (action ids
    // take the seq of the step that starts them, which always changes more than seq, so is saved).
    const json = JSON.stringify({ ...state, seq: 0 });
    if (onlyIfChanged && !this.unsaved && json === this.savedState) return;
    try {
      save(state);
      this.unsaved = false;
      this.savedState = json;
    } catch (e) {
      if (!this.unsaved) this.log(`ladder state not saved (kept in memory, saved when the store takes it): ${errorMessage(e)}`);
      this.unsaved = true;
    }
  }

  /** Boots or adopts the guest and picks up a ladder that a previous supervisor left mid-way. */
  async start(): Promise<void> {
    // A boot (not an adoption) is work under way: the console shows it, the log gets a line every 10 s.
    const tick = setInterval(() => { const p = this.progress(); if (p) this.log(progressLine(p, false)); }, BOOT_LOG_EVERY_MS);
    let how: Awaited<ReturnType<GuestController['ensureRunning']>>;
    try {
      how = await this.underway('boot', () => this.o.controller.ensureRunning(this.o.bootTimeoutMs ?? 180_000), (r, ms) => (r === 'started' ? ms : null));
    } finally {
      clearInterval(tick);
    }
    this.log(`guest ${how}`);
    if (this.state.pending) {
      const p = this.state.pending;
      const r = resumeAfterRestart(this.state, Date.now(), this.policy().policy);
      this.adopt(r.state, (s) => this.o.ladders.finishAction(s, p.actionId, 'interrupted', 'supervisor restarted during the action', Date.now()));
      this.record(ladderEvents(this.name, r.events, (l) => this.log(l)));
      // The interrupted action may still be restarting the guest's kernel: watching a guest mid-boot
      // would take it for one whose agent is down and climb another ladder.
      if ((p.action === 'reboot-os' || p.action === 'restart-vm' || p.action === 'restore-image') && this.o.controller.waitForAgent) {
        try {
          this.log(await this.o.controller.waitForAgent(this.o.bootTimeoutMs ?? 180_000));
        } catch (e) {
          this.log(`after the interrupted ${p.action}: ${errorMessage(e)}; watching it as it is`);
        }
      }
    }
  }

  /** Runs until stop(). */
  async run(): Promise<void> {
    while (!this.stopped) {
      const t0 = Date.now();
      try {
        if (!this.paused) await this.exclusive(() => this.cycle());
      } catch (e) {
        // A bug: say so, keep watching the other guests and this one.
        this.log(`watch cycle failed: ${e instanceof Error ? e.stack ?? e.message : String(e)}`);
      }
      const wait = nextTick(t0, Date.now(), this.o.scanIntervalMs) - Date.now();
      if (wait > 0 && !this.stopped) await new Promise<void>((r) => { const t = setTimeout(r, wait); this.wake = () => { clearTimeout(t); r(); }; });
      this.wake = undefined;
    }
    this.flushSummary();
    // Closing the trap fd unprotects the tables: the supervisor no longer watches the log.
    this.o.trap?.guard.close();
    this.o.scanner?.close();
  }

  /** Records the summary of the unchanged scans not yet recorded (at stop, and for tests). */
  flushSummary(): void {
    this.record(this.scanLedger.summary());
  }

  stop(): void {
    this.stopped = true;
    this.wake?.();
  }

  /** One scan and, when the ladder says so, one action. */
  async cycle(): Promise<ScanSummary> {
    const { policy, version } = this.policy();
    if (this.unsaved) this.adopt(this.state, (s) => this.o.ladders.save(s));
    const obs = await this.observe();
    // Confirmation counts scans of one boot: two races (a process ending between ps and the snapshot)
    // in two boots must not add up because the new boot gave the process the same pid.
    const boot = this.o.controller.bootGeneration;
    if ((this.trackedBoot !== null && boot !== this.trackedBoot) || this.guestReset) this.tracker.newBoot();
    this.trackedBoot = boot;
    this.guestReset = false;
    const j = judge({
      guest: this.name, obs, state: this.state, tracker: this.tracker, policy, critical: this.o.critical,
      introspectionOff: this.o.scanner === null, baseline: obs.snapshot ? this.baselineFor(kernelKey(obs.snapshot)) : null, nowMs: Date.now(),
    });
    if (j.baselineToRecord) this.keepBaseline(j.baselineToRecord, j.baselineIsNewBoot ? 'new-boot' : 'first-scan');
    this.imageSettled = imageSettled(obs.snapshot, j.baselineToRecord ?? (obs.snapshot ? this.baselineFor(kernelKey(obs.snapshot)) : null));
    // A pid only the guest's own list holds has exited by the time of the snapshot (the reporter's own
    // shell, in every report): judged at the agent's interval, it does not make every scan take one.
    this.wantAgent = j.analysis.observations.some((o) => o.kind === 'hidden-process' && !onlyInGuestPs(o)) ||
      j.tracked.findings.some((f) => f.kind === 'hidden-process');
    this.scans++;
    const durationMs = Date.now() - obs.startedAtMs;
    // Persisted before it is acted on; if the store refuses, the watch acts from memory.
    this.adopt(j.ladder.state, (s) => this.o.ladders.save(s), true);
    const events = cycleEvents({
      guest: this.name, obs, judgement: j, durationMs, policyVersion: version, introspectionOff: this.o.scanner === null, log: (l) => this.log(l), scans: this.scanLedger,
    });
    if (j.ladder.decision.kind === 'act' || j.ladder.decision.kind === 'hold') {
      this.record(events);
      await this.act(j.ladder.decision, policy);
      this.record(this.healthLedger.add(healthEvent(this.name, this.state, policy, obs, j.tracked.findings.length, this.o.scanner === null), Date.now()));
    } else {
      // Nothing to act on: one write for the cycle's events.
      this.record([...events, ...this.healthLedger.add(healthEvent(this.name, this.state, policy, obs, j.tracked.findings.length, this.o.scanner === null), Date.now())]);
    }
    const summary: ScanSummary = {
      startedAtMs: obs.startedAtMs, durationMs, findings: j.tracked.findings, snapshotError: obs.snapshotError, agent: obs.report.agent,
      ...(obs.trap ? { trap: { status: obs.trap.status, detail: obs.trap.detail, refusedWrites: obs.trap.events.length } } : {}),
    };
    this.lastScan = summary;
    this.latest = { startedAtMs: obs.startedAtMs, durationMs, report: obs.report, snapshot: obs.snapshot, snapshotError: obs.snapshotError, findings: j.tracked.findings };
    return summary;
  }

  private async observe(): Promise<Observation> {
    const ctl = this.o.controller;
    const startedAtMs = Date.now();
    const takeSnapshot = async (): Promise<{ snapshot: KernelSnapshot | null; snapshotError: string | null }> => {
      if (!this.o.scanner) return { snapshot: null, snapshotError: 'kernel introspection is off for this guest' };
      try {
        // The baseline's hashes tell the text-diff view which clean copy of the text to keep.
        const b = this.latest?.snapshot ? this.baselineFor(kernelKey(this.latest.snapshot)) : null;
        const clean = b ? { clean: { textHash: b.boot.textHash, dispatchers: b.dispatchers } } : {};
        return { snapshot: await this.o.scanner.scan(ctl.bootGeneration, { fullImage: !this.imageSettled, ...clean }), snapshotError: null };
      } catch (e) {
        return { snapshot: null, snapshotError: errorMessage(e) };
      }
    };
    const takeReport = async (): Promise<GuestReport> => {
      const r = await ctl.report(this.o.agentTimeoutMs ?? 5_000);
      this.agentReports++;
      this.lastReport = r;
      this.lastReportAtMs = startedAtMs;
      return r;
    };
    // The guest's own view spawns a process in the guest: taken at its interval, while a hidden
    // process is being judged, and at once when there is no kernel view or the memory views
    // disagree. A fresh report is always taken before the snapshot it is compared with, so the
    // agent's own short-lived processes (ps and its shell) are gone from both.
    const due = !this.lastReport || this.wantAgent || !this.o.scanner ||
      startedAtMs - this.lastReportAtMs >= (this.o.agentIntervalMs ?? DEFAULT_AGENT_INTERVAL_MS);
    let report = due ? await takeReport() : this.lastReport as GuestReport;
    let { snapshot, snapshotError } = await takeSnapshot();
    let fresh = due;
    if (!fresh && snapshot === null) {
      // No kernel view: the guest's own is all there is (no second attempt at the kernel: discovery is costly).
      report = await takeReport();
      fresh = true;
    } else if (!fresh && snapshot && detectHiddenProcesses(snapshot, null).observations.length > 0) {
      report = await takeReport();
      ({ snapshot, snapshotError } = await takeSnapshot());
      fresh = true;
    }
    // The trap: (re)armed on the tables this scan found readable, its log drained into events and a per-boot tally.
    const trap = this.o.trap ? this.o.trap.guard.update({
      qemuPid: this.o.trap.qemuPid(),
      bootGeneration: ctl.bootGeneration,
      tables: snapshot && snapshot.syscallTables.length > 0 && snapshot.syscallTables.every((t) => t.errors.length === 0) ? snapshot.syscallTables : null,
      translate: snapshot && this.o.scanner?.translate ? (va) => this.o.scanner?.translate?.(va) ?? null : null,
    }) : null;
    return { startedAtMs, report, reportFresh: fresh, snapshot, snapshotError, trap };
  }

  /**
   * The baseline for this kernel, its per-boot hashes left out once the guest has booted again since
   * they were taken: text and rodata hold per-boot values (rodata includes __ro_after_init data), and
   * a new boot may land on the same KASLR slide. The boot count is the hypervisor's, never read from
   * the guest, so a guest cannot make its own changes look like a new boot. A baseline loaded from the
   * store is trusted for the boot under way (the slide still tells most reboots apart).
   */
  private baselineFor(key: string): KernelBaseline | null {
    let b = this.baselines.get(key) ?? null;
    if (!b) {
      try {
        b = this.o.baselines.load(this.name, key);
      } catch (e) {
        this.log(`kernel baseline not readable from the store: ${errorMessage(e)}`);
        return null;
      }
      if (!b) return null;
      this.baselines.set(key, b);
      this.baselineBoots.set(key, this.o.controller.bootGeneration);
    }
    const takenIn = this.baselineBoots.get(key);
    if (takenIn === undefined || takenIn === this.o.controller.bootGeneration) return b;
    return { ...b, boot: { ...b.boot, textHash: null, rodataHash: null } };
  }

  private keepBaseline(b: KernelBaseline, how: 'first-scan' | 'new-boot' | 'operator'): void {
    this.baselines.set(b.kernelKey, b);
    this.baselineBoots.set(b.kernelKey, this.o.controller.bootGeneration);
    try {
      this.o.baselines.save(this.name, b);
    } catch (e) {
      this.log(`kernel baseline kept in memory only (the store refused it): ${errorMessage(e)}`);
    }
    this.log(how === 'operator' ? 'kernel baseline accepted by an operator' : how === 'new-boot' ? 'kernel baseline: new boot recorded' : 'kernel baseline recorded at the first clean scan');
  }

  private async act(d: LadderDecision, policy: Policy): Promise<void> {
    const ctl = this.o.controller;
    if (d.kind === 'act') {
      const a = d.action;
      this.log(`action ${a.action} (attempt ${a.attempt}/${a.count}) for ${a.fault}${a.target ? ` on ${a.target}` : ''}`);
      const timeout = this.o.actionTimeoutsMs?.[a.action] ?? DEFAULT_ACTION_TIMEOUT_MS[a.action];
      // A restarted kernel may put anything on the table's old pages: unprotect them first (re-armed after the next clean scan).
      if (a.action === 'reboot-os' || a.action === 'restart-vm' || a.action === 'restore-image') this.o.trap?.guard.beforeKernelRestart();
      const res: ActionResult = await this.underway(a.action, () => executeAction(ctl, a, this.o.critical, timeout), (r) => (r.ok ? r.durationMs : null));
      const c = completeAction(this.state, a.actionId, { ok: res.ok, error: res.error }, Date.now(), policy);
      this.adopt(c.state, (s) => this.o.ladders.finishAction(s, a.actionId, res.ok ? 'ok' : 'failed', res.error, Date.now()));
      this.log(`action ${a.action} ${res.ok ? 'done' : 'FAILED'} in ${res.durationMs} ms: ${res.detail ?? res.error}`);
      this.record(actionEvents(this.name, a, res, c.events, (l) => this.log(l)));
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
  }
}

/**
 * When the next cycle starts: the first multiple of the interval after the one the cycle started in
 * (or, after a cycle that overran, after now). Every guest's cycles start on the same clock ticks, so
 * the scans of all guests run back to back and the process idles between bursts: a scan that starts
 * on a CPU warm from the one before costs a fraction of one after an idle gap (docs/PERFORMANCE.md).
 */
export function nextTick(startedAtMs: number, nowMs: number, intervalMs: number): number {
  const i = Math.max(1, intervalMs);
  const next = (Math.floor(startedAtMs / i) + 1) * i;
  return next > nowMs ? next : (Math.floor(nowMs / i) + 1) * i;
}

/** The guest console's last line, as a progress note (the console is the guest's: never parsed). */
const consoleNote = (ctl: GuestController): string | null => (ctl.consoleTail ? lastLineNote(ctl.consoleTail(5)) : null);

/** The baseline has this boot's image hashes, taken as page hashes (so only the rotating share needs rehashing). */
function imageSettled(snap: KernelSnapshot | null, b: KernelBaseline | null): boolean {
  if (!snap || !b) return false;
  return b.boot.slide === `0x${snap.kernel.kaslrSlide.toString(16)}` && b.boot.textHash !== null && b.boot.textHash.startsWith(PAGED_HASH_PREFIX);
}

function onlyInGuestPs(o: { readonly evidence: Readonly<Record<string, unknown>> }): boolean {
  const v = o.evidence.inViews;
  return Array.isArray(v) && v.length === 1 && v[0] === 'guest-ps';
}
