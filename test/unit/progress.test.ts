// The CLI's progress output: a bar with an estimated percentage on a terminal, throttled plain
// lines otherwise; the estimate never claims 100 % before the work is done, nor any without a last run.
import t from 'tap';
import { ProgressPrinter, progressLine } from '../../src/cli/progress.js';

const p = (elapsedMs: number, expectedMs: number | null, note: string | null = null) => ({ action: 'restore-image', elapsedMs, expectedMs, note });

t.test('lines', async (t) => {
  t.equal(progressLine(p(15_500, 31_000), true), 'restore-image: 50% [##########..........] 16 s of ~31 s');
  t.equal(progressLine(p(15_500, 31_000, 'Run /init as init process'), false), 'restore-image: 50% 16 s of ~31 s | Run /init as init process');
  t.equal(progressLine(p(40_000, 31_000), true), 'restore-image: 99% [####################] 40 s of ~31 s (longer than last time)', 'capped below 100 %');
  t.equal(progressLine(p(4_000, null), true), 'restore-image: 4 s', 'no last run: no percentage');
});

t.test('terminal: one line rewritten in place, cleared at the end', async (t) => {
  const out: string[] = [];
  const bar = new ProgressPrinter({ isTTY: true, columns: 30, write: (s) => out.push(s) });
  bar.update(p(1_000, 10_000));
  bar.update(p(2_000, 10_000));
  bar.done();
  t.equal(out.length, 3);
  t.ok(out.slice(0, 2).every((s) => s.startsWith('\r\x1b[K') && !s.includes('\n')), 'carriage return, no newline');
  t.ok(out.slice(0, 2).every((s) => s.length - 4 <= 29), 'cut to the terminal width');
  t.match(out[1], /20%/);
  t.equal(out[2], '\r\x1b[K');
});

t.test('not a terminal: plain lines, one per 10 s', async (t) => {
  const out: string[] = [];
  let now = 0;
  const plain = new ProgressPrinter({ isTTY: false, write: (s) => out.push(s) }, () => now);
  for (let s = 1; s <= 25; s++) { now = s * 1000; plain.update(p(now, 31_000)); }
  plain.done();
  t.same(out, ['restore-image: 3% 1 s of ~31 s\n', 'restore-image: 35% 11 s of ~31 s\n', 'restore-image: 67% 21 s of ~31 s\n']);
  t.notOk(out.join('').includes('\r'), 'no control characters');
});
