// What the detectors take in (a kernel snapshot and the guest's own report)
// and give out (observations, confirmed over scans into findings).
import type { FaultKind } from '../policy/types.js';

export type JsonValue = string | number | boolean | null | readonly JsonValue[] | { readonly [k: string]: JsonValue };

/** One process as the guest itself reports it (its /proc, read through the guest agent). */
export interface GuestProcess {
  readonly pid: number;
  readonly ppid: number;
  readonly comm: string;
  /** Single-letter state from /proc/PID/stat (R, S, D, Z, ...). */
  readonly state: string;
}

/** What the guest says about itself, through qemu-guest-agent. */
export type GuestReport =
  | {
    readonly takenAtMs: number;
    readonly agent: 'ok';
    readonly processes: readonly GuestProcess[];
    /** Set when the report was over a bound and was cut (see boundGuestReport). */
    readonly malformed?: GuestReportProblems;
  }
  | { readonly takenAtMs: number; readonly agent: 'down'; readonly error: string };

/** Why a guest report was cut; complete is false when processes were dropped (then it is no view to cross-check). */
export interface GuestReportProblems {
  readonly reasons: readonly string[];
  readonly complete: boolean;
}

/** One discrepancy a detector saw in one scan; not yet a finding (see FindingTracker). */
export interface Observation {
  readonly kind: FaultKind;
  /** Identity across scans: the same discrepancy in consecutive scans has the same key. */
  readonly key: string;
  readonly summary: string;
  /** What a recovery action aims at (process name, pid); null for whole-guest faults. */
  readonly target: string | null;
  readonly evidence: { readonly [k: string]: JsonValue };
}

/** A detector's answer for one scan. */
export interface DetectorResult {
  readonly observations: readonly Observation[];
  /** Fault kinds this scan could not judge (a view failed, the agent did not answer). */
  readonly undetermined: readonly FaultKind[];
}

/** A confirmed fault: observations of one kind, each seen in enough consecutive scans. */
export interface Finding {
  readonly kind: FaultKind;
  /** Stable while the same set of discrepancies persists. */
  readonly id: string;
  readonly severity: 'warning' | 'critical';
  readonly summary: string;
  readonly target: string | null;
  readonly evidence: { readonly [k: string]: JsonValue };
  readonly firstSeenMs: number;
}

export const hex = (v: bigint): string => `0x${v.toString(16)}`;
