// The device side of over-the-air policy updates: bundles arrive on
// introvisor/<device>/policy/set and introvisor/group/<group>/policy/set,
// are verified, applied through the policy store, and the outcome goes to the
// retained introvisor/<device>/policy/state and to the event journal.
import { createHash } from 'node:crypto';
import { Ajv } from 'ajv';
import type { EventSink, PolicyValidator } from '../events/sink.js';
import { formatAjvErrors, statusEnvelope, type StatusMessage } from '../events/schemas.js';
import { topicsFor, type Topics } from '../events/topics.js';
import { DEFAULT_MAX_BUNDLE_BYTES, verifyBundle, type RejectCode } from './bundle.js';
import type { Keyring } from './keyring.js';
import type { FilePolicyStore } from './policy-store.js';
import { errorMessage } from '../util/errors.js';

export interface PolicyStatePayload {
  /** initial: what runs at start-up; applied / rejected / rolled-back: the outcome of the last bundle received. */
  readonly status: 'initial' | 'applied' | 'rejected' | 'rolled-back';
  readonly activeVersion: number | null;
  readonly activeSource: string | null;
  readonly activeKeyId: string | null;
  /** The received bundle's version, when it could be read. */
  readonly bundleVersion: number | null;
  readonly code: RejectCode | null;
  readonly reason: string | null;
  /** What was received (null for the initial state): its topic, size and sha256 of its bytes. */
  readonly received: { readonly topic: string; readonly bytes: number; readonly sha256: string } | null;
}
export type PolicyStateMessage = StatusMessage<'policy-state', PolicyStatePayload>;

const nullableInt = { anyOf: [{ type: 'integer', minimum: 0 }, { type: 'null' }] };
const nullableStr = { anyOf: [{ type: 'string', maxLength: 4000 }, { type: 'null' }] };
export const policyStatePayloadSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['status', 'activeVersion', 'activeSource', 'activeKeyId', 'bundleVersion', 'code', 'reason', 'received'],
  properties: {
    status: { enum: ['initial', 'applied', 'rejected', 'rolled-back'] },
    activeVersion: nullableInt, activeSource: nullableStr, activeKeyId: nullableStr, bundleVersion: nullableInt,
    code: { anyOf: [{ enum: ['oversize', 'not-json', 'bad-envelope', 'unknown-key', 'bad-signature', 'bad-content', 'wrong-target', 'not-newer', 'policy-invalid', 'load-failed'] }, { type: 'null' }] },
    reason: nullableStr,
    received: {
      anyOf: [{ type: 'null' }, {
        type: 'object', additionalProperties: false, required: ['topic', 'bytes', 'sha256'],
        properties: { topic: { type: 'string', maxLength: 512 }, bytes: { type: 'integer', minimum: 0 }, sha256: { type: 'string', pattern: '^[0-9a-f]{64}$' } },
      }],
    },
  },
};
export const policyStateMessageSchema = statusEnvelope('policy-state', policyStatePayloadSchema);
const checkPolicyState = new Ajv({ allErrors: true, strict: true }).compile<PolicyStateMessage>(policyStateMessageSchema);

export function parsePolicyState(data: unknown, where: string): PolicyStateMessage {
  if (!checkPolicyState(data)) throw new Error(`${where}: not a policy-state message: ${formatAjvErrors(checkPolicyState.errors)}`);
  return data;
}

export interface OtaAgentOptions<P> {
  readonly deviceId: string;
  readonly groups: readonly string[];
  readonly keyring: Keyring;
  readonly store: FilePolicyStore<P>;
  readonly sink: EventSink;
  /** Where retained status goes (Telemetry.setRetained). */
  readonly publishRetained: (topic: string, message: string) => void;
  readonly validatePolicy: PolicyValidator<P>;
  readonly maxBytes?: number;
  /** Messages one topic may bring at once, then one per second (a token bucket). */
  readonly burst?: number;
  readonly perSecond?: number;
  /** How long identical rejections (same bytes, same outcome) fold into one counted event. */
  readonly foldWindowMs?: number;
  readonly now?: () => number;
}

/** Anyone who can publish to the broker can send here: per-topic defaults well above any operator's pace. */
export const OTA_BURST = 60;
export const OTA_PER_SECOND = 1;
export const OTA_FOLD_WINDOW_MS = 60_000;
const MAX_FOLDS = 1024;

