// The ladder engine: a pure state machine. Given a guest's ladder state, the
// faults the latest scan confirmed, the policy and the clock, it says what to
// do next (act, wait or hold) and returns the new state and what happened.
// No I/O: the supervisor persists the state (LadderStateStore) before it
// carries out an action, so a restarted supervisor resumes at the same rung
// and never repeats an action that had started (see resumeAfterRestart).
import { ACTION_WEIGHT, FAULT_KINDS, type ActionKind, type FaultKind, type Policy, type Rung } from './types.js';

/** A fault the detectors confirmed in the latest scan. */
export interface ActiveFault {
  readonly kind: FaultKind;
  /** Stable id of the finding (the event store keys raised/cleared on it). */
  readonly findingId: string;
  readonly summary: string;
  /** What an action aims at (e.g. the missing process's name, the hidden pids); null for whole-guest faults. */
  readonly target: string | null;
}

export type LadderPhase =
  /** The fault is present and the next rung may act (after backoff / the hourly cap). */
  | 'ready'
  /** An action finished; waiting for a scan taken after it to show the fault gone. */
  | 'verifying'
  /** Verified gone; if it stays gone for the reset window the ladder starts over. */
  | 'watching'
  /** No rung left: the guest is held and an alert raised. */
  | 'exhausted';

export interface FaultLadderState {
  readonly kind: FaultKind;
  readonly findingId: string | null;
  readonly target: string | null;
  readonly phase: LadderPhase;
  /** Index into the policy's ladder for this fault. */
  readonly rung: number;
  /** Attempts made on the current rung. */
  readonly attemptsOnRung: number;
  readonly totalActions: number;
  readonly startedAtMs: number;
  readonly lastActionEndMs: number | null;
  readonly verifyUntilMs: number | null;
  readonly healthySinceMs: number | null;
  /** Backoff: the next attempt on this rung not before this time. */
  readonly retryAfterMs: number | null;
}

/** An action the engine decided; persisted before it is carried out. */
export interface PendingAction {
  readonly actionId: string;
  readonly fault: FaultKind;
  readonly findingId: string | null;
  readonly action: ActionKind;
  readonly target: string | null;
  readonly rung: number;
  /** 1-based attempt on this rung. */
  readonly attempt: number;
  readonly count: number;
  readonly startedAtMs: number;
}

export interface GuestLadderState {
  readonly version: 1;
  readonly guest: string;
  /** Bumped on every transition; the store keeps the history by it. */
  readonly seq: number;
  readonly ladders: readonly FaultLadderState[];
  readonly pending: PendingAction | null;
  /** Start times of actions in the last hour (the per-guest cap). */
  readonly actionTimesMs: readonly number[];
  readonly held: { readonly sinceMs: number; readonly fault: FaultKind; readonly reason: string } | null;
  /** Set while actions wait for the hourly cap, so the alert is raised once. */
  readonly capWaitSinceMs: number | null;
}

export type LadderEvent =
  | {
      readonly type: 'step';
      readonly fault: FaultKind;
      readonly findingId: string | null;
      /** Rung index; null when the ladder was reset. */
      readonly step: number | null;
      readonly action: ActionKind | null;
      readonly attempt: number;
      readonly reason: string;
    }
  | { readonly type: 'alert'; readonly fault: FaultKind | null; readonly reason: string };

export type LadderDecision =
  | { readonly kind: 'act'; readonly action: PendingAction }
  | { readonly kind: 'wait'; readonly untilMs: number | null; readonly reason: string }
  | { readonly kind: 'hold'; readonly mode: Policy['onExhausted']['hold']; readonly fault: FaultKind; readonly reason: string };

export interface StepInput {
  readonly nowMs: number;
  /** When the scan that produced `faults` started; a scan older than an action cannot verify it. */
  readonly scanAtMs: number;
  readonly faults: readonly ActiveFault[];
  /** Fault kinds this scan could not judge (e.g. the agent did not answer): their ladders stand still. */
  readonly undetermined?: readonly FaultKind[];
  readonly policy: Policy;
}

export interface StepResult<T = LadderDecision> {
  readonly state: GuestLadderState;
  readonly decision: T;
  readonly events: readonly LadderEvent[];
}

const HOUR_MS = 3_600_000;
const KIND_ORDER = new Map<FaultKind, number>(FAULT_KINDS.map((k, i) => [k, i]));

