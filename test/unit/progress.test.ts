// Progress of long work: a bar with an estimated percentage on a terminal, throttled timestamped
// lines otherwise; the estimate never claims 100 % before the work is done, nor any without a last
// run or a phase count; phased work is estimated against the last run's phases, kept in a folder;
// `introvisor progress` runs a real script that reports its phases.
import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { clockOf, lastLineNote, loadTimings, PhaseClock, percentOf, ProgressPrinter, progressLine, saveTimings, timedProgress, type RunTimings } from '../../src/util/progress.js';
import { parseReport, runWithProgress } from '../../src/cli/commands/progress.js';

const dir = mkdtempSync(join(tmpdir(), 'iv-progress-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

const p = (elapsedMs: number, expectedMs: number | null, note: string | null = null) => timedProgress('restore-image', elapsedMs, expectedMs, note);

t.test('lines', async (t) => {
  t.equal(progressLine(p(15_500, 31_000), true), 'restore-image: 50% [##########..........] 16 s of ~31 s');
  t.equal(progressLine(p(15_500, 31_000, 'Run /init as init process'), false), 'restore-image: 50% 16 s of ~31 s | Run /init as init process');
  t.equal(progressLine(p(40_000, 31_000), true), 'restore-image: 99% [####################] 40 s of ~31 s (longer than last time)', 'capped below 100 %');
  t.equal(progressLine(p(4_000, null), true), 'restore-image: 4 s', 'no last run: no percentage');
  t.equal(progressLine({ action: 'build-images-6.1', phase: 'initramfs pack', elapsedMs: 30_000, expectedMs: null, percent: 40, note: null }, false),
    'build-images-6.1 (initramfs pack): 40% 30 s', 'the phase after the work; a percentage from a phase count without a duration');
  t.equal(percentOf(5, 0), null, 'a last run of 0 ms estimates nothing');
  t.equal(percentOf(-5, 100), 0);
  t.equal(lastLineNote('Booting\n\x1b[32mRun /init\x1b[0m as init\r\n\n  \n'), 'Run /init as init', 'the last line with text, control bytes dropped');
  t.equal(lastLineNote('x'.repeat(500))?.length, 200, 'cut');
  t.equal(lastLineNote('\n\n'), null);
  t.equal(clockOf(Date.UTC(2026, 0, 2, 3, 4, 5)), '03:04:05');
});

t.test('terminal: one line rewritten in place, output lines above it, cleared at the end', async (t) => {
  const out: string[] = [];
  const bar = new ProgressPrinter({ isTTY: true, columns: 30, write: (s) => out.push(s) });
  bar.update(p(1_000, 10_000));
  bar.update(p(2_000, 10_000));
  bar.line('make: building');
  const other: string[] = [];
  bar.line('to stdout', { write: (s) => other.push(s) });
  bar.done();
  t.equal(out.length, 6);
  t.ok(out.slice(0, 2).every((s) => s.startsWith('\r\x1b[K') && !s.includes('\n')), 'carriage return, no newline');
  t.ok(out.slice(0, 2).every((s) => s.length - 4 <= 29), 'cut to the terminal width');
  t.match(out[1], /20%/);
  t.equal(out[2], `\r\x1b[Kmake: building\n${out[1]?.slice(4)}`, 'the line above, the bar drawn again');
  t.same([out[3], other[0], out[4]], ['\r\x1b[K', 'to stdout\n', out[1]?.slice(4)], 'a line to another stream: the bar cleared first, drawn after');
  t.equal(out[5], '\r\x1b[K');
});

t.test('not a terminal: timestamped plain lines, one per 10 s and one per phase', async (t) => {
  const out: string[] = [];
  let now = Date.UTC(2026, 0, 1, 12, 0, 0);
  const t0 = now;
  const plain = new ProgressPrinter({ isTTY: false, write: (s) => out.push(s) }, () => now);
  for (let s = 1; s <= 25; s++) { now = t0 + s * 1000; plain.update(p(s * 1000, 31_000)); }
  plain.update({ ...p(25_000, 31_000), phase: 'verify' });
  plain.line('a line of the work');
  plain.done();
  t.same(out, ['12:00:01 restore-image: 3% 1 s of ~31 s\n', '12:00:11 restore-image: 35% 11 s of ~31 s\n', '12:00:21 restore-image: 67% 21 s of ~31 s\n',
    '12:00:25 restore-image (verify): 80% 25 s of ~31 s\n', 'a line of the work\n']);
  t.notOk(out.join('').includes('\r'), 'no control characters');
});

t.test('phases against the last run', async (t) => {
  let now = 0;
  const last: RunTimings = { totalMs: 100_000, phases: [{ name: 'fetch', ms: 20_000 }, { name: 'compile', ms: 60_000 }, { name: 'pack', ms: 20_000 }] };
  const c = new PhaseClock('build', last, () => now);
  t.same(c.progress(), { action: 'build', phase: null, elapsedMs: 0, expectedMs: 100_000, percent: 0, note: null }, 'before the first phase');
  c.phase('fetch');
  now = 10_000;
  t.match(c.progress(), { phase: 'fetch', expectedMs: 100_000, percent: 10 });
  now = 40_000; // fetch took twice as long as last time
  t.match(c.progress(), { expectedMs: 120_000, percent: 33 }, 'the current phase over its last duration stretches the estimate');
  c.phase('compile');
  now = 70_000;
  t.match(c.progress(), { phase: 'compile', expectedMs: 120_000, percent: 58 });
  now = 200_000;
  t.match(c.progress(), { expectedMs: 220_000, percent: 90 }, 'a long phase: never past 99 %');
  c.phase('pack');
  now = 230_000;
  t.equal(c.progress().percent, 99, 'the last phase over time: 99 %, not 100');
  t.equal(c.phaseIndex, 3);
  t.equal(c.phaseCount, 3);
  now = 240_000;
  t.same(c.finish(), { totalMs: 240_000, phases: [{ name: 'fetch', ms: 40_000 }, { name: 'compile', ms: 160_000 }, { name: 'pack', ms: 40_000 }] });

  // A run that skips a phase the last run had (fetch cached): estimated with it until the end.
  now = 0;
  const skip = new PhaseClock('build', last, () => now);
  skip.phase('compile');
  now = 30_000;
  t.match(skip.progress(), { expectedMs: 100_000, percent: 30 });
  // A phase the last run did not have: what it takes so far counts as done work.
  skip.phase('strip');
  now = 40_000;
  t.match(skip.progress(), { phase: 'strip', expectedMs: 80_000, percent: 50 });

  // No last run: a phase count, else nothing.
  now = 0;
  const counted = new PhaseClock('build', null, () => now);
  counted.expectPhases(4);
  counted.phase('a'); counted.phase('b'); counted.phase('c');
  t.match(counted.progress(), { percent: 50, expectedMs: null });
  counted.expectPhases(0);
  t.equal(counted.phaseCount, 4, 'a count that is not one is ignored');
  const blind = new PhaseClock('build', null, () => now);
  blind.phase('a');
  t.equal(blind.progress().percent, null);
  t.equal(blind.phaseCount, null);
  // A last run without phases (a boot): against its total.
  now = 0;
  const boot = new PhaseClock('boot', { totalMs: 8_000, phases: [] }, () => now);
  now = 2_000;
  t.match(boot.progress('Run /init'), { percent: 25, expectedMs: 8_000, note: 'Run /init' });
});

t.test('timings kept in a folder; a bad file is an error saying where, never a crash', async (t) => {
  const d = join(dir, 'timings');
  t.same(loadTimings(d, 'build-images-6.1'), { timings: null, error: null }, 'none yet');
  saveTimings(d, 'build-images-6.1', { totalMs: 1234.6, phases: [{ name: 'fetch', ms: 10.2 }] });
  t.same(loadTimings(d, 'build-images-6.1'), { timings: { totalMs: 1235, phases: [{ name: 'fetch', ms: 10 }] }, error: null });
  writeFileSync(join(d, 'bad.json'), '{"totalMs": "soon", "phases": []}');
  t.match(loadTimings(d, 'bad'), { timings: null, error: /bad\.json: not timings \(\/totalMs must be number/ });
  writeFileSync(join(d, 'notjson.json'), '{');
  t.match(loadTimings(d, 'notjson'), { timings: null, error: /notjson\.json: not JSON/ });
  writeFileSync(join(d, 'huge.json'), ' '.repeat(70_000));
  t.match(loadTimings(d, 'huge'), { timings: null, error: /over 65536 bytes/ });
  t.throws(() => loadTimings(d, '../etc/passwd'), /work name "\.\.\/etc\/passwd" is not a name/, 'a work name is not a path');
});

t.test('progress reports from the work', async (t) => {
  t.same(parseReport('phase kernel package'), { phase: 'kernel package' });
  t.same(parseReport('phases 6'), { phases: 6 });
  t.equal(parseReport('phases 0'), null);
  t.equal(parseReport('phase '), null);
  t.equal(parseReport(`phase ${'x'.repeat(65)}`), null, 'a phase name over 64 characters');
  t.equal(parseReport('phase \x1b[2J'), null, 'control characters');
  t.equal(parseReport('hello'), null);
});

t.test('introvisor progress runs a real script: phases, output passed through, timings for the next run', async (t) => {
  const d = join(dir, 'run');
  const script = join(dir, 'work.sh');
  writeFileSync(script, [
    'echo "phases 2" >&"$INTROVISOR_PROGRESS_FD"',
    'echo "phase one" >&"$INTROVISOR_PROGRESS_FD"',
    'echo out-line; echo err-line >&2; sleep 0.3',
    'echo "phase two" >&"$INTROVISOR_PROGRESS_FD"',
    'echo "nonsense" >&"$INTROVISOR_PROGRESS_FD"',
    'sleep 0.2; exit "${1:-0}"',
  ].join('\n'));
  const run = async (code: number, tty: boolean): Promise<{ rc: number; out: string; stdout: string }> => {
    let out = '';
    let stdout = '';
    const rc = await runWithProgress({ work: 'test-work', dir: d, cmd: 'bash', args: [script, String(code)], out: { isTTY: tty, columns: 100, write: (s) => { out += s; } }, stdout: { write: (s) => { stdout += s; } } });
    return { rc, out, stdout };
  };
  const first = await run(0, false);
  t.equal(first.rc, 0);
  t.equal(first.stdout, 'out-line\n', 'the work\'s stdout to stdout');
  t.match(first.out, /^\d\d:\d\d:\d\d test-work \(one\): 0% 0 s\n/m, 'a timestamped line at the first phase (from the phase count)');
  t.match(first.out, /^\d\d:\d\d:\d\d test-work \(two\): 50% 0 s\n/m, 'and at the second');
  t.match(first.out, /^err-line$/m, 'the work\'s stderr with the progress');
  t.match(first.out, /not a progress report, ignored: "nonsense"/);
  t.match(first.out, /^\d\d:\d\d:\d\d test-work: done in \d+ s\n/m);
  t.notOk(first.out.includes('\r'), 'no carriage returns in a log');
  const kept = loadTimings(d, 'test-work').timings;
  t.same(kept?.phases.map((x) => x.name), ['one', 'two'], 'the run\'s phases kept');
  t.ok((kept?.phases[0]?.ms ?? 0) >= 250, `phase one took ${kept?.phases[0]?.ms} ms`);

  const second = await run(0, true);
  t.match(second.out, /\r\x1b\[Ktest-work \(one\): +\d+% \[[#.]{20}\] 0 s of ~\d+ s/, 'on a terminal: a bar, estimated against the first run');
  t.match(second.out, /done in \d+ s \(last time \d+ s\)\n$/);

  const before = readFileSync(join(d, 'test-work.json'), 'utf8');
  const failed = await run(3, false);
  t.equal(failed.rc, 3, 'the work\'s exit code');
  t.match(failed.out, /test-work: FAILED \(exit 3\) in phase "two" after \d+ s/);
  t.equal(readFileSync(join(d, 'test-work.json'), 'utf8'), before, 'a failed run leaves the last timings');

  writeFileSync(join(dir, 'nothing.sh'), 'echo up to date');
  let out = '';
  const rc = await runWithProgress({ work: 'test-work', dir: d, cmd: 'bash', args: [join(dir, 'nothing.sh')], out: { isTTY: false, write: (s) => { out += s; } }, stdout: { write: () => undefined } });
  t.equal(rc, 0);
  t.equal(out, '', 'nothing to do (no phase): no progress, and the last timings stay');
  t.equal(readFileSync(join(d, 'test-work.json'), 'utf8'), before);
});
