// The watchdog's way into the event store when the store may fail (a full disk,
// a read-only filesystem, a locked file). record() never throws: events the
// store refuses wait in a bounded memory queue, in order, and go in at the next
// record() or flush() once the store takes writes again. While it refuses, the
// recorder says so once to its listeners (the supervisor raises the
// store-unavailable alert on the channels that still work) and again when it is back.
import type { EventSink } from '../events/sink.js';
import type { EventInput } from '../events/types.js';
import { payloadProblem } from '../events/schemas.js';
import { errorMessage } from '../util/errors.js';

/** Events kept in memory while the store refuses writes; beyond it the oldest are dropped and counted. */
export const DEFAULT_PENDING_LIMIT = 10_000;

export interface StoreHealth {
  readonly ok: boolean;
  /** The store's last error while it refuses writes. */
  readonly error: string | null;
  readonly sinceMs: number | null;
  /** Events waiting in memory for the store. */
  readonly pending: number;
  /** Events dropped from the memory queue (oldest first) since the store failed. */
  readonly dropped: number;
}

export type StoreHealthListener = (health: StoreHealth) => void;

export class EventRecorder {
  private readonly pending: EventInput[] = [];
  private error: string | null = null;
  private sinceMs: number | null = null;
  private dropped = 0;
  private readonly listeners = new Set<StoreHealthListener>();

  constructor(
    private readonly sink: EventSink,
    private readonly opts: { readonly limit?: number; readonly now?: () => number; readonly onInvalid?: (problem: string) => void } = {},
  ) {}

  private get limit(): number { return this.opts.limit ?? DEFAULT_PENDING_LIMIT; }

  get health(): StoreHealth {
    return { ok: this.error === null, error: this.error, sinceMs: this.sinceMs, pending: this.pending.length, dropped: this.dropped };
  }

  onHealthChange(listener: StoreHealthListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Records the events durably when the store takes them (after any that wait); otherwise queues them. */
  record(events: readonly EventInput[]): void {
    if (events.length === 0 && this.pending.length === 0) return;
    for (const e of events) {
      // An event that breaks its schema is a bug here, not a store failure: it must not block the queue.
      const problem = payloadProblem(e.kind, e.payload);
      if (problem) this.opts.onInvalid?.(problem);
      else this.pending.push(e);
    }
    if (this.pending.length > this.limit) {
      const over = this.pending.length - this.limit;
      this.pending.splice(0, over);
      this.dropped += over;
    }
    this.flush();
  }

  /** Tries to write what waits; true when nothing waits any more. */
  flush(): boolean {
    if (this.pending.length === 0) return true;
    try {
      this.sink.recordMany(this.pending);
      this.pending.length = 0;
      if (this.error !== null) {
        this.error = null;
        this.sinceMs = null;
        this.dropped = 0;
        this.tell();
      }
      return true;
    } catch (e) {
      const first = this.error === null;
      this.error = errorMessage(e);
      if (first) {
        this.sinceMs = (this.opts.now ?? Date.now)();
        this.tell();
      }
      return false;
    }
  }

  private tell(): void {
    const h = this.health;
    for (const l of this.listeners) l(h);
  }
}
