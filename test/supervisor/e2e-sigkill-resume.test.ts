// E2E: the supervisor (a real `introvisor run` process) is killed with SIGKILL
// in the middle of a ladder and started again: it adopts the running guest,
// resumes at the same rung and does no action twice. The fault: a critical
// process whose binary does not exist, so nothing but the policy's ladder runs.
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { makeHarness } from './harness.js';
import { SqliteLadderStateStore } from '../../src/store/ladder-state-store.js';
import { EventStore } from '../../src/store/event-store.js';
import { packageRoot } from '../../src/native/binding.js';
import { settlesWithin, sleep } from '../../src/util/deadline.js';

class Child {
  readonly lines: string[] = [];
  readonly proc: ChildProcess;
  readonly exited: Promise<void>;
  constructor(config: string) {
    this.proc = spawn(process.execPath, [join(packageRoot(), 'dist/src/cli/main.js'), 'run', '--config', config], { stdio: ['ignore', 'pipe', 'pipe'] });
    let buf = '';
    const take = (d: Buffer): void => {
      buf += d.toString();
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        this.lines.push(line);
        if (process.env.IV_E2E_VERBOSE) console.error(`# ${((Date.now() % 1e6) / 1000).toFixed(1)} [pid ${this.proc.pid}] ${line}`);
      }
    };
    this.proc.stdout?.on('data', take);
    this.proc.stderr?.on('data', take);
    this.exited = new Promise((r) => this.proc.once('exit', () => r()));
  }
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

t.test('SIGKILL during reboot-os attempt 2 of 3: restarted supervisor adopts the guest, counts it done, climbs on without repeating (bound 8 min)', async (t) => {
  const h = makeHarness('e2e-kill9', { critical: [{ name: 'nosuchd', start: ['/data/bin/nosuchd'] }] });
  const qemuPidFile = join(h.dir, 'run', 'guests', h.guest, 'qemu.pid');
  let second: Child | undefined;
  t.teardown(async () => {
    if (second && second.proc.exitCode === null) {
      second.proc.kill('SIGTERM');
      await settlesWithin(second.exited, 30_000);
    }
    // Whatever happens above, no QEMU of this test survives it.
    try { process.kill(Number(readFileSync(qemuPidFile, 'utf8').trim()), 'SIGKILL'); } catch { /* gone */ }
    h.cleanup();
  });

  const first = new Child(h.configPath);
  await first.waitFor(/guest started/, 120_000);
  await first.waitFor(/action reboot-os \(attempt 2\/3\)/, 180_000);
  await sleep(1500); // the reboot is under way
  first.proc.kill('SIGKILL');
  await first.exited;
  const qemuPid = Number(readFileSync(qemuPidFile, 'utf8').trim());
  t.doesNotThrow(() => process.kill(qemuPid, 0), 'the guest outlived the supervisor');

  second = new Child(h.configPath);
  await second.waitFor(/guest adopted/, 30_000);
  t.match(await second.waitFor(/counted as done, not repeated/, 30_000), /reboot-os \(attempt 2\) was in progress/);
  await second.waitFor(/ALERT critical-process-missing: ladder exhausted/, 420_000);

  const db = new EventStore({ path: h.dbPath, readOnly: true }).db;
  t.teardown(() => db.close());
  const journal = new SqliteLadderStateStore(db).actions(h.guest);
  // Named with their fault, so an action some other ladder took shows which fault it answered.
  t.same(journal.map((a) => `${a.fault}:${a.action}#${a.attempt}`), [
    'restart-process#1', 'restart-process#2', 'restart-process#3',
    'reboot-os#1', 'reboot-os#2', 'reboot-os#3',
    'restart-vm#1', 'restore-image#1',
  ].map((a) => `critical-process-missing:${a}`), 'each rung with the policy counts, each action once');
  t.equal(journal.find((a) => a.action === 'reboot-os' && a.attempt === 2)?.outcome, 'interrupted');
  t.ok(journal.filter((a) => a.outcome !== 'interrupted').every((a) => a.outcome !== null), 'every other action finished');
  t.same(journal.filter((a) => a.action === 'restart-process').map((a) => a.outcome), ['failed', 'failed', 'failed'],
    'starting a missing binary fails, and says so');
  t.match(journal[0]?.error, /nosuchd/);

  // SIGTERM: the guest is stopped (onExit stop-guests) and the process ends once it says so.
  // Before, a 10 s timer raced against QEMU's exit outlived it, and so did the process.
  const lastQemuPid = Number(readFileSync(qemuPidFile, 'utf8').trim());
  second.proc.kill('SIGTERM');
  await second.waitFor(/introvisor run: stopped/, 60_000);
  t.ok(await settlesWithin(second.exited, 5_000), 'the process exits when it says it stopped, not a grace period later');
  t.equal(second.proc.exitCode, 0);
  t.throws(() => process.kill(lastQemuPid, 0), 'its guest is stopped');
});
