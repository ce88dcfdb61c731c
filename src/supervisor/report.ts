// The reporting step of a watch cycle: the events that say what the cycle saw,
// decided and did, built with the bounded builders of src/events/builders.ts.
// The log lines a person reads go out through `log` at the same time.
import { actionEvent, findingEvent, guestHealthEvent, ladderStepEvent, scanEvent } from '../events/builders.js';
import type { EventInput } from '../events/types.js';
import { ladderSummary, type GuestLadderState, type LadderEvent, type PendingAction } from '../policy/ladder.js';
import type { Policy } from '../policy/types.js';
import type { ActionResult } from '../recovery/actions.js';
import { snapshotErrors } from '../views/snapshot-errors.js';
import type { Observation } from './guest-watch.js';
import type { Judgement } from './judge.js';

type Log = (line: string) => void;

export function ladderEvents(guest: string, events: readonly LadderEvent[], log: Log): EventInput[] {
  return events.map((e) => {
    if (e.type === 'alert') log(`ALERT ${e.reason}`);
    else log(`ladder ${e.fault}: ${e.reason}`);
    return ladderStepEvent(e.type === 'step'
      ? { guest, fault: e.fault, findingId: e.findingId, step: e.step, action: e.action, attempt: e.attempt, reason: e.reason }
      : { guest, fault: e.fault ?? 'policy', findingId: null, step: null, action: null, attempt: 0, reason: `alert: ${e.reason}` });
  });
}

/** Introspection was on and gave no snapshot: the scan failed, whatever the agent said. */
const kernelUnread = (obs: Observation, introspectionOff: boolean): boolean => !introspectionOff && obs.snapshot === null;

/** How often unchanged scans are summed up into one scan event, and how often an unchanged health is repeated:
 *  one of each per 2 minutes keeps a quiet guest at ≤ 1 message per minute. */
export const DEFAULT_SUMMARY_INTERVAL_MS = 120_000;

type ScanPayload = Extract<EventInput, { kind: 'scan' }>['payload'];
type Outcome = ScanPayload['outcome'];
const WORSE: Record<Outcome, number> = { clean: 0, faults: 1, failed: 2 };

/**
 * Events on change: a scan that found what the previous one found records no event of its own;
 * such scans are summed up into one scan event per interval (stats.scans: how many scans an event
 * stands for; stats.clean/faults/failed: their outcomes; meanMs/maxMs: their durations). A scan
 * whose outcome, error, open findings, policy version or trap state differs, or that raised or
 * cleared a finding or saw a refused write, is recorded at once (after the summary so far).
 */
export class ScanLedger {
  private lastKey: string | null = null;
  private agg: { first: ScanPayload; last: ScanPayload; scans: number; counts: Record<Outcome, number>; sumMs: number; maxMs: number; worst: Outcome } | null = null;
  private periodStartMs: number | null = null;

  constructor(private readonly intervalMs = DEFAULT_SUMMARY_INTERVAL_MS) {}

  /** The scan events to record for this scan (none, the summary, the scan, or both). */
  add(p: ScanPayload, changed: boolean): EventInput[] {
    const key = JSON.stringify([p.outcome, p.error, p.policyVersion, p.stats.openFindings, p.stats.trapArmed ?? null]);
    const out: EventInput[] = [];
    this.periodStartMs ??= p.startedAtMs;
    if (changed || key !== this.lastKey) {
      out.push(...this.summary());
      out.push({ kind: 'scan', payload: { ...p, stats: { ...p.stats, scans: 1 } } });
      this.lastKey = key;
      this.periodStartMs = p.startedAtMs;
      return out;
    }
    const a = this.agg ??= { first: p, last: p, scans: 0, counts: { clean: 0, faults: 0, failed: 0 }, sumMs: 0, maxMs: 0, worst: 'clean' };
    a.last = p;
    a.scans++;
    a.counts[p.outcome]++;
    a.sumMs += p.durationMs;
    a.maxMs = Math.max(a.maxMs, p.durationMs);
    if (WORSE[p.outcome] > WORSE[a.worst]) a.worst = p.outcome;
    if (p.startedAtMs - this.periodStartMs >= this.intervalMs) {
      out.push(...this.summary());
      this.periodStartMs = p.startedAtMs;
    }
    return out;
  }

  /** The summary of the scans not recorded one by one since the last scan event (none if there are none). */
  summary(): EventInput[] {
    const a = this.agg;
    if (!a) return [];
    this.agg = null;
    return [{
      kind: 'scan',
      payload: {
        ...a.last, startedAtMs: a.first.startedAtMs, durationMs: a.maxMs, outcome: a.worst, findings: 0,
        stats: { ...a.last.stats, scans: a.scans, clean: a.counts.clean, faults: a.counts.faults, failed: a.counts.failed, meanMs: +(a.sumMs / a.scans).toFixed(3), maxMs: a.maxMs },
      },
    }];
  }
}

