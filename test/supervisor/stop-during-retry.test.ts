// SIGTERM while a guest cannot start: the supervisor retries the start with a
// growing pause, and a stop must end that loop at once, not after the pause
// (before, the loop ignored the stop and `introvisor run` never exited).
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Supervisor } from '../../src/supervisor/supervisor.js';
import { parseSupervisorConfig } from '../../src/supervisor/config.js';

const dir = mkdtempSync(join(tmpdir(), 'iv-stopretry-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

t.test('stop() during the start retries ends the loop at once', async (t) => {
  // QEMU refuses this CPU model at once, so every start attempt fails.
  const config = parseSupervisorConfig({
    version: 1, database: 'introvisor.db', runDir: 'run', onExit: 'stop-guests',
    guests: [{ name: 'nostart', image: { lab: true }, cpuModel: 'no-such-cpu', memoryMiB: 128 }],
  }, 'c.json', dir);
  const lines: string[] = [];
  const sup = new Supervisor(config, { log: (l) => lines.push(l) });
  await sup.start();
  const until = Date.now() + 60_000;
  while (!lines.some((l) => /cannot start the guest \(attempt 2\)/.test(l)) && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
  t.ok(lines.some((l) => /cannot start the guest \(attempt 2\).*no-such-cpu/.test(l)), 'the start is retried, with QEMU\'s reason');
  const t0 = Date.now();
  await sup.stop();
  const ms = Date.now() - t0;
  t.ok(ms < 3_000, `stopped ${ms} ms after stop() (the next retry was ${4_000} ms away)`);
  const attempts = lines.filter((l) => /cannot start the guest/.test(l)).length;
  await new Promise((r) => setTimeout(r, 5_000));
  t.equal(lines.filter((l) => /cannot start the guest/.test(l)).length, attempts, 'no attempt after the stop');
});