interface Bucket { tokens: number; atMs: number; dropped: number; firstDropMs: number }
interface Fold { topic: string; sinceMs: number; count: number; reason: string; version: number | null; keyId: string | null }

export class OtaAgent<P> {
  readonly topics: Topics;
  private queue: Promise<unknown> = Promise.resolve();
  private readonly buckets = new Map<string, Bucket>();
  /** Recent rejections by topic + sha256 of the bytes: a replay is counted, not journaled again. */
  private readonly folds = new Map<string, Fold>();
  private flushTimer: NodeJS.Timeout | undefined;
  private readonly now: () => number;

  constructor(private readonly opts: OtaAgentOptions<P>) {
    this.topics = topicsFor(opts.deviceId);
    this.now = opts.now ?? Date.now;
    if (opts.keyring.size === 0) throw new Error('OTA: the keyring is empty, so no policy bundle could ever be accepted');
  }

  /** The topics to subscribe to. */
  subscriptions(): string[] {
    return [this.topics.policySet, ...this.opts.groups.map((g) => this.topics.groupPolicySet(g))];
  }

  /** Publishes what runs now (call once at start-up). */
  announce(): PolicyStateMessage {
    return this.publish({ status: 'initial', bundleVersion: null, code: null, reason: null, received: null });
  }

  /** Handles one message from a subscribed topic; bundles are handled one at a time, in arrival order. */
  handle(topic: string, payload: Buffer): Promise<PolicyStateMessage | null> {
    if (!this.subscriptions().includes(topic)) return Promise.resolve(null);
    // Over the topic's rate: dropped unread, counted, said once (see flush()).
    if (!this.admit(topic)) return Promise.resolve(null);
    const run = this.queue.then(() => this.handleNow(topic, payload));
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async handleNow(topic: string, payload: Buffer): Promise<PolicyStateMessage | null> {
    // An empty message is how an operator clears a retained bundle from the broker: nothing to apply.
    if (payload.length === 0) return null;
    const received = { topic, bytes: payload.length, sha256: createHash('sha256').update(payload).digest('hex') };
    const running = this.opts.store.currentStored();
    const result = verifyBundle(payload, {
      keyring: this.opts.keyring, deviceId: this.opts.deviceId, groups: this.opts.groups,
      currentVersion: running?.version ?? null, maxBytes: this.opts.maxBytes ?? DEFAULT_MAX_BUNDLE_BYTES,
      validatePolicy: this.opts.validatePolicy,
    });
    const source = `ota:${topic}`;
    if (!result.ok) {
      // The running bundle delivered again (a retained policy/set after reconnect) is not an update attempt.
      if (result.code === 'not-newer' && result.digest !== null && result.digest === running?.digest) return null;
      const foldKey = `${topic}\u0000${received.sha256}`;
      const reason = `${result.code}: ${result.reason}`;
      const fold = this.folds.get(foldKey);
      if (fold && fold.reason === reason && this.now() - fold.sinceMs < this.foldWindowMs) {
        fold.count++;
        this.armFlush();
        return null;
      }
      if (fold) this.flushFold(foldKey, fold);
      this.folds.set(foldKey, { topic, sinceMs: this.now(), count: 0, reason, version: result.version, keyId: result.keyId });
      // Bounded: the rate limit already caps how many distinct messages come in a window.
      if (this.folds.size > MAX_FOLDS) {
        const [oldestKey, oldest] = this.folds.entries().next().value as [string, Fold];
        this.flushFold(oldestKey, oldest);
      }
      this.journal({ outcome: 'rejected', version: result.version, previousVersion: running?.version ?? null, activeVersion: running?.version ?? null, source, keyId: result.keyId, reason: `${result.code}: ${result.reason}` });
      return this.publish({ status: 'rejected', bundleVersion: result.version, code: result.code, reason: result.reason, received });
    }
    const b = result.bundle;
    const applied = await this.opts.store.apply({ version: b.version, source, keyId: b.keyId, digest: b.digest, document: b.document });
    if (applied.ok) {
      this.journal({ outcome: 'applied', version: b.version, previousVersion: applied.previousVersion, activeVersion: b.version, source, keyId: b.keyId, reason: null });
      return this.publish({ status: 'applied', bundleVersion: b.version, code: null, reason: null, received });
    }
    const status = applied.rolledBack ? 'rolled-back' : 'rejected';
    this.journal({ outcome: status, version: b.version, previousVersion: running?.version ?? null, activeVersion: applied.activeVersion, source, keyId: b.keyId, reason: `load-failed: ${applied.reason}` });
    return this.publish({ status, bundleVersion: b.version, code: 'load-failed', reason: applied.reason, received });
  }

  private get foldWindowMs(): number { return this.opts.foldWindowMs ?? OTA_FOLD_WINDOW_MS; }

  private admit(topic: string): boolean {
    const burst = this.opts.burst ?? OTA_BURST;
    const now = this.now();
    const b = this.buckets.get(topic) ?? { tokens: burst, atMs: now, dropped: 0, firstDropMs: 0 };
    b.tokens = Math.min(burst, b.tokens + ((now - b.atMs) / 1000) * (this.opts.perSecond ?? OTA_PER_SECOND));
    b.atMs = now;
    this.buckets.set(topic, b);
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return true;
    }
    if (b.dropped++ === 0) b.firstDropMs = now;
    this.armFlush();
    return false;
  }

