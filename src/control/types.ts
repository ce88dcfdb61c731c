// What the control socket needs of one supervised guest. The supervisor's
// GuestWatch provides it; this folder never reaches past it into the watch.
import type { Finding, GuestReport } from '../detectors/types.js';
import type { GuestLadderState } from '../policy/ladder.js';
import type { ActionKind } from '../policy/types.js';
import type { ActionResult } from '../recovery/actions.js';
import type { GuestExecResult } from '../recovery/guest-controller.js';
import type { TrapStatus } from '../trap/syscall-table-trap.js';
import type { KernelSnapshot } from '../views/types.js';
import type { ActionProgress } from './protocol.js';

/** The latest cycle's view of a guest: what it said of itself, what its memory showed, what was judged. */
export interface GuestObservation {
  readonly startedAtMs: number;
  readonly durationMs: number;
  readonly report: GuestReport;
  readonly snapshot: KernelSnapshot | null;
  readonly snapshotError: string | null;
  readonly findings: readonly Finding[];
}

export interface ConsoleGuest {
  readonly name: string;
  readonly scans: number;
  /** false while an operator paused watching. */
  readonly watching: boolean;
  readonly ladderState: GuestLadderState;
  /** Names of the critical processes the guest must run. */
  readonly criticalNames: readonly string[];
  latestObservation(): GuestObservation | null;
  /** The write trap's state, with the reason when it is not armed; status 'off' when it is configured off. */
  trapState(): { readonly status: TrapStatus; readonly detail: string | null };
  /** The boot or recovery action under way (ladder's or operator's), as far as it is; null: none. */
  progress(): ActionProgress | null;
  /** Runs a recovery action now (between watch cycles), recorded like the ladder's; onProgress about once a second while it runs. */
  runAction(kind: ActionKind, target: string | null, onProgress?: (p: ActionProgress) => void): Promise<ActionResult>;
  /** Ends a hold: exhausted ladders start over and a paused or stopped VM runs again. Says what it did. */
  releaseHold(): Promise<string>;
  /** Takes the latest scan's kernel as the known-good baseline. Says what it recorded. */
  acceptBaseline(): Promise<string>;
  pauseWatching(): void;
  resumeWatching(): void;
  exec(argv: readonly string[], timeoutMs: number): Promise<GuestExecResult>;
}
