// The live supervisor decodes the syscall dispatch switches (src/views/dispatch.ts) in a child
// process: the decoder is a WebAssembly module, and inside a nested test guest (the supervisor
// under TCG, an image restore just done) the supervisor process died by SIGSEGV/SIGTRAP while it
// decoded in-process. A child that dies is a view error for that switch, not a dead supervisor.
// Scans stay synchronous: a body not decoded yet is left out of the scan (its hash is still
// compared) and the next scan has it. Results are kept per body relative to its start, so a
// restored or rebooted guest with the same switch (rel32 targets move with the slide) needs no
// new decoding.
import { createHash } from 'node:crypto';
import { execFile, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Ajv, type JSONSchemaType } from 'ajv';
import type { SwitchDecode, SwitchMap } from '../views/dispatch.js';
import { formatAjvErrors } from '../events/schemas.js';
import { errorMessage } from '../util/errors.js';

/** What the child prints: per request, the nr ranges with targets relative to the body's start. */
export interface DecodeReply {
  results: { ranges: { lo: number; hi: number; delta: number }[]; errors: string[] }[];
}

const MAX_RANGES = 65_536;
const MAX_DELTA = 0x1_0000_0000;

const replySchema: JSONSchemaType<DecodeReply> = {
  type: 'object',
  additionalProperties: false,
  required: ['results'],
  properties: {
    results: {
      type: 'array',
      maxItems: 16,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['ranges', 'errors'],
        properties: {
          ranges: {
            type: 'array',
            maxItems: MAX_RANGES,
            items: {
              type: 'object',
              additionalProperties: false,
              required: ['lo', 'hi', 'delta'],
              properties: {
                lo: { type: 'integer', minimum: 0, maximum: 0xffff_ffff },
                hi: { type: 'integer', minimum: 0, maximum: 0xffff_ffff },
                // A rel32 reaches at most 2 GiB either way of the body.
                delta: { type: 'integer', minimum: -MAX_DELTA, maximum: MAX_DELTA },
              },
            },
          },
          errors: { type: 'array', maxItems: 1024, items: { type: 'string', maxLength: 400 } },
        },
      },
    },
  },
};
const checkReply = new Ajv({ allErrors: true, strict: true }).compile(replySchema);

const CHILD = fileURLToPath(new URL('./switch-decoder-child.js', import.meta.url));
const MAX_REPLY_BYTES = 8 << 20;
/** Node's start and the decoding under TCG take seconds; a child past this is killed (its switches: a view error). */
const CHILD_TIMEOUT_MS = 300_000;
const RETRY_AFTER_MS = 30_000;
const MAX_ATTEMPTS = 3;
const MAX_BODIES = 16;

interface Entry {
  /** Ranges relative to the body's start, or null while the child has not answered. */
  map: { ranges: { lo: number; hi: number; delta: number }[]; errors: string[] } | null;
  attempts: number;
  retryAt: number;
}

export class ChildSwitchDecoder {
  private readonly bodies = new Map<string, Entry>();
  private readonly inFlight = new Set<string>();
  private queue: { key: string; code: Buffer }[] = [];
  private child: ChildProcess | undefined;
  private flushScheduled = false;

  /** `log`: one line per child's answer (what it decoded, or why it failed). */
  constructor(private readonly timeoutMs = CHILD_TIMEOUT_MS, private readonly script = CHILD, private readonly log?: (line: string) => void) {}

  /** For ScanOptions.switchDecoder. */
  readonly decode: SwitchDecode = (name, code, start) => {
    const key = `${name}:${createHash('sha256').update(code).digest('hex')}`;
    let e = this.bodies.get(key);
    if (!e) {
      if (this.bodies.size >= MAX_BODIES) this.bodies.delete(this.bodies.keys().next().value as string);
      e = { map: null, attempts: 0, retryAt: 0 };
      this.bodies.set(key, e);
    }
    const failed = e.map !== null && e.map.ranges.length === 0 && e.map.errors.length > 0;
    if ((e.map === null || (failed && Date.now() >= e.retryAt)) && e.attempts < MAX_ATTEMPTS && !this.queue.some((q) => q.key === key) && !this.inFlight.has(key)) {
      this.queue.push({ key, code: Buffer.from(code) });
      this.scheduleFlush();
    }
    if (e.map === null) return null;
    return { ranges: e.map.ranges.map((r) => ({ lo: r.lo, hi: r.hi, target: start + BigInt(r.delta) })), errors: e.map.errors };
  };

