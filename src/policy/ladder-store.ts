// Where the ladder engine's state is kept: written on every transition (before an
// action is carried out), with a journal of actions (started / finished), so a
// restarted supervisor picks up where the last one stopped. The SQLite
// implementation is src/store/ladder-state-store.ts.
import type { GuestLadderState } from './ladder.js';

export interface ActionJournalRow {
  readonly actionId: string;
  readonly guest: string;
  readonly fault: string;
  readonly action: string;
  readonly rung: number;
  readonly attempt: number;
  readonly startedAtMs: number;
  readonly finishedAtMs: number | null;
  /** null while running or when the supervisor died during it. */
  readonly outcome: 'ok' | 'failed' | 'interrupted' | null;
  readonly error: string | null;
}

export interface LadderStateStore {
  load(guest: string): GuestLadderState | null;
  /** Saves the state; when it carries a new pending action, journals its start in the same transaction. */
  save(state: GuestLadderState): void;
  /** Records how an action ended (and the state after it) in one transaction. */
  finishAction(state: GuestLadderState, actionId: string, outcome: 'ok' | 'failed' | 'interrupted', error: string | null, atMs: number): void;
  actions(guest: string): ActionJournalRow[];
}
