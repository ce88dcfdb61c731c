// Store-and-forward telemetry: events are already durable in the store's
// outbox when they get here; this pumps the outbox to the broker in seq order
// with a bounded in-flight window, deletes rows on PUBACK, and after any drop
// (broker outage, supervisor restart) replays from the oldest unacknowledged.
// It also keeps the retained status topics (device state with its Last Will,
// policy/state) and hands received messages (policy updates) to subscribers.
import { EventEmitter } from 'node:events';
import type { EventStore } from '../store/event-store.js';
import type { DeviceStatePayload, EventKind } from '../events/types.js';
import type { StatusMessage } from '../events/schemas.js';
import { connectMqtt, type BrokerConfig, type BrokerConnector, type BrokerSession } from './broker.js';
import { topicsFor, type Topics } from '../events/topics.js';
import { errorMessage } from '../util/errors.js';
import { withTimeout } from '../util/deadline.js';

export interface TelemetryOptions {
  readonly store: EventStore;
  readonly broker: BrokerConfig;
  readonly softwareVersion: string;
  /** Topics to subscribe to on every connection (e.g. policy/set and group topics). */
  readonly subscriptions?: readonly string[];
  /** Most QoS 1 messages awaiting PUBACK at once. */
  readonly window?: number;
  readonly backoff?: { readonly initialMs: number; readonly maxMs: number };
  readonly connector?: BrokerConnector;
  /** The policy version to report in the device state. */
  readonly policyVersion?: () => number | null;
  /**
   * A broker that takes a publish and acknowledges nothing for this long (default 30 s) is
   * treated as gone: the session is dropped, said in the log, and a new one is made; what was
   * in flight is sent again from the outbox.
   */
  readonly ackTimeoutMs?: number;
  /** Where a stalled broker is reported (default: a process warning). */
  readonly log?: (line: string) => void;
}

export interface TelemetryStatus {
  readonly connected: boolean;
  readonly pending: number;
  readonly inFlight: number;
  readonly publishedTotal: number;
  readonly connects: number;
  readonly lastError: string | null;
  /** When the broker last acknowledged a publish (ms since the epoch), null before the first. */
  readonly lastAckAtMs: number | null;
  /** How long messages have been in flight without any acknowledgement (0 when none are). */
  readonly awaitingAckMs: number;
  /** Sessions dropped because the broker stopped acknowledging. */
  readonly ackStalls: number;
}

export interface TelemetryEvents {
  connected: [];
  disconnected: [reason: string];
  message: [topic: string, payload: Buffer];
  drained: [];
  stalled: [reason: string];
}

export class Telemetry extends EventEmitter<TelemetryEvents> {
  readonly topics: Topics;
  private readonly store: EventStore;
  private readonly cfg: BrokerConfig;
  private readonly window: number;
  private readonly backoff: { initialMs: number; maxMs: number };
  private readonly connector: BrokerConnector;
  private readonly startedAtMs = Date.now();
  private session: BrokerSession | null = null;
  private generation = 0;
  private running = false;
  private failures = 0;
  private retryTimer: NodeJS.Timeout | null = null;
  /** Highest seq handed to the current session; the next pump reads the outbox after it. */
  private lastSent = 0;
  private inFlight = 0;
  private acked: number[] = [];
  private ackTimer: NodeJS.Timeout | null = null;
  private pumping = false;
  private publishedTotal = 0;
  private connects = 0;
  private lastError: string | null = null;
  private readonly retained = new Map<string, string>();
  private readonly ackTimeoutMs: number;
  /** Since when something is in flight with no PUBACK (reset by every PUBACK); null when nothing is. */
  private awaitingSinceMs: number | null = null;
  private lastAckAtMs: number | null = null;
  private ackStalls = 0;
  private ackCheck: NodeJS.Timeout | null = null;
  private unsubscribeOutbox: (() => void) | null = null;

  constructor(private readonly opts: TelemetryOptions) {
    super();
    this.store = opts.store;
    this.cfg = opts.broker;
    this.window = opts.window ?? 200;
    this.backoff = { initialMs: opts.backoff?.initialMs ?? 500, maxMs: opts.backoff?.maxMs ?? 30_000 };
    this.connector = opts.connector ?? connectMqtt;
    this.topics = topicsFor(opts.store.deviceId);
    this.ackTimeoutMs = opts.ackTimeoutMs ?? 30_000;
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.unsubscribeOutbox = this.store.onOutbox(() => this.pump());
    this.ackCheck = setInterval(() => this.checkAcks(), Math.max(50, Math.min(1_000, this.ackTimeoutMs / 4)));
    this.ackCheck.unref();
    void this.connect();
  }

