// Progress of long work (guest actions and boots, image builds): what is known of it (Progress),
// the estimate against the last run of the same work (PhaseClock, RunTimings kept in a folder),
// and its rendering: a bar with a percentage, rewritten in place, when the stream is a terminal;
// otherwise plain timestamped lines, at most one every 10 s (and one per phase), for logs and pipes.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Ajv } from 'ajv';
import { compiledOnUse } from './lazy-validator.js';
import { makeDirs, writeFileDurably } from './fs.js';
import { errorMessage } from './errors.js';

/** How far a long piece of work is. */
export interface Progress {
  /** The work: an action kind, "boot", a build's name. */
  readonly action: string;
  /** The step under way, for work that reports its steps (null: none named). */
  readonly phase: string | null;
  readonly elapsedMs: number;
  /** How long the whole work is expected to take, from the last run (null: never ran). */
  readonly expectedMs: number | null;
  /** An estimate, 0..99 (100 only once the work says it is done); null: nothing to estimate from. */
  readonly percent: number | null;
  /** What the work shows now (a guest's last console line, printable ASCII, cut), or null. */
  readonly note: string | null;
}

/** The last non-empty line of a text (a guest's console), printable ASCII only and cut to 200: a note shown, never parsed. */
export function lastLineNote(text: string): string | null {
  // Terminal colour and cursor sequences (CSI) go whole; other control bytes become spaces.
  const lines = text.split('\n').map((l) => l.replace(/\x1b\[[0-9;?]*[ -/]*[@-~]/g, '').replace(/[^\x20-\x7e]+/g, ' ').trim()).filter((l) => l !== '');
  const last = lines[lines.length - 1];
  return last === undefined ? null : last.slice(0, 200);
}

/** The percentage of `elapsedMs` against the last run's duration, below 100 until the work is done. */
export function percentOf(elapsedMs: number, expectedMs: number | null): number | null {
  if (expectedMs === null || expectedMs <= 0) return null;
  return Math.max(0, Math.min(99, Math.floor((100 * elapsedMs) / expectedMs)));
}

/** Progress of work without steps, measured against its last duration. */
export function timedProgress(action: string, elapsedMs: number, expectedMs: number | null, note: string | null = null): Progress {
  return { action, phase: null, elapsedMs, expectedMs, percent: percentOf(elapsedMs, expectedMs), note };
}

/** How long one run of a piece of work took, in all and per phase (in the order they ran). */
export interface RunTimings {
  readonly totalMs: number;
  readonly phases: readonly { readonly name: string; readonly ms: number }[];
}

/**
 * The clock of one run of phased work. The estimate takes the last run's phases: what this run
 * has done (as it took) plus what the last run still had to do (its phases this run has not
 * begun, and the rest of the current one). A phase that ran last time and is skipped this time
 * counts until the work ends, so the estimate errs low, never past 99 %. Without a last run, a
 * phase count the work announced gives (phases done) / (count).
 */
export class PhaseClock {
  private readonly startMs: number;
  private readonly done: { name: string; ms: number }[] = [];
  private current: { name: string; startMs: number } | null = null;
  private count: number | null = null;

  constructor(readonly work: string, private readonly last: RunTimings | null, private readonly now: () => number = Date.now) {
    this.startMs = now();
  }

  /** The work says how many phases it has (when it knows). */
  expectPhases(n: number): void {
    if (Number.isInteger(n) && n > 0) this.count = n;
  }

  /** Ends the current phase and begins `name`. */
  phase(name: string): void {
    const t = this.now();
    if (this.current) this.done.push({ name: this.current.name, ms: t - this.current.startMs });
    this.current = { name, startMs: t };
  }

  get phaseName(): string | null { return this.current?.name ?? null; }
  /** 1-based number of the current phase (0 before the first). */
  get phaseIndex(): number { return this.done.length + (this.current ? 1 : 0); }
  get phaseCount(): number | null { return this.count ?? (this.last ? Math.max(this.last.phases.length, this.phaseIndex) : null); }

  progress(note: string | null = null): Progress {
    const t = this.now();
    const elapsedMs = t - this.startMs;
    const phase = this.current?.name ?? null;
    let expectedMs: number | null = null;
    let percent: number | null = null;
    if (this.last && this.last.totalMs > 0) {
      const seen = new Set(this.done.map((d) => d.name));
      if (phase !== null) seen.add(phase);
      const inCurrent = this.current ? t - this.current.startMs : 0;
      const lastCurrent = phase === null ? undefined : this.last.phases.find((p) => p.name === phase)?.ms;
      // Time not inside any phase (set-up before the first) counts as done work.
      let remaining = lastCurrent === undefined ? 0 : Math.max(0, lastCurrent - inCurrent);
      for (const p of this.last.phases) if (!seen.has(p.name)) remaining += p.ms;
      if (this.last.phases.length === 0) remaining = Math.max(0, this.last.totalMs - elapsedMs);
      expectedMs = elapsedMs + remaining;
      percent = percentOf(elapsedMs, expectedMs);
    } else if (this.count !== null) {
      percent = Math.min(99, Math.floor((100 * this.done.length) / this.count));
    }
    return { action: this.work, phase, elapsedMs, expectedMs, percent, note };
  }

  /** The run's timings, for the next run's estimate. */
  finish(): RunTimings {
    const t = this.now();
    const phases = [...this.done, ...(this.current ? [{ name: this.current.name, ms: t - this.current.startMs }] : [])];
    this.done.length = 0;
    this.done.push(...phases);
    this.current = null;
    return { totalMs: t - this.startMs, phases };
  }
}

// --- the last runs' timings, one JSON file per piece of work in a folder -------------------------

const WORK_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/;
const MAX_TIMINGS_BYTES = 64 * 1024;
const validateTimings = compiledOnUse(() => new Ajv({ strict: true }).compile({
  type: 'object', additionalProperties: false, required: ['totalMs', 'phases'],
  properties: {
    totalMs: { type: 'number', minimum: 0, maximum: 7 * 24 * 3600_000 },
    phases: {
      type: 'array', maxItems: 200,
      items: { type: 'object', additionalProperties: false, required: ['name', 'ms'], properties: { name: { type: 'string', minLength: 1, maxLength: 64 }, ms: { type: 'number', minimum: 0, maximum: 7 * 24 * 3600_000 } } },
    },
  },
}));

export const timingsPath = (dir: string, work: string): string => {
  if (!WORK_NAME.test(work)) throw new Error(`work name "${work.slice(0, 120)}" is not a name (letters, digits, . _ -; up to 100)`);
  return join(dir, `${work}.json`);
};

/**
 * The last run's timings of `work` kept in `dir`: null when there is none; a file that is not
 * timings gives an error saying where and why (the work then runs without an estimate).
 */
export function loadTimings(dir: string, work: string): { timings: RunTimings | null; error: string | null } {
  const path = timingsPath(dir, work);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { timings: null, error: null };
    return { timings: null, error: `${path}: ${errorMessage(e)}` };
  }
  if (text.length > MAX_TIMINGS_BYTES) return { timings: null, error: `${path}: over ${MAX_TIMINGS_BYTES} bytes, not timings` };
  let data: unknown;
  try { data = JSON.parse(text); } catch (e) { return { timings: null, error: `${path}: not JSON (${errorMessage(e)})` }; }
  if (!validateTimings(data)) return { timings: null, error: `${path}: not timings (${validateTimings.errors?.map((x) => `${x.instancePath || '/'} ${x.message ?? ''}`).join('; ')})` };
  return { timings: data as unknown as RunTimings, error: null };
}

