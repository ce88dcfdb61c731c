// A client of the supervisor's control socket (the CLI's way in): one request,
// one reply, with a timeout and a bound on the reply's size.
import { connect } from 'node:net';
import { Ajv } from 'ajv';
import { compiledOnUse } from '../util/lazy-validator.js';
import { formatAjvErrors } from '../events/schemas.js';
import { NotReachableError, TimeoutError } from '../util/errors.js';
import { MAX_REPLY_BYTES, progressSchema, type ActionProgress, type ControlRequest } from './protocol.js';

const validateReply = compiledOnUse(() => new Ajv({ strict: true }).compile({
  oneOf: [
    { type: 'object', required: ['ok', 'result'], properties: { ok: { const: true }, result: {} } },
    { type: 'object', required: ['ok', 'error'], properties: { ok: { const: false }, error: { type: 'string' } } },
  ],
}));

const validateProgress = new Ajv({ strict: true }).compile(progressSchema);

/**
 * Sends a request and returns the result; throws the supervisor's error, or why it could not be asked.
 * Progress lines before the reply (an action asked with progress: true) go to onProgress.
 */
export function controlRequest(path: string, req: ControlRequest, timeoutMs = 30_000, onProgress?: (p: ActionProgress) => void): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const sock = connect(path);
    let buf = Buffer.alloc(0);
    let settled = false;
    const finish = (e: Error | null, v?: unknown): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      if (e) reject(e); else resolve(v);
    };
    const timer = setTimeout(() => finish(new TimeoutError(`control socket ${path}: ${req.op}`, timeoutMs)), timeoutMs);
    sock.on('connect', () => sock.write(`${JSON.stringify({ ...req, client: req.client ?? { name: 'cli', pid: process.pid } })}\n`));
    sock.on('error', (e) => finish(new NotReachableError(`control socket ${path}: ${e.message} (is the supervisor running?)`)));
    sock.on('close', () => finish(new Error(`control socket ${path}: closed without a reply`)));
    sock.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      for (let nl = buf.indexOf(0x0a); nl >= 0 && !settled; nl = buf.indexOf(0x0a)) {
        const line = buf.subarray(0, nl).toString('utf8');
        buf = buf.subarray(nl + 1);
        let data: unknown;
        try { data = JSON.parse(line); } catch (e) { finish(new Error(`control socket ${path}: reply is not JSON: ${(e as Error).message}`)); return; }
        if (typeof data === 'object' && data !== null && 'progress' in data) {
          if (!validateProgress(data)) { finish(new Error(`control socket ${path}: not a progress line: ${formatAjvErrors(validateProgress.errors)}`)); return; }
          onProgress?.((data as unknown as { progress: ActionProgress }).progress);
          continue;
        }
        if (!validateReply(data)) { finish(new Error(`control socket ${path}: not a reply: ${formatAjvErrors(validateReply.errors)}`)); return; }
        const r = data as { ok: boolean; result?: unknown; error?: string };
        if (r.ok) finish(null, r.result);
        else finish(new Error(r.error ?? 'failed'));
        return;
      }
      if (buf.length > MAX_REPLY_BYTES) finish(new Error(`control socket ${path}: reply longer than ${MAX_REPLY_BYTES} bytes`));
    });
  });
}
