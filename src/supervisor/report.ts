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

/** The trap's events, findings raised and cleared, the scan, and the ladder's steps. */
export function cycleEvents(c: { guest: string; obs: Observation; judgement: Judgement; durationMs: number; policyVersion: number | null; introspectionOff: boolean; log: Log }): EventInput[] {
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
  events.push(scanEvent({
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
  }));
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
