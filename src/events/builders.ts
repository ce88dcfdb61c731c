// Builders for the events the watchdog records. Every text field is cut to the
// length its kind's schema allows (read from the schema, not repeated here), and
// a finding's evidence is kept within EVIDENCE_MAX_BYTES, so nothing a guest
// says can make an event the store refuses or a message the broker chokes on.
import { payloadSchemas } from './schemas.js';
import type {
  ActionPayload, EventInput, EventKind, FindingPayload, GuestHealthPayload, LadderStepPayload, OperatorActionPayload, ScanPayload,
} from './types.js';

/** A finding's evidence, as JSON, is at most this long; larger evidence is replaced by a note and its head. */
export const EVIDENCE_MAX_BYTES = 16 * 1024;

type Schema = { maxLength?: number; anyOf?: Schema[]; properties?: Record<string, Schema> };

/** The maxLength the schema of `kind` gives `field` (through a nullable's anyOf). */
export function maxLengthOf(kind: EventKind, field: string): number {
  const s = (payloadSchemas[kind] as Schema).properties?.[field];
  const max = s?.maxLength ?? s?.anyOf?.find((a) => a.maxLength !== undefined)?.maxLength;
  if (max === undefined) throw new Error(`event schema ${kind}/${field} has no maxLength`);
  return max;
}

const cut = (kind: EventKind, field: string, text: string): string => {
  const max = maxLengthOf(kind, field);
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
};
const cutOrNull = (kind: EventKind, field: string, text: string | null | undefined): string | null =>
  text === null || text === undefined ? null : cut(kind, field, text);

export function boundedEvidence(evidence: Readonly<Record<string, unknown>>): Readonly<Record<string, unknown>> {
  const json = JSON.stringify(evidence);
  if (json.length <= EVIDENCE_MAX_BYTES) return evidence;
  return { truncated: true, bytes: json.length, head: json.slice(0, EVIDENCE_MAX_BYTES - 256) };
}

export function findingEvent(p: Omit<FindingPayload, 'summary' | 'evidence'> & { summary: string; evidence: Readonly<Record<string, unknown>> }): EventInput {
  return { kind: 'finding', payload: { ...p, findingId: cut('finding', 'findingId', p.findingId), summary: cut('finding', 'summary', p.summary), evidence: boundedEvidence(p.evidence) } };
}

export function ladderStepEvent(p: LadderStepPayload): EventInput {
  return { kind: 'ladder-step', payload: { ...p, findingId: cutOrNull('ladder-step', 'findingId', p.findingId), reason: cut('ladder-step', 'reason', p.reason) } };
}

export function actionEvent(p: ActionPayload): EventInput {
  return {
    kind: 'action',
    payload: {
      ...p, actionId: cut('action', 'actionId', p.actionId), target: cutOrNull('action', 'target', p.target),
      error: cutOrNull('action', 'error', p.error),
    },
  };
}

export function scanEvent(p: ScanPayload): EventInput {
  return { kind: 'scan', payload: { ...p, error: cutOrNull('scan', 'error', p.error) } };
}

export function guestHealthEvent(p: GuestHealthPayload): EventInput {
  return { kind: 'guest-health', payload: { ...p, note: cutOrNull('guest-health', 'note', p.note) } };
}

export function operatorActionEvent(p: OperatorActionPayload): EventInput {
  return {
    kind: 'operator-action',
    payload: {
      ...p, who: cut('operator-action', 'who', p.who), detail: cutOrNull('operator-action', 'detail', p.detail),
      error: cutOrNull('operator-action', 'error', p.error),
    },
  };
}
