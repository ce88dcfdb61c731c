// The control socket's protocol: one JSON object per line each way. A request
// names an operation; the reply is { ok: true, result } or { ok: false, error }.
// Requests are schema-checked (ajv) and size-limited before anything acts on them.
import { join } from 'node:path';
import { Ajv, type JSONSchemaType } from 'ajv';
import { compiledOnUse } from '../util/lazy-validator.js';
import { formatAjvErrors } from '../events/schemas.js';
import { ACTION_KINDS, type ActionKind } from '../policy/types.js';
import { ATTACKS, type Attack } from './demo.js';
import type { Progress } from '../util/progress.js';

/** A request line longer than this is refused (and the connection closed). */
export const MAX_REQUEST_BYTES = 64 * 1024;
/** A reply line longer than this is refused by the client. */
export const MAX_REPLY_BYTES = 8 * 1024 * 1024;
/** What an exec reply carries of the command's stdout and stderr, each. */
export const MAX_EXEC_OUTPUT_BYTES = 64 * 1024;

/** The one place the socket's path is made: in the supervisor's run directory. */
export const controlSocketPath = (runDir: string): string => join(runDir, 'control.sock');

export const VIEW_NAMES = ['summary', 'ps', 'modules', 'syscalls', 'findings', 'trap'] as const;
export type ViewName = (typeof VIEW_NAMES)[number];

/** Who sent a request, as the client says (recorded next to what the socket itself knows). */
export interface ClientInfo { readonly name: string; readonly pid?: number }

export type ControlRequest =
  | { readonly op: 'guests'; readonly client?: ClientInfo }
  | { readonly op: 'view'; readonly guest: string; readonly view: ViewName; readonly client?: ClientInfo }
  /** progress: the server sends progress lines (ControlProgress) while the action runs, before the reply. */
  | { readonly op: 'action'; readonly guest: string; readonly action: ActionKind; readonly target?: string; readonly progress?: boolean; readonly client?: ClientInfo }
  | { readonly op: 'release' | 'baseline-accept' | 'pause' | 'resume'; readonly guest: string; readonly client?: ClientInfo }
  | { readonly op: 'exec'; readonly guest: string; readonly argv: readonly string[]; readonly timeoutSec?: number; readonly client?: ClientInfo }
  /** The demo's attacks, on lab guests only. */
  | { readonly op: 'demo-attack'; readonly guest: string; readonly attack: Attack; readonly client?: ClientInfo };

export type ControlReply = { readonly ok: true; readonly result: unknown } | { readonly ok: false; readonly error: string };

/** How far a long operation is, sent about once a second while it runs (a line of its own before the reply). */
export type ActionProgress = Progress;
export interface ControlProgress { readonly progress: ActionProgress }

export const progressSchema: Schema = {
  type: 'object', additionalProperties: false, required: ['progress'],
  properties: {
    progress: {
      type: 'object', additionalProperties: false, required: ['action', 'phase', 'elapsedMs', 'expectedMs', 'percent', 'note'],
      properties: {
        action: { type: 'string', maxLength: 64 },
        phase: { anyOf: [{ type: 'string', maxLength: 64 }, { type: 'null' }] },
        elapsedMs: { type: 'number', minimum: 0 },
        expectedMs: { anyOf: [{ type: 'number', minimum: 0 }, { type: 'null' }] },
        percent: { anyOf: [{ type: 'integer', minimum: 0, maximum: 100 }, { type: 'null' }] },
        note: { anyOf: [{ type: 'string', maxLength: 200 }, { type: 'null' }] },
      },
    },
  },
};

type Schema = Record<string, unknown>;
const guest: Schema = { type: 'string', minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9][A-Za-z0-9._-]*$' };
const client: Schema = {
  type: 'object', additionalProperties: false, required: ['name'],
  properties: { name: { type: 'string', minLength: 1, maxLength: 32, pattern: '^[a-z0-9][a-z0-9-]*$' }, pid: { type: 'integer', minimum: 1, maximum: 4_194_304 } },
};
const req = (op: unknown, properties: Record<string, Schema>, optional: string[] = []): Schema => ({
  type: 'object', additionalProperties: false,
  required: ['op', ...Object.keys(properties).filter((k) => !optional.includes(k))],
  properties: { op, client, ...properties },
});

export const requestSchema: Schema = {
  oneOf: [
    req({ const: 'guests' }, {}),
    req({ const: 'view' }, { guest, view: { enum: [...VIEW_NAMES] } }),
    req({ const: 'action' }, { guest, action: { enum: [...ACTION_KINDS] }, target: { type: 'string', minLength: 1, maxLength: 256 }, progress: { type: 'boolean' } }, ['target', 'progress']),
    req({ enum: ['release', 'baseline-accept', 'pause', 'resume'] }, { guest }),
    req({ const: 'exec' }, {
      guest,
      argv: { type: 'array', minItems: 1, maxItems: 64, items: { type: 'string', maxLength: 4096 } },
      timeoutSec: { type: 'integer', minimum: 1, maximum: 600 },
    }, ['timeoutSec']),
    req({ const: 'demo-attack' }, { guest, attack: { enum: [...ATTACKS] } }),
  ],
};

const validate = compiledOnUse(() => new Ajv({ allErrors: true, strict: true }).compile(requestSchema as unknown as JSONSchemaType<ControlRequest>));

/** Parses one request line; throws saying what is wrong with it. */
export function parseRequest(line: string): ControlRequest {
  let data: unknown;
  try { data = JSON.parse(line); } catch (e) { throw new Error(`request is not JSON: ${(e as Error).message}`); }
  if (!validate(data)) {
    // oneOf reports every branch; the op's own branch says the most.
    const op = typeof data === 'object' && data !== null && 'op' in data ? String((data as { op: unknown }).op) : '(none)';
    throw new Error(`request (op ${op.slice(0, 32)}) is not valid: ${formatAjvErrors(validate.errors, 3)}`);
  }
  return data;
}