export function initialLadderState(guest: string): GuestLadderState {
  return { version: 1, guest, seq: 0, ladders: [], pending: null, actionTimesMs: [], held: null, capWaitSinceMs: null };
}

function rungOf(policy: Policy, kind: FaultKind, rung: number): Rung | undefined {
  return policy.faults[kind].ladder[rung];
}

function resetWindowMs(policy: Policy, l: FaultLadderState): number {
  // The window of the rung that acted last (attempts on the current rung, else the one before).
  const acted = l.attemptsOnRung > 0 ? l.rung : Math.max(l.rung - 1, 0);
  const r = rungOf(policy, l.kind, acted);
  return 1000 * (r?.resetWindowSec ?? policy.faults[l.kind].resetWindowSec);
}

/** Delay before attempt n (>= 2) of a rung: backoffSec * factor^(n-2). */
export function backoffMs(r: Rung, nextAttempt: number): number {
  if (nextAttempt <= 1) return 0;
  return Math.round(1000 * r.backoffSec * (r.backoffFactor ?? 1) ** (nextAttempt - 2));
}

function retryDelayMs(policy: Policy, l: FaultLadderState): number {
  const r = rungOf(policy, l.kind, l.rung);
  return r ? backoffMs(r, l.attemptsOnRung + 1) : 0;
}

function stepEvent(l: FaultLadderState, policy: Policy, reason: string, reset = false): LadderEvent {
  const r = rungOf(policy, l.kind, l.rung);
  return {
    type: 'step',
    fault: l.kind,
    findingId: l.findingId,
    step: reset ? null : l.rung,
    action: reset ? null : (r?.action ?? null),
    attempt: l.attemptsOnRung,
    reason,
  };
}

/**
 * One scan's worth of ladder logic. Throws when an action is still pending:
 * the caller must completeAction() (or resumeAfterRestart()) first.
 */
