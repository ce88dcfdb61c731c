// The supervisor config: schema errors name the field; relative paths resolve against the file.
import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadSupervisorConfig, parseSupervisorConfig } from '../../src/supervisor/config.js';

const dir = mkdtempSync(join(tmpdir(), 'iv-cfg-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

t.test('the shipped example loads, with paths resolved', async (t) => {
  const c = loadSupervisorConfig(new URL('../../../examples/supervisor.json', import.meta.url).pathname);
  t.match(c.policy, /\/examples\/policy\.json$/);
  t.equal(c.guests[0]?.name, 'demo');
  t.same(c.guests[0]?.critical?.[0]?.start, ['/data/bin/csdtest', '-d']);
});

t.test('errors name each field', async (t) => {
  let msg = '';
  try { parseSupervisorConfig({ version: 1, database: 'x.db', guests: [{ name: 'Bad Name', image: {}, cpus: 0, extra: 1 }] }, 'c.json'); } catch (e) { msg = (e as Error).message; }
  t.match(msg, /^config c\.json: /);
  t.match(msg, /\/guests\/0\/name must match pattern/);
  t.match(msg, /\/guests\/0\/cpus must be >= 1/);
  t.match(msg, /\/guests\/0\/extra is not a known field/);
  t.throws(() => parseSupervisorConfig({ version: 1, database: 'x.db', guests: [{ name: 'a', image: {} }, { name: 'a', image: { lab: true } }] }, 'c.json'),
    /\/guests\/0\/image needs exactly one of "lab": true, kernel \+ initrd \+ baseImage, or "disk" \(found none\); \/guests\/1\/name "a" is used by another guest/);
  t.throws(() => parseSupervisorConfig({ version: 1, database: 'x.db', guests: [{ name: 'a', image: { lab: true }, critical: [{ name: 'averyveryverylongname', start: ['rel/path'] }] }] }, 'c.json'),
    /\/guests\/0\/critical\/0\/comm is required .*; \/guests\/0\/critical\/0\/start\/0 must be an absolute path/);
  t.throws(() => parseSupervisorConfig({ version: 1, guests: [] }, 'c.json'), /\/database is required; \/guests must NOT have fewer than 1 items/);
});

t.test('a file that is not JSON names the file', async (t) => {
  const p = join(dir, 'broken.json');
  writeFileSync(p, '{');
  t.throws(() => loadSupervisorConfig(p), new RegExp(`config ${p}: `));
});
