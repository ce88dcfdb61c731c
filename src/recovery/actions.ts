// Carries out one ladder action on a guest, with a timeout and a clear result.
import type { PendingAction } from '../policy/ladder.js';
import type { ActionKind } from '../policy/types.js';
import { withTimeout } from '../util/deadline.js';
import { errorMessage } from '../util/errors.js';
import type { GuestController, ProcessCommand } from './guest-controller.js';

export interface CriticalProcessConfig {
  readonly name: string;
  readonly comm?: string;
  /** How to start it (the lab: /data/bin/csdtest -d); restart-process fails without it. */
  readonly start?: ProcessCommand;
}

export const DEFAULT_ACTION_TIMEOUT_MS: Readonly<Record<ActionKind, number>> = {
  'restart-process': 30_000,
  'kill-process': 15_000,
  'reboot-os': 180_000,
  'restart-vm': 180_000,
  'restore-image': 240_000,
};

export interface ActionResult {
  readonly ok: boolean;
  readonly detail: string | null;
  readonly error: string | null;
  readonly durationMs: number;
}

export async function executeAction(
  ctl: GuestController,
  action: Pick<PendingAction, 'action' | 'target'>,
  critical: readonly CriticalProcessConfig[],
  timeoutMs: number = DEFAULT_ACTION_TIMEOUT_MS[action.action],
): Promise<ActionResult> {
  const t0 = Date.now();
  const body = async (): Promise<string> => {
    switch (action.action) {
      case 'restart-process': {
        const names = (action.target ?? '').split(',').filter(Boolean);
        if (names.length === 0) throw new Error('restart-process: the finding names no process');
        const done: string[] = [];
        for (const n of names) {
          const spec = critical.find((c) => c.name === n);
          if (!spec?.start) throw new Error(`restart-process: no start command configured for critical process "${n}"`);
          done.push(await ctl.startProcess(spec.start, timeoutMs));
        }
        return done.join('; ');
      }
      case 'kill-process': {
        const pids = (action.target ?? '').split(',').map(Number).filter((p) => Number.isInteger(p) && p > 1);
        if (pids.length === 0) throw new Error(`kill-process: the finding names no pid (target ${JSON.stringify(action.target)})`);
        const done: string[] = [];
        for (const p of pids) done.push(await ctl.killProcess(p, timeoutMs));
        return done.join('; ');
      }
      case 'reboot-os': return ctl.rebootOs(timeoutMs);
      case 'restart-vm': return ctl.restartVm(timeoutMs);
      case 'restore-image': return ctl.restoreImage(timeoutMs);
    }
  };
  try {
    // The outer bound is a little longer than the inner ones, so their more precise errors win.
    const detail = await withTimeout(body(), timeoutMs + 5_000, `guest ${ctl.name}: ${action.action}`);
    return { ok: true, detail, error: null, durationMs: Date.now() - t0 };
  } catch (e) {
    return { ok: false, detail: null, error: errorMessage(e), durationMs: Date.now() - t0 };
  }
}