export function step(state: GuestLadderState, input: StepInput): StepResult {
  if (state.pending) throw new Error(`ladder ${state.guest}: step() while action ${state.pending.actionId} (${state.pending.action}) is pending`);
  const { nowMs: now, policy } = input;
  const events: LadderEvent[] = [];
  const present = new Map<FaultKind, ActiveFault>();
  for (const f of input.faults) if (!present.has(f.kind)) present.set(f.kind, f);

  const ladders: FaultLadderState[] = [];
  const undetermined = new Set(input.undetermined ?? []);
  for (const l of state.ladders) {
    if (undetermined.has(l.kind) && !present.has(l.kind)) {
      ladders.push(l);
      continue;
    }
    const f = present.get(l.kind);
    const seen = f ? { findingId: f.findingId, target: f.target ?? l.target } : {};
    switch (l.phase) {
      case 'verifying': {
        const fresh = l.lastActionEndMs === null || input.scanAtMs >= l.lastActionEndMs;
        if (!f && fresh) {
          const n = { ...l, phase: 'watching' as const, verifyUntilMs: null, healthySinceMs: now };
          events.push(stepEvent(n, policy, `verified: a scan after the action shows no ${l.kind}`));
          ladders.push(n);
        } else if (f && fresh && l.verifyUntilMs !== null && now >= l.verifyUntilMs) {
          const n = { ...l, ...seen, phase: 'ready' as const, verifyUntilMs: null, retryAfterMs: now + retryDelayMs(policy, l) };
          events.push(stepEvent(n, policy, `verify failed: ${l.kind} still present ${Math.round((now - (l.lastActionEndMs ?? now)) / 1000)} s after the action`));
          ladders.push(n);
        } else {
          ladders.push({ ...l, ...seen });
        }
        break;
      }
      case 'watching':
        if (f) {
          const n = { ...l, ...seen, phase: 'ready' as const, healthySinceMs: null };
          events.push(stepEvent(n, policy, `${l.kind} came back within the reset window; the ladder continues`));
          ladders.push(n);
        } else if (now - (l.healthySinceMs ?? now) >= resetWindowMs(policy, l)) {
          events.push(stepEvent(l, policy, `healthy for the reset window; ladder reset`, true));
        } else {
          ladders.push(l);
        }
        break;
      case 'ready':
        if (!f) {
          if (l.totalActions === 0) events.push(stepEvent(l, policy, `${l.kind} gone before any action; ladder reset`, true));
          else ladders.push({ ...l, phase: 'watching', healthySinceMs: now });
        } else {
          ladders.push({ ...l, ...seen });
        }
        break;
      case 'exhausted':
        if (!f) ladders.push({ ...l, phase: 'watching', healthySinceMs: now });
        else ladders.push({ ...l, ...seen });
        break;
    }
  }
  for (const [kind, f] of present) {
    if (ladders.some((l) => l.kind === kind)) continue;
    const n: FaultLadderState = {
      kind, findingId: f.findingId, target: f.target, phase: 'ready', rung: 0, attemptsOnRung: 0, totalActions: 0,
      startedAtMs: now, lastActionEndMs: null, verifyUntilMs: null, healthySinceMs: null, retryAfterMs: null,
    };
    events.push(stepEvent(n, policy, `${kind} raised: ${f.summary}`));
    ladders.push(n);
  }

  // Climb where a rung is used up; a ladder with no rung left is exhausted.
  let newlyExhausted: FaultLadderState | undefined;
  for (let i = 0; i < ladders.length; i++) {
    let l = ladders[i] as FaultLadderState;
    if (l.phase !== 'ready') continue;
    const ladder = policy.faults[l.kind].ladder;
    while (l.rung < ladder.length && l.attemptsOnRung >= (ladder[l.rung] as Rung).count) {
      l = { ...l, rung: l.rung + 1, attemptsOnRung: 0, retryAfterMs: null };
      if (l.rung < ladder.length) events.push(stepEvent(l, policy, `climbed: rung ${l.rung - 1} used its ${(ladder[l.rung - 1] as Rung).count} attempt(s) without success`));
    }
    if (l.rung >= ladder.length) {
      l = { ...l, phase: 'exhausted' };
      newlyExhausted ??= l;
      events.push({ type: 'alert', fault: l.kind, reason: `${l.kind}: ladder exhausted after ${l.totalActions} action(s); guest held (${policy.onExhausted.hold})` });
    }
    ladders[i] = l;
  }
  ladders.sort((a, b) => (KIND_ORDER.get(a.kind) ?? 0) - (KIND_ORDER.get(b.kind) ?? 0));

  let held = state.held;
  const exhausted = ladders.find((l) => l.phase === 'exhausted');
  if (!exhausted && held) {
    events.push({ type: 'alert', fault: held.fault, reason: `hold released: no fault ladder is exhausted any more` });
    held = null;
  }
  const actionTimesMs = state.actionTimesMs.filter((t) => t > now - HOUR_MS);
  const base = { ...state, seq: state.seq + 1, ladders, actionTimesMs, held };
  const done = (s: GuestLadderState, decision: LadderDecision): StepResult => ({ state: s, decision, events });

  if (newlyExhausted && !state.held) {
    const h = { sinceMs: now, fault: newlyExhausted.kind, reason: `${newlyExhausted.kind}: no rung left` };
    return done({ ...base, held: h, capWaitSinceMs: null }, { kind: 'hold', mode: policy.onExhausted.hold, fault: newlyExhausted.kind, reason: h.reason });
  }
  if (held) return done(base, { kind: 'wait', untilMs: null, reason: `guest held since ${new Date(held.sinceMs).toISOString()}: ${held.reason}` });

  // One recovery at a time per guest: while one verifies, the others only track.
  const verifying = ladders.filter((l) => l.phase === 'verifying');
  if (verifying.length > 0) {
    const until = Math.min(...verifying.map((l) => l.verifyUntilMs ?? now));
    return done(base, { kind: 'wait', untilMs: until, reason: `verifying ${verifying.map((l) => l.kind).join(', ')}` });
  }

  const candidates = ladders
    .filter((l) => l.phase === 'ready')
    .map((l) => {
      const r = rungOf(policy, l.kind, l.rung) as Rung;
      const eligibleAt = l.retryAfterMs ?? now;
      return { l, r, eligibleAt };
    })
    .sort((a, b) => ACTION_WEIGHT[b.r.action] - ACTION_WEIGHT[a.r.action]);
  const first = candidates[0];
  if (!first) return done({ ...base, capWaitSinceMs: null }, { kind: 'wait', untilMs: null, reason: ladders.length ? 'watching' : 'healthy' });
  if (now < first.eligibleAt) {
    return done(base, { kind: 'wait', untilMs: first.eligibleAt, reason: `backoff before ${first.r.action} attempt ${first.l.attemptsOnRung + 1} for ${first.l.kind}` });
  }
  if (actionTimesMs.length >= policy.maxActionsPerHour) {
    const until = (actionTimesMs[0] as number) + HOUR_MS;
    const reason = `hourly cap: ${actionTimesMs.length} action(s) in the last hour (max ${policy.maxActionsPerHour}); ${first.r.action} for ${first.l.kind} waits`;
    if (state.capWaitSinceMs === null) events.push({ type: 'alert', fault: first.l.kind, reason });
    return done({ ...base, capWaitSinceMs: state.capWaitSinceMs ?? now }, { kind: 'wait', untilMs: until, reason });
  }

  const l = { ...first.l, attemptsOnRung: first.l.attemptsOnRung + 1, totalActions: first.l.totalActions + 1 };
  const action: PendingAction = {
    actionId: `${state.guest}:${base.seq}:${first.r.action}`,
    fault: l.kind,
    findingId: l.findingId,
    action: first.r.action,
    target: l.target,
    rung: l.rung,
    attempt: l.attemptsOnRung,
    count: first.r.count,
    startedAtMs: now,
  };
  events.push(stepEvent(l, policy, `${first.r.action} attempt ${l.attemptsOnRung} of ${first.r.count} for ${l.kind}`));
  return done(
    { ...base, ladders: ladders.map((x) => (x.kind === l.kind ? l : x)), pending: action, actionTimesMs: [...actionTimesMs, now], capWaitSinceMs: null },
    { kind: 'act', action },
  );
}

