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
  t.match(c.policyFile, /\/examples\/policy\.json$/);
  t.equal(c.guests[0]?.name, 'demo');
  t.same(c.guests[0]?.critical?.[0]?.start, { path: '/data/bin/csdtest', args: ['-d'] });
});

t.test('errors name each field', async (t) => {
  let msg = '';
  try { parseSupervisorConfig({ version: 1, database: 'x.db', guests: [{ name: 'Bad Name', image: {}, cpus: 0, extra: 1 }] }, 'c.json'); } catch (e) { msg = (e as Error).message; }
  t.match(msg, /^config c\.json: /);
  t.match(msg, /\/guests\/0\/name must match pattern/);
  t.match(msg, /\/guests\/0\/cpus must be >= 1/);
  t.match(msg, /\/guests\/0\/extra is not a known field/);
  t.throws(() => parseSupervisorConfig({ version: 1, database: 'x.db', guests: [{ name: 'a', image: {} }, { name: 'a', image: { lab: true } }] }, 'c.json'),
    /\/guests\/0\/image needs exactly one of "lab": true, kernel \+ initrd \+ baseImage, "disk", or "libvirt" \(found none\); \/guests\/1\/name "a" is used by another guest/);
  t.throws(() => parseSupervisorConfig({ version: 1, database: 'x.db', guests: [{ name: 'a', image: { lab: true }, critical: [{ name: 'averyveryverylongname', start: ['rel/path'] }] }] }, 'c.json'),
    /\/guests\/0\/critical\/0\/comm is required .*; \/guests\/0\/critical\/0\/start\/0 must be an absolute path/);
  t.throws(() => parseSupervisorConfig({ version: 1, guests: [] }, 'c.json'), /\/database is required; \/guests must NOT have fewer than 1 items/);
});

t.test('a file that is not JSON names the file', async (t) => {
  const p = join(dir, 'broken.json');
  writeFileSync(p, '{');
  t.throws(() => loadSupervisorConfig(p), new RegExp(`config ${p}: `));
});

t.test('defaults are applied once, when the config is loaded', async (t) => {
  const c = parseSupervisorConfig({
    version: 1, database: 'x.db', scanIntervalSec: 3, writeTrap: 'drop',
    guests: [{ name: 'a', image: { lab: true } }, { name: 'b', image: { lab: true }, scanIntervalSec: 0.5, introspection: false, writeTrap: 'gp' }],
    report: { policyDir: 'p', mqtt: { url: 'mqtt://127.0.0.1:1883' }, ota: { keyringDir: 'k' } },
  }, 'c.json', '/etc/iv');
  t.equal(c.database, '/etc/iv/x.db');
  t.equal(c.deviceId, 'introvisor');
  t.equal(c.onExit, 'stop-guests');
  t.equal(c.policyFile, null);
  t.same(c.guests.map((g) => [g.scanIntervalMs, g.introspection, g.writeTrap]), [[3000, true, 'drop'], [500, false, 'off']], 'no trap without introspection');
  t.same(c.report?.mqtt?.clientId, 'introvisor-introvisor');
  t.equal(c.report?.hostMetricsIntervalMs, 60_000);
  t.equal(c.report?.ota?.maxBundleBytes, 256 * 1024);
  t.equal(c.report?.initialPolicy, null);
});

t.test('guests sharing a disk, or larger than the host, are refused with the field named', async (t) => {
  const host = { memoryMiB: 4096, cpus: 2 };
  t.throws(() => parseSupervisorConfig({ version: 1, database: 'x.db', guests: [
    { name: 'a', image: { lab: true }, overlay: 'disk.qcow2' }, { name: 'b', image: { lab: true }, overlay: './disk.qcow2' },
  ] }, 'c.json', '/srv', host), /\/guests\/1\/overlay \/srv\/disk\.qcow2 is also the overlay of \/guests\/0/);
  t.throws(() => parseSupervisorConfig({ version: 1, database: 'x.db', guests: [{ name: 'a', image: { lab: true }, memoryMiB: 1048576, cpus: 64 }] }, 'c.json', '/srv', host),
    /\/guests\/0\/memoryMiB 1048576 is more than this host has \(4096 MiB\); \/guests\/0\/cpus 64 is more than this host has \(2\)/);
  t.doesNotThrow(() => parseSupervisorConfig({ version: 1, database: 'x.db', guests: [{ name: 'a', image: { lab: true }, memoryMiB: 512, cpus: 2 }] }, 'c.json', '/srv', host));
});
