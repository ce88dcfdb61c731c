// The two interfaces the watchdog programs against: where it records what it
// learns (EventSink) and where it reads its policy from (PolicySource).
import type { EventInput, RecordedEvent } from './types.js';

/**
 * Where the supervisor records events. record() is durable on return: the
 * event is committed (fsynced) to the store and queued for telemetry, so a
 * crash right after cannot lose it. It throws (naming the field) when the
 * payload does not match its kind's schema.
 */
export interface EventSink {
  record(event: EventInput): RecordedEvent;
  /** Several events in one transaction (one fsync); durable on return, in order. */
  recordMany(events: readonly EventInput[]): RecordedEvent[];
}

/** A policy that is running: its document and where it came from. */
export interface ActivePolicy<P> {
  readonly version: number;
  readonly policy: P;
  readonly appliedAtMs: number;
  /** "file", "ota:<topic>", ... */
  readonly source: string;
}

export type PolicyListener<P> = (next: ActivePolicy<P>) => void | Promise<void>;

/**
 * Where the watchdog reads its policy. current() is the running policy
 * (null before one was installed). A listener is called with each new policy
 * before it counts as applied; if any listener throws or rejects, the update
 * is rolled back (listeners are then called again with the previous policy).
 */
export interface PolicySource<P> {
  current(): ActivePolicy<P> | null;
  subscribe(listener: PolicyListener<P>): () => void;
}

/**
 * Checks a policy document. The schema of the document belongs to the watchdog
 * (src/policy/schema.ts: validatePolicy fits this type); the OTA path is
 * handed this function so it never applies a document the watchdog would not load.
 */
export type PolicyValidator<P> = (doc: unknown) => { ok: true; policy: P } | { ok: false; errors: readonly string[] };