export interface ActionOutcome {
  readonly ok: boolean;
  readonly error: string | null;
}

/** The pending action finished: verify it (or, when it failed, let the ladder go on after backoff). */
export function completeAction(state: GuestLadderState, actionId: string, outcome: ActionOutcome, nowMs: number, policy: Policy): StepResult<null> {
  const p = state.pending;
  if (!p || p.actionId !== actionId) throw new Error(`ladder ${state.guest}: completeAction(${actionId}) but pending is ${p?.actionId ?? 'nothing'}`);
  const events: LadderEvent[] = [];
  const ladders = state.ladders.map((l) => {
    if (l.kind !== p.fault) return l;
    const r = rungOf(policy, l.kind, l.rung);
    if (!outcome.ok) {
      const n = { ...l, phase: 'ready' as const, lastActionEndMs: nowMs, verifyUntilMs: null, retryAfterMs: nowMs + retryDelayMs(policy, l) };
      events.push(stepEvent(n, policy, `${p.action} failed: ${outcome.error ?? 'no reason given'}`));
      return n;
    }
    const verifyMs = 1000 * (r?.verifyTimeoutSec ?? 60);
    const n = { ...l, phase: 'verifying' as const, lastActionEndMs: nowMs, verifyUntilMs: nowMs + verifyMs };
    events.push(stepEvent(n, policy, `${p.action} done in ${nowMs - p.startedAtMs} ms; verifying within ${verifyMs / 1000} s`));
    return n;
  });
  return { state: { ...state, seq: state.seq + 1, ladders, pending: null }, decision: null, events };
}

/**
 * A supervisor that starts again finds the state it last persisted. An action
 * that was pending may have run wholly or in part: it is counted as done (never
 * repeated) and verified by the next scans, so the ladder goes on from there.
 */
export function resumeAfterRestart(state: GuestLadderState, nowMs: number, policy: Policy): StepResult<null> {
  if (!state.pending) return { state, decision: null, events: [] };
  const p = state.pending;
  const r = completeAction(state, p.actionId, { ok: true, error: null }, nowMs, policy);
  return {
    ...r,
    events: [
      { type: 'step', fault: p.fault, findingId: p.findingId, step: p.rung, action: p.action, attempt: p.attempt,
        reason: `supervisor restarted while ${p.action} (attempt ${p.attempt}) was in progress; counted as done, not repeated` },
      ...r.events,
    ],
  };
}

/** Where each ladder stands, for guest-health reports. */
export function ladderSummary(state: GuestLadderState, policy: Policy): { fault: FaultKind; step: number; action: ActionKind; attempt: number; phase: LadderPhase }[] {
  return state.ladders.map((l) => {
    const r = rungOf(policy, l.kind, Math.min(l.rung, policy.faults[l.kind].ladder.length - 1));
    return { fault: l.kind, step: l.rung, action: (r as Rung).action, attempt: l.attemptsOnRung, phase: l.phase };
  });
}