  private armFlush(): void {
    if (this.flushTimer) return;
    this.flushTimer = setTimeout(() => { this.flushTimer = undefined; this.flush(false); }, this.foldWindowMs);
    this.flushTimer.unref();
  }

  /**
   * Journals what was only counted: identical rejections folded, messages dropped over the rate.
   * all: everything now (shutdown); otherwise what is older than the fold window.
   */
  flush(all = true): void {
    const now = this.now();
    for (const [key, f] of this.folds) {
      if (all || now - f.sinceMs >= this.foldWindowMs) this.flushFold(key, f);
    }
    for (const [topic, b] of this.buckets) {
      if (b.dropped === 0) continue;
      const burst = this.opts.burst ?? OTA_BURST;
      const per = this.opts.perSecond ?? OTA_PER_SECOND;
      const running = this.opts.store.currentStored();
      this.journal({
        outcome: 'rejected', version: null, previousVersion: running?.version ?? null, activeVersion: running?.version ?? null, source: `ota:${topic}`, keyId: null,
        reason: `rate-limited: ${b.dropped} messages on ${topic} since ${new Date(b.firstDropMs).toISOString()} dropped unread (at most ${burst} at once, then ${per} a second)`,
      });
      b.dropped = 0;
    }
    if (this.folds.size > 0 && !all) this.armFlush();
  }

  /** Flushes what was counted and stops the timer. */
  close(): void {
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    this.flush(true);
  }

  private flushFold(key: string, f: Fold): void {
    this.folds.delete(key);
    if (f.count === 0) return;
    const running = this.opts.store.currentStored();
    this.journal({
      outcome: 'rejected', version: f.version, previousVersion: running?.version ?? null, activeVersion: running?.version ?? null, source: `ota:${f.topic}`, keyId: f.keyId,
      reason: `${f.count} more identical messages rejected since ${new Date(f.sinceMs).toISOString()} (${f.reason})`,
    });
  }

  private journal(p: { outcome: 'applied' | 'rejected' | 'rolled-back'; version: number | null; previousVersion: number | null; activeVersion: number | null; source: string; keyId: string | null; reason: string | null }): void {
    try {
      this.opts.sink.record({ kind: 'policy-change', payload: { ...p, reason: p.reason === null ? null : p.reason.slice(0, 2000) } });
    } catch (e) {
      process.emitWarning(`OTA: recording the policy change failed: ${errorMessage(e)}`);
    }
  }

  private publish(p: Omit<PolicyStatePayload, 'activeVersion' | 'activeSource' | 'activeKeyId'>): PolicyStateMessage {
    const active = this.opts.store.currentStored();
    const msg: PolicyStateMessage = {
      v: 1, device: this.opts.deviceId, kind: 'policy-state', atMs: Date.now(),
      payload: { ...p, reason: p.reason === null ? null : p.reason.slice(0, 4000), activeVersion: active?.version ?? null, activeSource: active?.source ?? null, activeKeyId: active?.keyId ?? null },
    };
    this.opts.publishRetained(this.topics.policyState, JSON.stringify(msg));
    return msg;
  }
}
