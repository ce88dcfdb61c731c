// `introvisor progress --work NAME -- COMMAND...`: runs a long command (an image build) and shows
// how far it is: a bar on a terminal, timestamped lines otherwise. The command names its phases on
// the file descriptor INTROVISOR_PROGRESS_FD (lines "phase NAME", optionally "phases N" first);
// the estimate is against the last successful run's phases, kept in the cache folder.
import { spawn } from 'node:child_process';
import { constants } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import { cacheDir } from '../../util/paths.js';
import { clockOf, loadTimings, PhaseClock, ProgressPrinter, saveTimings, timingsPath, type ProgressOut } from '../../util/progress.js';
import { errorMessage } from '../../util/errors.js';
import { parseArgs, UsageError } from '../args.js';

export const usage = 'progress --work NAME [--timings DIR] -- COMMAND [ARG...]   run a long command, showing its phases (a bar on a terminal)';

/** The child's descriptor for phase lines (its stdio index). */
export const PROGRESS_FD = 3;
const MAX_REPORT_LINE = 200;
const TICK_MS = 1_000;

/** One line the work sent on its progress descriptor; null: not a report (said, then ignored). */
export function parseReport(line: string): { phase: string } | { phases: number } | null {
  if (line.length > MAX_REPORT_LINE) return null;
  const m = /^phase ([\x20-\x7e]{1,64})$/.exec(line);
  if (m) return { phase: (m[1] as string).trim() || '?' };
  const n = /^phases ([1-9][0-9]{0,2})$/.exec(line);
  if (n) return { phases: Number(n[1]) };
  return null;
}

export async function run(argv: string[]): Promise<number> {
  const dd = argv.indexOf('--');
  if (dd < 0 || dd === argv.length - 1) throw new UsageError(`usage: introvisor ${usage}`);
  const args = parseArgs(argv.slice(0, dd), { boolean: [], valued: ['work', 'timings'] });
  if (args.positional.length > 0) throw new UsageError(`unexpected "${args.positional[0]}" before "--" (usage: introvisor ${usage})`);
  const work = args.flags.get('work');
  if (typeof work !== 'string') throw new UsageError('--work NAME is required (it names the last run\'s timings)');
  const dir = typeof args.flags.get('timings') === 'string' ? args.flags.get('timings') as string : join(cacheDir(), 'progress');
  try { timingsPath(dir, work); } catch (e) { throw new UsageError(errorMessage(e)); }
  const [cmd, ...cmdArgs] = argv.slice(dd + 1) as [string, ...string[]];
  return runWithProgress({ work, dir, cmd, args: cmdArgs, out: process.stderr, stdout: process.stdout });
}

export interface RunWithProgress {
  readonly work: string;
  readonly dir: string;
  readonly cmd: string;
  readonly args: readonly string[];
  /** Where the bar or the progress lines go (a terminal draws the bar). */
  readonly out: ProgressOut;
  /** Where the command's own stdout goes (its stderr goes to `out`). */
  readonly stdout: { write(s: string): unknown };
  readonly now?: () => number;
}

/** Runs the command to its end; its exit code (128 + signal number when a signal ended it). */
export async function runWithProgress(o: RunWithProgress): Promise<number> {
  const now = o.now ?? Date.now;
  const printer = new ProgressPrinter(o.out, now);
  const { timings, error } = loadTimings(o.dir, o.work);
  if (error) printer.line(`${o.work}: no estimate: ${error}`);
  const clock = new PhaseClock(o.work, timings, now);
  let phases = 0;
  const child = spawn(o.cmd, [...o.args], {
    stdio: ['inherit', 'pipe', 'pipe', 'pipe'],
    env: { ...process.env, INTROVISOR_PROGRESS_FD: String(PROGRESS_FD) },
  });
  const lines = (s: Readable | null, each: (l: string) => void): void => { if (s) createInterface({ input: s, crlfDelay: Infinity }).on('line', each); };
  lines(child.stdout, (l) => printer.line(l, o.stdout));
  lines(child.stderr, (l) => printer.line(l));
  lines(child.stdio[PROGRESS_FD] as Readable | null, (l) => {
    const r = parseReport(l);
    if (r === null) { printer.line(`${o.work}: not a progress report, ignored: ${JSON.stringify(l.slice(0, 80))}`); return; }
    if ('phases' in r) clock.expectPhases(r.phases);
    else { clock.phase(r.phase); phases++; printer.update(clock.progress()); }
  });
  const tick = setInterval(() => { if (phases > 0) printer.update(clock.progress()); }, TICK_MS);
  // Ctrl-C reaches the command too (one process group); a TERM to this process is handed on.
  const onInt = (): void => undefined;
  const onTerm = (): void => { child.kill('SIGTERM'); };
  process.on('SIGINT', onInt);
  process.on('SIGTERM', onTerm);
  const code = await new Promise<number>((resolve) => {
    child.once('error', (e) => { printer.line(`${o.work}: cannot run ${o.cmd}: ${e.message}`); resolve(127); });
    child.once('close', (c, sig) => resolve(c ?? 128 + (sig ? signalNumber(sig) : 0)));
  });
  clearInterval(tick);
  process.off('SIGINT', onInt);
  process.off('SIGTERM', onTerm);
  const at = clock.progress();
  const lastPhase = clock.phaseName;
  printer.done();
  const stamp = o.out.isTTY ? '' : `${clockOf(now())} `;
  if (code === 0 && phases > 0) {
    const t = clock.finish();
    const was = timings ? ` (last time ${Math.round(timings.totalMs / 1000)} s)` : '';
    o.out.write(`${stamp}${o.work}: done in ${Math.round(t.totalMs / 1000)} s${was}\n`);
    try { saveTimings(o.dir, o.work, t); } catch (e) { o.out.write(`${o.work}: timings not kept for the next estimate: ${errorMessage(e)}\n`); }
  } else if (code !== 0) {
    o.out.write(`${stamp}${o.work}: FAILED (exit ${code})${lastPhase ? ` in phase "${lastPhase}"` : ''} after ${Math.round(at.elapsedMs / 1000)} s\n`);
  }
  // No phase reported and success: nothing was to be done (up to date); the last timings stay.
  return code;
}

const signalNumber = (sig: NodeJS.Signals): number => constants.signals[sig] ?? 0;