export function saveTimings(dir: string, work: string, t: RunTimings): void {
  const path = timingsPath(dir, work);
  makeDirs(dir);
  writeFileDurably(path, `${JSON.stringify({ totalMs: Math.round(t.totalMs), phases: t.phases.map((p) => ({ name: p.name.slice(0, 64), ms: Math.round(p.ms) })) })}\n`);
}

// --- rendering ----------------------------------------------------------------------------------

export interface ProgressOut {
  readonly isTTY?: boolean;
  readonly columns?: number;
  write(s: string): unknown;
}

const BAR = 20;
const PLAIN_EVERY_MS = 10_000;
const secs = (ms: number): string => `${Math.round(ms / 1000)} s`;
/** Plain lines' time stamp: UTC time of day (a log's own date is on its first line or its name). */
export const clockOf = (ms: number): string => new Date(ms).toISOString().slice(11, 19);

/**
 * One line for a progress report. The percentage first: a narrow terminal cuts the line's end, not
 * the number. The phase, when named, follows the work's name.
 */
export function progressLine(p: Progress, bar: boolean): string {
  const pct = p.percent;
  const over = p.expectedMs !== null && p.elapsedMs > p.expectedMs;
  const head = pct === null ? '' : bar ? `${String(pct).padStart(2)}% [${'#'.repeat(Math.round((pct * BAR) / 100)).padEnd(BAR, '.')}] ` : `${pct}% `;
  const time = p.expectedMs !== null ? `${secs(p.elapsedMs)} of ~${secs(p.expectedMs)}${over ? ' (longer than last time)' : ''}` : `${secs(p.elapsedMs)}`;
  return `${p.action}${p.phase ? ` (${p.phase})` : ''}: ${head}${time}${p.note ? ` | ${p.note}` : ''}`;
}

export class ProgressPrinter {
  private lastPlainMs = -Infinity;
  private lastPhase: string | null = null;
  /** The bar as last drawn (redrawn under a passed-through line). */
  private drawn: string | null = null;
  constructor(private readonly out: ProgressOut, private readonly now: () => number = Date.now) {}

  update(p: Progress): void {
    if (this.out.isTTY) {
      const width = Math.max(20, (this.out.columns || 80) - 1); // 0: a terminal that does not say
      this.drawn = progressLine(p, true).slice(0, width);
      this.out.write(`\r\x1b[K${this.drawn}`);
    } else if (p.phase !== this.lastPhase || this.now() - this.lastPlainMs >= PLAIN_EVERY_MS) {
      this.lastPlainMs = this.now();
      this.lastPhase = p.phase;
      this.out.write(`${clockOf(this.now())} ${progressLine(p, false)}\n`);
    }
  }

  /** A line of the work's own output (to `to`, default this printer's stream): above the bar on a terminal, as it is otherwise. */
  line(text: string, to: { write(s: string): unknown } = this.out): void {
    if (this.drawn === null) { to.write(`${text}\n`); return; }
    if (to === this.out) { this.out.write(`\r\x1b[K${text}\n${this.drawn}`); return; }
    this.out.write('\r\x1b[K');
    to.write(`${text}\n`);
    this.out.write(this.drawn);
  }

  /** Clears the bar (the result is printed on a clean line). */
  done(): void {
    if (this.drawn !== null) this.out.write('\r\x1b[K');
    this.drawn = null;
  }
}
