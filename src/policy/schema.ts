// The policy file's JSON schema (ajv-ready; the event store and OTA read it
// from here) and its validation into a complete Policy with defaults filled in.
import { readFileSync } from 'node:fs';
import { Ajv, type ErrorObject } from 'ajv';
import { ACTION_KINDS, FAULT_KINDS, type FaultKind, type Policy, type PolicyDocument, type Rung } from './types.js';
import { DEFAULT_POLICY } from './defaults.js';

const rungSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['action', 'count', 'verifyTimeoutSec', 'backoffSec'],
  properties: {
    action: { type: 'string', enum: [...ACTION_KINDS] },
    count: { type: 'integer', minimum: 1, maximum: 100 },
    verifyTimeoutSec: { type: 'number', minimum: 1, maximum: 3600 },
    backoffSec: { type: 'number', minimum: 0, maximum: 86400 },
    backoffFactor: { type: 'number', minimum: 1, maximum: 10 },
    resetWindowSec: { type: 'number', minimum: 0, maximum: 604800 },
  },
} as const;

const faultSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    ladder: { type: 'array', minItems: 1, maxItems: 20, items: rungSchema },
    resetWindowSec: { type: 'number', minimum: 0, maximum: 604800 },
    confirmScans: { type: 'integer', minimum: 1, maximum: 100 },
  },
} as const;

/** JSON schema (draft-07, ajv) of a policy document. */
export const POLICY_SCHEMA = {
  $id: 'https://introvisor.local/schemas/policy-v1.json',
  title: 'introvisor recovery policy',
  type: 'object',
  additionalProperties: false,
  required: ['version'],
  properties: {
    version: { const: 1 },
    maxActionsPerHour: { type: 'integer', minimum: 1, maximum: 3600 },
    onExhausted: {
      type: 'object',
      additionalProperties: false,
      properties: {
        hold: { type: 'string', enum: ['keep-running', 'pause', 'stop'] },
        alert: { type: 'boolean' },
      },
    },
    faults: {
      type: 'object',
      additionalProperties: false,
      properties: Object.fromEntries(FAULT_KINDS.map((k) => [k, faultSchema])),
    },
  },
} as const;

const ajv = new Ajv({ allErrors: true, strict: true });
const validateDocument = ajv.compile<PolicyDocument>(POLICY_SCHEMA);

export type PolicyValidation = { ok: true; policy: Policy } | { ok: false; errors: string[] };

/** One message per problem, each naming the field as a JSON pointer. */
export function describeAjvErrors(errors: readonly ErrorObject[] | null | undefined, root = ''): string[] {
  return (errors ?? []).map((e) => {
    let field = `${root}${e.instancePath}` || '/';
    let msg = e.message ?? 'is invalid';
    if (e.keyword === 'additionalProperties' && typeof e.params.additionalProperty === 'string') {
      field = `${field === '/' ? '' : field}/${e.params.additionalProperty}`;
      msg = 'is not a known field';
    } else if (e.keyword === 'required' && typeof e.params.missingProperty === 'string') {
      field = `${field === '/' ? '' : field}/${e.params.missingProperty}`;
      msg = 'is required';
    } else if (e.keyword === 'enum' && Array.isArray(e.params.allowedValues)) {
      msg = `must be one of ${e.params.allowedValues.map((v: unknown) => JSON.stringify(v)).join(', ')}`;
    }
    return `${field} ${msg}`;
  });
}

/** Checks a parsed policy document and fills what it leaves out from DEFAULT_POLICY. */
export function validatePolicy(doc: unknown): PolicyValidation {
  if (!validateDocument(doc)) return { ok: false, errors: describeAjvErrors(validateDocument.errors) };
  const faults = {} as Record<FaultKind, Policy['faults'][FaultKind]>;
  for (const kind of FAULT_KINDS) {
    const given = doc.faults?.[kind];
    const dflt = DEFAULT_POLICY.faults[kind];
    faults[kind] = {
      ladder: (given?.ladder ?? dflt.ladder).map((r: Rung) => ({ ...r })),
      resetWindowSec: given?.resetWindowSec ?? dflt.resetWindowSec,
      confirmScans: given?.confirmScans ?? dflt.confirmScans,
    };
  }
  return {
    ok: true,
    policy: {
      version: 1,
      maxActionsPerHour: doc.maxActionsPerHour ?? DEFAULT_POLICY.maxActionsPerHour,
      onExhausted: {
        hold: doc.onExhausted?.hold ?? DEFAULT_POLICY.onExhausted.hold,
        alert: doc.onExhausted?.alert ?? DEFAULT_POLICY.onExhausted.alert,
      },
      faults,
    },
  };
}

/** Reads and validates a policy file; the error names the file and every bad field. */
export function loadPolicyFile(path: string): Policy {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new Error(`policy ${path}: ${(e as Error).message}`);
  }
  const v = validatePolicy(raw);
  if (!v.ok) throw new Error(`policy ${path}: ${v.errors.join('; ')}`);
  return v.policy;
}
