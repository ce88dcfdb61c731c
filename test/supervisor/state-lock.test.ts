// One supervisor per state: a second supervisor on the same database refuses to
// start and names the owner; once the first stops, the state is free again.
// Constructing a Supervisor boots nothing (start() does).
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Supervisor } from '../../src/supervisor/supervisor.js';
import { parseSupervisorConfig } from '../../src/supervisor/config.js';

const dir = mkdtempSync(join(tmpdir(), 'iv-statelock-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

t.test('a second supervisor on one database is refused, naming the owner', async (t) => {
  const config = parseSupervisorConfig({ version: 1, database: 'state/introvisor.db', runDir: 'run', guests: [{ name: 'g1', image: { lab: true } }] }, 'c.json', dir);
  const first = new Supervisor(config, { log: () => undefined });
  t.throws(() => new Supervisor(config, { log: () => undefined }), new RegExp(`supervisor state .*introvisor\\.db.*${process.pid}`));
  await first.stop();
  const again = new Supervisor(config, { log: () => undefined });
  await again.stop();
  t.pass('free again after stop');
});
