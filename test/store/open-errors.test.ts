// A database that cannot be opened says so: the word "database" and its path,
// whatever the cause (a folder that cannot be made, a read-only filesystem).
// The read-only case is a real read-only tmpfs mount (the suite runs as root).
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EventStore } from '../../src/store/event-store.js';

const dir = mkdtempSync(join(tmpdir(), 'iv-store-open-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

t.test('a folder that cannot be made: the error names the database and its path', async (t) => {
  // /proc takes no new folders: mkdir fails with ENOENT, which alone never said "database"
  // (and Node's recursive mkdirSync spins forever on it).
  const path = '/proc/introvisor-no-such/state/introvisor.db';
  t.throws(() => new EventStore({ path, deviceId: 'dev1' }), { message: /^event store: cannot open the database \/proc\/introvisor-no-such\/state\/introvisor\.db: ENOENT/ });
});

t.test('a database folder on a read-only filesystem', async (t) => {
  const mnt = join(dir, 'ro');
  mkdirSync(mnt);
  const m = spawnSync('mount', ['-t', 'tmpfs', '-o', 'ro,size=1m', 'introvisor-test-ro', mnt], { encoding: 'utf8' });
  if (m.status !== 0) {
    t.pass(`skipped: cannot mount a read-only tmpfs here: ${m.stderr.trim()}`);
    return;
  }
  t.teardown(() => { spawnSync('umount', [mnt]); });
  const nested = join(mnt, 'state', 'introvisor.db');
  t.throws(() => new EventStore({ path: nested, deviceId: 'dev1' }), { message: new RegExp(`^event store: cannot open the database ${nested.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: EROFS`) });
  const flat = join(mnt, 'introvisor.db');
  t.throws(() => new EventStore({ path: flat, deviceId: 'dev1' }), { message: new RegExp(`^event store: cannot open the database ${flat.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: `) });
});