  /** Whether a child is decoding now (for tests and shutdown). */
  get busy(): boolean { return this.child !== undefined || this.queue.length > 0; }

  private scheduleFlush(): void {
    if (this.flushScheduled || this.child) return;
    this.flushScheduled = true;
    setImmediate(() => { this.flushScheduled = false; this.flush(); });
  }

  /** One child for everything queued (the three switches of a kernel arrive in one scan). */
  private flush(): void {
    if (this.child || this.queue.length === 0) return;
    const batch = this.queue.splice(0, 16);
    for (const b of batch) this.inFlight.add(b.key);
    const request = JSON.stringify({ requests: batch.map((b) => b.code.toString('base64')) });
    const t0 = Date.now();
    const child = execFile(process.execPath, [this.script], { maxBuffer: MAX_REPLY_BYTES, timeout: this.timeoutMs, killSignal: 'SIGKILL', encoding: 'utf8' }, (err, stdout, stderr) => {
      if (this.child !== child) return; // cancelled by close()
      this.child = undefined;
      for (const b of batch) this.inFlight.delete(b.key);
      const results = err ? null : parseReply(stdout, batch.length);
      const said: string[] = [];
      for (const [i, b] of batch.entries()) {
        const e = this.bodies.get(b.key);
        if (!e) continue;
        e.attempts++;
        const r = results && typeof results !== 'string' ? results[i] : undefined;
        const name = b.key.slice(0, b.key.indexOf(':'));
        if (r) { e.map = r; said.push(`${name}: ${r.ranges.length} ranges${r.errors.length ? `, ${r.errors.length} errors` : ''}`); continue; }
        const why = err ? childFailure(err, stderr) : typeof results === 'string' ? results : 'no result';
        e.map = { ranges: [], errors: [`decoder process (attempt ${e.attempts} of ${MAX_ATTEMPTS}): ${why}`] };
        e.retryAt = Date.now() + RETRY_AFTER_MS;
        said.push(`${name}: ${e.map.errors[0] ?? ''}`);
      }
      this.log?.(`dispatch switches decoded in a child process in ${Date.now() - t0} ms (${said.join('; ')})`);
      this.scheduleFlush();
    });
    this.child = child;
    child.stdin?.on('error', () => undefined); // a child that died early: reported through the callback
    child.stdin?.end(request);
  }

  /** Kills a running child; what it was decoding is asked for again on a later scan. */
  close(): void {
    const c = this.child;
    this.child = undefined;
    for (const k of this.inFlight) this.bodies.delete(k);
    this.inFlight.clear();
    this.queue = [];
    if (c && c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  }
}

function childFailure(err: Error & { code?: unknown; signal?: unknown; killed?: boolean }, stderr: string): string {
  const tail = stderr.trim().split('\n').slice(-2).join(' | ').slice(0, 300);
  const how = typeof err.signal === 'string' && err.signal !== '' ? `killed by ${err.signal}${err.killed ? ' (timeout)' : ''}` : `exit ${String(err.code)}`;
  return `${how}${tail ? `: ${tail}` : ''}`;
}

/** The child's results, or a string saying what is wrong with its reply. */
export function parseReply(stdout: string, expected: number): DecodeReply['results'] | string {
  let data: unknown;
  try { data = JSON.parse(stdout); } catch (e) { return `reply is not JSON (${errorMessage(e)})`; }
  if (!checkReply(data)) return `reply malformed: ${formatAjvErrors(checkReply.errors)}`;
  if (data.results.length !== expected) return `reply has ${data.results.length} results for ${expected} requests`;
  return data.results;
}

/** Ranges with absolute targets -> relative (what the child sends). */
export function relativeMap(map: SwitchMap, start: bigint): DecodeReply['results'][number] {
  const errors = map.errors.map((e) => e.slice(0, 400)).slice(0, 1023);
  // What the reply schema refuses would fail every body of the batch: refused here, for this body only.
  if (map.ranges.length > MAX_RANGES) return { ranges: [], errors: [...errors, `more than ${MAX_RANGES} call targets`] };
  const ranges = map.ranges.map((r) => ({ lo: r.lo, hi: r.hi, delta: Number(r.target - start) }));
  if (ranges.some((r) => Math.abs(r.delta) > MAX_DELTA)) return { ranges: [], errors: [...errors, 'a call target more than 4 GiB from the switch'] };
  return { ranges, errors };
}