  /** Graceful stop: flushes acknowledgements, publishes "offline" and disconnects (so the Last Will is not needed). */
  async stop(): Promise<void> {
    this.running = false;
    this.unsubscribeOutbox?.();
    if (this.ackCheck) clearInterval(this.ackCheck);
    this.ackCheck = null;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    const s = this.session;
    if (s) {
      try {
        await withTimeout(s.publish(this.topics.state, this.deviceState('offline'), { qos: 1, retain: true }), 5000, 'telemetry: publishing offline');
        await withTimeout(s.end(false), 5000, 'telemetry: disconnect');
      } catch {
        // The broker is gone or stuck: drop the socket; the Last Will says offline.
        await s.end(true);
      }
    }
    this.dropSession();
  }

  /** Publishes a retained status now if connected, and again after every reconnect. */
  setRetained(topic: string, message: string): void {
    this.retained.set(topic, message);
    const s = this.session;
    if (s) s.publish(topic, message, { qos: 1, retain: true }).catch((e: unknown) => { this.lastError = errorMessage(e); });
  }

  status(): TelemetryStatus {
    return {
      connected: this.session !== null, pending: this.store.outboxStats().pending, inFlight: this.inFlight, publishedTotal: this.publishedTotal,
      connects: this.connects, lastError: this.lastError, lastAckAtMs: this.lastAckAtMs,
      awaitingAckMs: this.awaitingSinceMs === null ? 0 : Date.now() - this.awaitingSinceMs, ackStalls: this.ackStalls,
    };
  }

  /** A broker that stopped acknowledging (stopped, wedged, a half-dead link) looks connected: drop it. */
  private checkAcks(): void {
    const s = this.session;
    if (!s || this.awaitingSinceMs === null) return;
    const waited = Date.now() - this.awaitingSinceMs;
    if (waited <= this.ackTimeoutMs) return;
    const msg = `telemetry: broker ${this.cfg.url} acknowledged nothing for ${waited} ms with ${this.inFlight} messages in flight ` +
      `(last acknowledgement ${this.lastAckAtMs === null ? 'never' : new Date(this.lastAckAtMs).toISOString()}); reconnecting`;
    this.lastError = msg;
    this.ackStalls++;
    (this.opts.log ?? ((l: string) => process.emitWarning(l)))(msg);
    this.dropSession();
    void s.end(true);
    this.emit('stalled', msg);
    this.emit('disconnected', msg);
    this.scheduleReconnect();
  }