/** guest-health when it changes, and at least once per heartbeat interval while it does not. */
export class HealthLedger {
  private lastKey: string | null = null;
  private lastAtMs = -Infinity;

  constructor(private readonly heartbeatMs = DEFAULT_SUMMARY_INTERVAL_MS) {}

  add(e: EventInput, nowMs: number): EventInput[] {
    if (e.kind !== 'guest-health') return [e];
    const { lastScanAtMs: _, ...rest } = e.payload;
    const key = JSON.stringify(rest);
    if (key === this.lastKey && nowMs - this.lastAtMs < this.heartbeatMs) return [];
    this.lastKey = key;
    this.lastAtMs = nowMs;
    return [e];
  }
}

/** The trap's events, findings raised and cleared, the scan, and the ladder's steps. */
export function cycleEvents(c: { guest: string; obs: Observation; judgement: Judgement; durationMs: number; policyVersion: number | null; introspectionOff: boolean; log: Log; scans?: ScanLedger }): EventInput[] {
  const { guest, obs, judgement: j, log } = c;
  const events: EventInput[] = [...(obs.trap?.events ?? [])];
  for (const f of j.tracked.cleared) {
    log(`finding cleared: ${f.kind} ${f.id}`);
    events.push(findingEvent({ guest, findingId: f.id, fault: f.kind, state: 'cleared', severity: f.severity, summary: f.summary, evidence: f.evidence }));
  }
  for (const f of j.tracked.raised) {
    log(`finding raised: ${f.kind}: ${f.summary}`);
    events.push(findingEvent({ guest, findingId: f.id, fault: f.kind, state: 'raised', severity: f.severity, summary: f.summary, evidence: f.evidence }));
  }
  const snap = obs.snapshot;
  const agentDown = obs.report.agent === 'down';
  const failed = kernelUnread(obs, c.introspectionOff) || (agentDown && !snap);
  const scan = scanEvent({
    guest, startedAtMs: obs.startedAtMs, durationMs: c.durationMs,
    outcome: failed ? 'failed' : j.tracked.findings.length > 0 ? 'faults' : 'clean',
    findings: j.tracked.raised.length,
    error: [obs.snapshotError, obs.report.agent === 'down' ? `agent: ${obs.report.error}` : null].filter(Boolean).join('; ') || null,
    policyVersion: c.policyVersion,
    stats: {
      tasks: snap?.tasks.tasks.length ?? -1,
      guestProcesses: obs.report.agent === 'ok' ? obs.report.processes.length : -1,
      modules: snap?.modules.modules.length ?? -1,
      openFindings: j.tracked.findings.length,
      viewErrors: snap ? snapshotErrors(snap).length : -1,
      ...(obs.trap ? { trapArmed: obs.trap.status === 'armed' ? 1 : 0, refusedWrites: obs.trap.events.length } : {}),
    },
  });
  const changed = j.tracked.raised.length > 0 || j.tracked.cleared.length > 0 || (obs.trap?.events.length ?? 0) > 0 || j.ladder.events.length > 0;
  if (!c.scans) events.push(scan);
  else if (scan.kind === 'scan') events.push(...c.scans.add(scan.payload, changed));
  events.push(...ladderEvents(guest, j.ladder.events, log));
  return events;
}

export function actionEvents(guest: string, a: PendingAction, res: ActionResult, ladder: readonly LadderEvent[], log: Log): EventInput[] {
  return [
    actionEvent({
      guest, actionId: a.actionId, action: a.action, fault: a.fault, target: a.target,
      outcome: res.ok ? 'ok' : 'failed', error: res.error, startedAtMs: a.startedAtMs, durationMs: res.durationMs,
    }),
    ...ladderEvents(guest, ladder, log),
  ];
}

export function healthEvent(guest: string, state: GuestLadderState, policy: Policy, obs: Observation, openFindings: number, introspectionOff: boolean): EventInput {
  const ladders = ladderSummary(state, policy);
  const health = state.held ? 'faulty'
    : state.pending || ladders.some((l) => l.phase === 'verifying') ? 'recovering'
      : obs.report.agent === 'down' && !obs.snapshot ? 'down'
        : openFindings > 0 ? 'faulty'
          // Fail closed: a guest whose kernel cannot be read is not known to be healthy.
          : kernelUnread(obs, introspectionOff) ? 'unknown' : 'healthy';
  return guestHealthEvent({
    guest, health, openFindings, lastScanAtMs: obs.startedAtMs,
    ladders: ladders.map((l) => ({ fault: l.fault, step: l.step, action: l.action, attempt: l.attempt })),
    note: state.held ? `held since ${new Date(state.held.sinceMs).toISOString()}: ${state.held.reason}` : null,
  });
}
