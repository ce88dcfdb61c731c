// An in-process supervisor for benchmarks, started from a config file written into a
// fresh folder, with its log lines captured for waitLine.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Supervisor } from '../src/supervisor/supervisor.js';
import { loadSupervisorConfig } from '../src/supervisor/config.js';
import { sleep } from '../src/util/deadline.js';

export interface Run { sup: Supervisor; lines: { atMs: number; line: string }[]; dir: string }

/** Writes `config` as dir/c.json and starts a supervisor on it (`beforeStart`: e.g. launch its guests for it to adopt). */
export async function startBenchSupervisor(dir: string, config: unknown, beforeStart?: (sup: Supervisor) => Promise<void>): Promise<Run> {
  writeFileSync(join(dir, 'c.json'), JSON.stringify(config));
  const lines: Run['lines'] = [];
  const sup = new Supervisor(loadSupervisorConfig(join(dir, 'c.json')), { log: (line) => lines.push({ atMs: Date.now(), line }) });
  if (beforeStart) {
    try {
      await beforeStart(sup);
    } catch (e) {
      await sup.stop();
      throw e;
    }
  }
  await sup.start();
  return { sup, lines, dir };
}

/** The first log line from `from` on matching re; polled every pollMs (a latency bench wants it small). */
export async function waitLine(r: Run, re: RegExp, from: number, timeoutMs: number, what: string, pollMs = 20): Promise<{ atMs: number; index: number }> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    for (let i = from; i < r.lines.length; i++) if (re.test((r.lines[i] as { line: string }).line)) return { atMs: (r.lines[i] as { atMs: number }).atMs, index: i };
    if (Date.now() > until) throw new Error(`${what}: waited ${timeoutMs} ms for ${re}`);
    await sleep(pollMs);
  }
}
