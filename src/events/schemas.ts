// JSON schemas of every event payload and of the published envelope. The same
// schemas check events on record (store boundary), and consumers of the MQTT
// topics can use them (docs/MQTT.md prints them with `introvisor-ota schemas`).
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { compiledOnUse } from '../util/lazy-validator.js';
import { EVENT_KINDS, type EventKind, type EventPayloads, type RecordedEvent } from './types.js';

type Schema = Record<string, unknown>;

const obj = (properties: Record<string, Schema>, optional: string[] = []): Schema => ({
  type: 'object',
  additionalProperties: false,
  required: Object.keys(properties).filter((k) => !optional.includes(k)),
  properties,
});
const str = (maxLength = 256): Schema => ({ type: 'string', maxLength });
const nullable = (s: Schema): Schema => ({ anyOf: [s, { type: 'null' }] });
const int = (minimum = 0): Schema => ({ type: 'integer', minimum });
const num = (minimum?: number): Schema => (minimum === undefined ? { type: 'number' } : { type: 'number', minimum });
const ms: Schema = { type: 'integer', minimum: 0 };
const guest: Schema = { type: 'string', minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9][A-Za-z0-9._-]*$' };
const hex: Schema = { type: 'string', pattern: '^0x[0-9a-f]{1,16}$' };
const hexBytes = (maxLength: number): Schema => ({ type: 'string', pattern: '^([0-9a-f]{2})*$', maxLength });
const name: Schema = { type: 'string', minLength: 1, maxLength: 64, pattern: '^[a-z0-9][a-z0-9._:-]*$' };
const jsonObject: Schema = { type: 'object' };

export const payloadSchemas: { readonly [K in EventKind]: Schema } = {
  'scan': obj({
    guest, startedAtMs: ms, durationMs: num(0), outcome: { enum: ['clean', 'faults', 'failed'] },
    findings: int(), error: nullable(str(2000)), policyVersion: nullable(int()),
    stats: { type: 'object', additionalProperties: { type: 'number' }, maxProperties: 64 },
  }),
  'finding': obj({
    guest, findingId: str(256), fault: name, state: { enum: ['raised', 'cleared'] },
    severity: { enum: ['info', 'warning', 'critical'] }, summary: str(1000), evidence: jsonObject,
  }),
  'ladder-step': obj({
    guest, fault: name, findingId: nullable(str(256)), step: nullable(int()), action: nullable(name),
    attempt: int(), reason: str(1000),
  }),
  'action': obj({
    guest, actionId: str(128), action: name, fault: nullable(name), target: nullable(str(256)),
    outcome: { enum: ['ok', 'failed'] }, error: nullable(str(2000)), startedAtMs: ms, durationMs: num(0),
  }),
  'refused-write': obj({
    guest, refusedAtMs: ms, vcpu: int(), gpa: hex, gva: nullable(hex), length: { type: 'integer', minimum: 0, maximum: 4096 },
    action: { enum: ['gp', 'drop'] }, source: { enum: ['emulated', 'cmpxchg', 'write-std', 'unemulated'] }, trapSeq: int(1), lostBefore: int(),
    rip: hex, instruction: nullable(hexBytes(64)), value: hexBytes(8192), table: name, entry: nullable(int()),
  }),
  'policy-change': obj({
    outcome: { enum: ['applied', 'rejected', 'rolled-back'] }, version: nullable(int()),
    previousVersion: nullable(int()), activeVersion: nullable(int()), source: str(256), keyId: nullable(str(128)),
    reason: nullable(str(2000)),
  }),
  'host-metrics': obj({
    cpuLoadPercent: num(0), load1: num(0), load5: num(0), load15: num(0),
    memTotalBytes: int(), memUsedBytes: int(), memAvailableBytes: int(),
    disks: { type: 'array', maxItems: 64, items: obj({ mount: str(512), sizeBytes: int(), usedBytes: int() }) },
    temperaturesC: nullable(obj({ main: nullable(num()), max: nullable(num()), cores: { type: 'array', maxItems: 256, items: num() } })),
    uptimeS: num(0),
  }),
  'guest-health': obj({
    guest, health: { enum: ['healthy', 'faulty', 'recovering', 'down', 'unknown'] }, openFindings: int(),
    lastScanAtMs: nullable(ms),
    ladders: { type: 'array', maxItems: 64, items: obj({ fault: name, step: int(), action: name, attempt: int() }) },
    note: nullable(str(1000)),
  }),
  'device-state': obj({
    state: { enum: ['online', 'offline'] }, softwareVersion: str(64), startedAtMs: nullable(ms), policyVersion: nullable(int()),
  }),
  'outbox-dropped': obj({ dropped: int(1), firstSeq: int(1), lastSeq: int(1), limit: int(1) }),
  'operator-action': obj({
    guest: nullable(guest), who: str(128), peer: nullable(obj({ uid: int(), pid: int(1) })), operation: name, detail: nullable(str(1000)),
    outcome: { enum: ['ok', 'failed', 'refused'] }, error: nullable(str(2000)), startedAtMs: ms, durationMs: num(0),
  }),
};

