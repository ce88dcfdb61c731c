// The operations of the control socket (and the page's API), over the
// supervised guests. Every operator action is recorded as an operator-action
// event (who, what, when, outcome), whatever its outcome.
import { operatorActionEvent } from '../events/builders.js';
import type { EventInput, OperatorPeer } from '../events/types.js';
import { errorMessage } from '../util/errors.js';
import { MAX_EXEC_OUTPUT_BYTES, type ActionProgress, type ControlRequest } from './protocol.js';
import { attackCommand } from './demo.js';
import type { ConsoleGuest } from './types.js';
import { findingView, moduleView, processView, syscallView } from './views.js';

export interface OperationsOptions {
  readonly guests: readonly ConsoleGuest[];
  readonly record: (events: EventInput[]) => void;
  readonly log?: (line: string) => void;
  /** Guests on the lab's images, where the demo's attacks may be played. */
  readonly demoGuests?: readonly string[];
}

const cutText = (b: Buffer): { text: string; truncated: boolean } =>
  b.length <= MAX_EXEC_OUTPUT_BYTES ? { text: b.toString('utf8'), truncated: false } : { text: b.subarray(0, MAX_EXEC_OUTPUT_BYTES).toString('utf8'), truncated: true };

export class ControlOperations {
  constructor(private readonly o: OperationsOptions) {}

  private guest(name: string): ConsoleGuest {
    const g = this.o.guests.find((x) => x.name === name);
    if (!g) throw new Error(`no supervised guest "${name}" (guests: ${this.o.guests.map((x) => x.name).join(', ') || 'none'})`);
    return g;
  }

  /** A guest's state at a glance. */
  summary(g: ConsoleGuest): Record<string, unknown> {
    const obs = g.latestObservation();
    const st = g.ladderState;
    return {
      name: g.name,
      watching: g.watching,
      scans: g.scans,
      lastScanAtMs: obs?.startedAtMs ?? null,
      lastScanMs: obs?.durationMs ?? null,
      agent: obs ? obs.report.agent : null,
      kernel: obs?.snapshot ? obs.snapshot.kernel.release : null,
      snapshotError: obs?.snapshotError ?? null,
      openFindings: obs?.findings.length ?? 0,
      held: st.held,
      pending: st.pending ? { action: st.pending.action, fault: st.pending.fault, startedAtMs: st.pending.startedAtMs } : null,
      progress: g.progress(),
      ladders: st.ladders.map((l) => ({ fault: l.kind, phase: l.phase, rung: l.rung, attempt: l.attemptsOnRung, totalActions: l.totalActions })),
      trap: g.trapState(),
      critical: g.criticalNames,
      demo: (this.o.demoGuests ?? []).includes(g.name),
    };
  }

  /**
   * Runs one request for `who` (in words), whose `peer` the kernel verified (the control socket;
   * null on the page); throws with what went wrong (the server turns that into an error reply).
   */
  async handle(req: ControlRequest, who: string, peer: OperatorPeer | null = null, onProgress?: (p: ActionProgress) => void): Promise<unknown> {
    const op = { who, peer };
    switch (req.op) {
      case 'guests': return this.o.guests.map((g) => this.summary(g));
      case 'view': {
        const g = this.guest(req.guest);
        const obs = g.latestObservation();
        switch (req.view) {
          case 'summary': return this.summary(g);
          case 'ps': return processView(obs);
          case 'modules': return moduleView(obs);
          case 'syscalls': return syscallView(obs);
          case 'findings': return findingView(obs);
          case 'trap': return { ...g.trapState(), ladders: g.ladderState.ladders, held: g.ladderState.held };
        }
        break;
      }
      case 'action': return this.operator(req.guest, op, 'action', `${req.action}${req.target ? ` ${req.target}` : ''}`, async (g) => {
        const r = await g.runAction(req.action, req.target ?? null, req.progress ? onProgress : undefined);
        if (!r.ok) throw new Error(r.error ?? `${req.action} failed`);
        return { action: req.action, detail: r.detail, durationMs: r.durationMs };
      });
      case 'release': return this.operator(req.guest, op, 'release', null, async (g) => ({ detail: await g.releaseHold() }));
      case 'baseline-accept': return this.operator(req.guest, op, 'baseline-accept', null, async (g) => ({ detail: await g.acceptBaseline() }));
      case 'pause': return this.operator(req.guest, op, 'pause', null, async (g) => { g.pauseWatching(); return { watching: false }; });
      case 'resume': return this.operator(req.guest, op, 'resume', null, async (g) => { g.resumeWatching(); return { watching: true }; });
      case 'exec': return this.operator(req.guest, op, 'exec', req.argv.join(' '), async (g) => {
        const r = await g.exec(req.argv, (req.timeoutSec ?? 30) * 1000);
        const out = cutText(r.stdout);
        const err = cutText(r.stderr);
        return { exitCode: r.exitCode, signal: r.signal, stdout: out.text, stderr: err.text, truncated: r.truncated || out.truncated || err.truncated };
      });
      case 'demo-attack': return this.operator(req.guest, op, 'demo-attack', req.attack, async (g) => {
        if (!(this.o.demoGuests ?? []).includes(g.name)) throw new Error(`guest ${g.name} does not run the lab's images: no demo attacks there`);
        const line = attackCommand(req.attack, g.criticalNames);
        const r = await g.exec(['/bin/sh', '-c', line], 30_000);
        if (r.exitCode !== 0) throw new Error(`"${line}" exited ${String(r.exitCode ?? `by signal ${String(r.signal)}`)}: ${cutText(r.stderr).text.trim().slice(0, 500)}`);
        return { attack: req.attack, detail: `played: ${line}` };
      });
    }
    throw new Error('unknown operation');
  }

  /** Runs an operator action and records what came of it. */
  private async operator<T>(guestName: string, { who, peer }: { who: string; peer: OperatorPeer | null }, operation: string, detail: string | null, fn: (g: ConsoleGuest) => Promise<T>): Promise<T> {
    const startedAtMs = Date.now();
    const g = this.o.guests.find((x) => x.name === guestName);
    const done = (outcome: 'ok' | 'failed' | 'refused', error: string | null): void => {
      this.o.log?.(`operator ${who}: ${operation}${detail ? ` ${detail}` : ''} on ${guestName}: ${outcome}${error ? ` (${error})` : ''}`);
      this.o.record([operatorActionEvent({ guest: g ? g.name : null, who, peer, operation, detail, outcome, error, startedAtMs, durationMs: Date.now() - startedAtMs })]);
    };
    if (!g) {
      const e = `no supervised guest "${guestName}"`;
      done('refused', e);
      throw new Error(e);
    }
    try {
      const r = await fn(g);
      done('ok', null);
      return r;
    } catch (e) {
      done('failed', errorMessage(e));
      throw e;
    }
  }
}
