// How `introvisor run` ends, on a real lab guest (onExit: stop-guests): nothing may be left running.
// One SIGINT stops it cleanly after the cycles in progress; a second one (Ctrl-C again, while a boot
// takes its time) stops it at once and kills the guest's QEMU; a supervisor killed with SIGKILL leaves
// its guest running by design, and scripts/stop-left-guests.mjs (the demo's last step) stops that.
import t from 'tap';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { makeHarness } from './harness.js';
import { packageRoot } from '../../src/native/binding.js';
import { guestLayout } from '../../src/vm/guest-layout.js';
import { settlesWithin, sleep } from '../../src/util/deadline.js';

class Run {
  readonly lines: string[] = [];
  readonly proc: ChildProcess;
  readonly exited: Promise<number | null>;
  constructor(config: string) {
    // Its own process group, as a terminal's foreground job: a signal to the group is Ctrl-C.
    this.proc = spawn(process.execPath, [join(packageRoot(), 'dist/src/cli/main.js'), 'run', '--config', config],
      { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let buf = '';
    const take = (d: Buffer): void => {
      buf += d.toString();
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) { this.lines.push(buf.slice(0, nl)); buf = buf.slice(nl + 1); }
    };
    this.proc.stdout?.on('data', take);
    this.proc.stderr?.on('data', take);
    this.exited = new Promise((r) => this.proc.once('exit', (code) => r(code)));
  }
  signal(sig: NodeJS.Signals): void { process.kill(-(this.proc.pid ?? 0), sig); }
  async waitFor(re: RegExp, timeoutMs: number): Promise<string> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const l = this.lines.find((x) => re.test(x));
      if (l !== undefined) return l;
      if (this.proc.exitCode !== null) throw new Error(`supervisor exited ${this.proc.exitCode} while waiting for ${re}:\n${this.lines.slice(-10).join('\n')}`);
      if (Date.now() > until) throw new Error(`waited ${timeoutMs} ms for ${re}; last lines:\n${this.lines.slice(-15).join('\n')}`);
      await sleep(50);
    }
  }
}

/** The pids of QEMU processes whose command line names this test's folder (its run dir is in there). */
function qemusOf(dir: string): number[] {
  const pids: number[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    let argv: string[];
    try { argv = readFileSync(`/proc/${e}/cmdline`, 'utf8').split('\0'); } catch { continue; }
    if (/qemu-system/.test(argv.join(' ')) && argv.some((a) => a.includes(dir))) {
      // A zombie is no process left running.
      try { if (/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${e}/stat`, 'utf8'))) continue; } catch { continue; }
      pids.push(Number(e));
    }
  }
  return pids;
}

const h = makeHarness('e2e-stop', { scanIntervalSec: 2 });
const runs: Run[] = [];
const ramFile = guestLayout(join(h.dir, 'run'), h.guest).ramPath;
t.teardown(async () => {
  for (const r of runs) if (r.proc.exitCode === null && r.proc.signalCode === null) { r.proc.kill('SIGKILL'); await settlesWithin(r.exited, 5_000); }
  for (const pid of qemusOf(h.dir)) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
  h.cleanup();
});

t.test('one SIGINT (Ctrl-C) to the running supervisor: a clean stop, its guest stopped', async (t) => {
  const r = new Run(h.configPath); runs.push(r);
  await r.waitFor(/\[e2e-stop\] guest started/, 180_000);
  t.equal(qemusOf(h.dir).length, 1, 'the guest runs');
  r.signal('SIGINT');
  t.equal(await r.exited, 0, 'exit code 0');
  t.ok(r.lines.some((l) => /SIGINT: stopping/.test(l)) && r.lines.some((l) => /introvisor run: stopped/.test(l)), 'said it stopped');
  t.same(qemusOf(h.dir), [], 'no QEMU left');
  t.notOk(existsSync(ramFile), 'no RAM file left');
});

t.test('SIGINT during the boot, then SIGINT again: stops at once, the QEMU being booted killed', async (t) => {
  const r = new Run(h.configPath); runs.push(r);
  const until = Date.now() + 60_000;
  while (qemusOf(h.dir).length === 0 && Date.now() < until) await sleep(100);
  t.equal(qemusOf(h.dir).length, 1, 'QEMU launched');
  r.signal('SIGINT');
  await r.waitFor(/SIGINT: stopping/, 5_000);
  t.equal(r.proc.exitCode, null, 'one SIGINT waits for the boot under way');
  await sleep(1_000);
  const t0 = Date.now();
  r.signal('SIGINT');
  t.equal(await r.exited, 130, 'exit code 130 (SIGINT)');
  const ms = Date.now() - t0;
  t.ok(ms < 5_000, `exited ${ms} ms after the second SIGINT`);
  t.ok(r.lines.some((l) => /SIGINT again: stopping now \(guests killed\)/.test(l)), 'said so');
  t.notOk(r.lines.some((l) => /guest started/.test(l)), 'the guest never came up');
  await sleep(3_000);
  t.same(qemusOf(h.dir), [], 'no QEMU left, none launched after');
  t.notOk(existsSync(ramFile), 'no RAM file left');
});

t.test('SIGKILL: the guest outlives the supervisor by design; stop-left-guests stops it', async (t) => {
  const r = new Run(h.configPath); runs.push(r);
  await r.waitFor(/\[e2e-stop\] guest started/, 180_000);
  r.proc.kill('SIGKILL');
  await r.exited;
  t.equal(qemusOf(h.dir).length, 1, 'the guest still runs');
  const s = spawnSync(process.execPath, [join(packageRoot(), 'scripts/stop-left-guests.mjs'), h.configPath], { encoding: 'utf8', timeout: 60_000 });
  t.equal(s.status, 0, `stop-left-guests exits 0 (${s.stderr.trim()})`);
  t.match(s.stdout, /stopped guest e2e-stop: its QEMU \(pid \d+\) outlived the supervisor/);
  t.same(qemusOf(h.dir), [], 'no QEMU left');
  t.notOk(existsSync(ramFile), 'no RAM file left');
  const again = spawnSync(process.execPath, [join(packageRoot(), 'scripts/stop-left-guests.mjs'), h.configPath], { encoding: 'utf8', timeout: 60_000 });
  t.equal(again.status, 0, 'nothing to stop: exit 0');
  t.equal(again.stdout, '', 'and says nothing');
});
