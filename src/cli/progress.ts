// Progress of long work on the terminal: a bar with a percentage, rewritten in place, when the stream
// is a terminal; otherwise plain lines, at most one every 10 s, for logs and pipes.
import type { ActionProgress } from '../control/protocol.js';

export interface ProgressOut {
  readonly isTTY?: boolean;
  readonly columns?: number;
  write(s: string): unknown;
}

const BAR = 20;
const PLAIN_EVERY_MS = 10_000;
const secs = (ms: number): string => `${Math.round(ms / 1000)} s`;

/**
 * One line for a progress report. The percentage is an estimate against the last run of the same
 * work (expectedMs); it stays below 100 % until the work says it is done, and there is none without
 * a last run.
 */
export function progressLine(p: ActionProgress, bar: boolean): string {
  const pct = p.expectedMs !== null && p.expectedMs > 0 ? Math.min(99, Math.floor((100 * p.elapsedMs) / p.expectedMs)) : null;
  const over = p.expectedMs !== null && p.elapsedMs > p.expectedMs;
  // The percentage first: a narrow terminal cuts the line's end, not the number.
  const head = pct === null ? '' : bar ? `${String(pct).padStart(2)}% [${'#'.repeat(Math.round((pct * BAR) / 100)).padEnd(BAR, '.')}] ` : `${pct}% `;
  const time = p.expectedMs !== null ? `${secs(p.elapsedMs)} of ~${secs(p.expectedMs)}${over ? ' (longer than last time)' : ''}` : `${secs(p.elapsedMs)}`;
  return `${p.action}: ${head}${time}${p.note ? ` | ${p.note}` : ''}`;
}

export class ProgressPrinter {
  private lastPlainMs = -Infinity;
  private drawn = false;
  constructor(private readonly out: ProgressOut, private readonly now: () => number = Date.now) {}

  update(p: ActionProgress): void {
    if (this.out.isTTY) {
      const width = Math.max(20, (this.out.columns || 80) - 1); // 0: a terminal that does not say
      this.out.write(`\r\x1b[K${progressLine(p, true).slice(0, width)}`);
      this.drawn = true;
    } else if (this.now() - this.lastPlainMs >= PLAIN_EVERY_MS) {
      this.lastPlainMs = this.now();
      this.out.write(`${progressLine(p, false)}\n`);
    }
  }

  /** Clears the bar (the result is printed on a clean line). */
  done(): void {
    if (this.drawn) this.out.write('\r\x1b[K');
    this.drawn = false;
  }
}