  /** Resolves when the outbox is empty (everything acknowledged), or rejects after timeoutMs. */
  waitDrained(timeoutMs: number): Promise<void> {
    if (this.store.outboxStats().pending === 0 && this.inFlight === 0) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => { this.off('drained', done); reject(new Error(`telemetry: outbox not drained within ${timeoutMs} ms (${this.store.outboxStats().pending} pending)`)); }, timeoutMs);
      const done = (): void => { clearTimeout(timer); resolve(); };
      this.once('drained', done);
    });
  }

  private deviceState(state: 'online' | 'offline'): string {
    const msg: StatusMessage<'device-state', DeviceStatePayload> = {
      v: 1, device: this.store.deviceId, kind: 'device-state', atMs: Date.now(),
      payload: { state, softwareVersion: this.opts.softwareVersion, startedAtMs: this.startedAtMs, policyVersion: this.opts.policyVersion?.() ?? null },
    };
    return JSON.stringify(msg);
  }

  private async connect(): Promise<void> {
    if (!this.running) return;
    const gen = ++this.generation;
    let session: BrokerSession;
    try {
      session = await this.connector(this.cfg, { topic: this.topics.state, payload: this.deviceState('offline'), retain: true });
    } catch (e) {
      this.lastError = errorMessage(e);
      this.scheduleReconnect();
      return;
    }
    if (!this.running || gen !== this.generation) { await session.end(true); return; }
    this.session = session;
    this.failures = 0;
    this.connects++;
    session.onClose((reason) => {
      if (this.session !== session) return;
      this.lastError = reason;
      this.dropSession();
      this.emit('disconnected', reason);
      this.scheduleReconnect();
    });
    session.onMessage((topic, payload) => this.emit('message', topic, payload));
    try {
      // Bounded like every publish: a broker that accepts the connection and then says nothing is not connected.
      const acked = <T>(p: Promise<T>, what: string): Promise<T> => withTimeout(p, this.ackTimeoutMs, `telemetry: broker ${this.cfg.url}: ${what}`);
      await acked(session.publish(this.topics.state, this.deviceState('online'), { qos: 1, retain: true }), 'publishing online');
      for (const [topic, message] of this.retained) await acked(session.publish(topic, message, { qos: 1, retain: true }), `publishing ${topic}`);
      if (this.opts.subscriptions && this.opts.subscriptions.length > 0) await acked(session.subscribe(this.opts.subscriptions), 'subscribing');
    } catch (e) {
      this.lastError = errorMessage(e);
      if (this.session === session) { this.dropSession(); await session.end(true); this.scheduleReconnect(); }
      return;
    }
    this.emit('connected');
    this.pump();
  }

  private scheduleReconnect(): void {
    if (!this.running || this.retryTimer) return;
    // Exponential backoff with jitter, so a fleet does not reconnect in lockstep after a broker restart.
    const base = Math.min(this.backoff.maxMs, this.backoff.initialMs * 2 ** Math.min(this.failures, 16));
    this.failures++;
    const delay = Math.round(base * (0.5 + Math.random() * 0.5));
    this.retryTimer = setTimeout(() => { this.retryTimer = null; void this.connect(); }, delay);
  }

  private dropSession(): void {
    this.session = null;
    this.awaitingSinceMs = null;
    this.flushAcks();
    // Whatever was in flight without a PUBACK is still in the outbox: resend from the oldest.
    this.inFlight = 0;
    this.lastSent = 0;
  }

  private pump(): void {
    const s = this.session;
    if (!s || this.pumping) return;
    this.pumping = true;
    try {
      while (this.session === s && this.inFlight < this.window) {
        const rows = this.store.outboxAfter(this.lastSent, this.window - this.inFlight);
        if (rows.length === 0) break;
        for (const row of rows) {
          this.lastSent = row.seq;
          const { topic, retain } = this.route(row.message);
          if (this.inFlight === 0) this.awaitingSinceMs = Date.now();
          this.inFlight++;
          s.publish(topic, row.message, { qos: 1, retain }).then(
            () => {
              if (this.session !== s) return; // a stale session's late ack: the row is resent anyway
              this.inFlight--;
              this.publishedTotal++;
              this.lastAckAtMs = Date.now();
              // Progress: the deadline runs from the last acknowledgement.
              this.awaitingSinceMs = this.inFlight > 0 ? this.lastAckAtMs : null;
              this.acked.push(row.seq);
              this.scheduleAckFlush();
              this.pump();
            },
            // A dropped session's publishes fail as it ends; the reason it was dropped stays the error.
            (e: unknown) => { if (this.session === s) this.lastError = errorMessage(e); },
          );
        }
      }
    } finally {
      this.pumping = false;
    }
  }

  private route(message: string): { topic: string; retain: boolean } {
    // The outbox holds messages the store built and validated; only kind and guest are needed here.
    const head = JSON.parse(message) as { kind: EventKind; guest: string | null };
    return this.topics.forEvent(head.kind, head.guest);
  }

  private scheduleAckFlush(): void {
    if (this.acked.length >= 500) { this.flushAcks(); return; }
    if (this.ackTimer) return;
    this.ackTimer = setTimeout(() => { this.ackTimer = null; this.flushAcks(); }, 20);
  }

  private flushAcks(): void {
    if (this.ackTimer) { clearTimeout(this.ackTimer); this.ackTimer = null; }
    if (this.acked.length === 0) return;
    const batch = this.acked;
    this.acked = [];
    try {
      this.store.markDelivered(batch);
    } catch (e) {
      // Not fatal: the rows stay and are re-sent; consumers drop the duplicates by id.
      this.lastError = `marking ${batch.length} events delivered: ${errorMessage(e)}`;
    }
    if (this.inFlight === 0 && this.store.outboxStats().pending === 0) this.emit('drained');
  }
}