/** The envelope of every published event; payload is checked by the kind's own schema. */
export const envelopeSchema: Schema = obj({
  v: { const: 1 },
  id: { type: 'string', pattern: '^[0-9a-f]{32}:[1-9][0-9]*$' },
  stream: { type: 'string', pattern: '^[0-9a-f]{32}$' },
  seq: int(1),
  device: { type: 'string', minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9][A-Za-z0-9._-]*$' },
  kind: { enum: [...EVENT_KINDS] },
  atMs: ms,
  guest: nullable(guest),
  payload: jsonObject,
});

/** Schema of one kind's full message (envelope + that kind's payload), for docs and consumers. */
export function messageSchema(kind: EventKind): Schema {
  const env = envelopeSchema as { properties: Record<string, Schema> };
  return { ...envelopeSchema, $id: `introvisor/event/${kind}`, properties: { ...env.properties, kind: { const: kind }, payload: payloadSchemas[kind] } };
}

let shared: Ajv | undefined;
const ajv = (): Ajv => (shared ??= new Ajv({ allErrors: true, strict: true }));
const payloadValidators = Object.fromEntries(EVENT_KINDS.map((k) => [k, compiledOnUse(() => ajv().compile(payloadSchemas[k]))])) as {
  [K in EventKind]: ValidateFunction<EventPayloads[K]>;
};
const envelopeValidator = compiledOnUse(() => ajv().compile(envelopeSchema));

export function formatAjvErrors(errors: readonly ErrorObject[] | null | undefined, max = 5): string {
  if (!errors || errors.length === 0) return 'invalid';
  const parts = errors.slice(0, max).map((e) => `${e.instancePath || '/'} ${e.message ?? 'invalid'}${e.keyword === 'additionalProperties' ? ` (${String((e.params as { additionalProperty?: string }).additionalProperty)})` : ''}`);
  return parts.join('; ') + (errors.length > max ? `; and ${errors.length - max} more` : '');
}

/** Checks a payload against its kind's schema; returns null when valid, else what is wrong. */
export function payloadProblem(kind: EventKind, payload: unknown): string | null {
  const v = payloadValidators[kind];
  return v(payload) ? null : `${kind} payload: ${formatAjvErrors(v.errors)}`;
}

/** Validates a received message (e.g. from MQTT) as a RecordedEvent; throws naming what is wrong. */
export function parseRecordedEvent(data: unknown, where: string): RecordedEvent {
  if (!envelopeValidator(data)) throw new Error(`${where}: not an introvisor event: ${formatAjvErrors(envelopeValidator.errors)}`);
  const e = data as { kind: EventKind; payload: unknown; id: string; stream: string; seq: number };
  if (e.id !== `${e.stream}:${e.seq}`) throw new Error(`${where}: id ${e.id} does not match stream:seq`);
  const problem = payloadProblem(e.kind, e.payload);
  if (problem) throw new Error(`${where}: ${problem}`);
  return data as RecordedEvent;
}

/**
 * Retained status messages (device `state`, `policy/state`) are not journal
 * events: only the latest matters, so they carry no stream/seq.
 */
export const statusEnvelope = (kind: string, payload: Schema): Schema => obj({
  v: { const: 1 },
  device: { type: 'string', minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9][A-Za-z0-9._-]*$' },
  kind: { const: kind },
  atMs: ms,
  payload,
});
export const deviceStateMessageSchema: Schema = statusEnvelope('device-state', payloadSchemas['device-state']);
/** Whether the device's event store takes writes (retained on store/state; raised as an alert when it does not). */
export const storeStatePayloadSchema: Schema = obj({
  ok: { type: 'boolean' }, error: nullable(str(2000)), sinceMs: nullable(ms), pending: int(), dropped: int(),
});
export const storeStateMessageSchema: Schema = statusEnvelope('store-state', storeStatePayloadSchema);
const deviceStateValidator = compiledOnUse(() => ajv().compile(deviceStateMessageSchema));

export interface StatusMessage<K extends string, P> { readonly v: 1; readonly device: string; readonly kind: K; readonly atMs: number; readonly payload: P }

export function parseDeviceState(data: unknown, where: string): StatusMessage<'device-state', EventPayloads['device-state']> {
  if (!deviceStateValidator(data)) throw new Error(`${where}: not a device-state message: ${formatAjvErrors(deviceStateValidator.errors)}`);
  return data as StatusMessage<'device-state', EventPayloads['device-state']>;
}
