// The store on a real filesystem that fails under it: a tiny tmpfs filled up
// and freed, and an ext4 image whose database files are made immutable
// mid-run. The watch (real GuestWatch, EventStore, ladder and baseline tables;
// a fake guest and scanner) keeps guarding through both, raises the
// store-unavailable alert once, and catches up, in order, when writes work again.
// Needs root (mount, chattr), as the suite runs.
import t, { type Test } from 'tap';
import { spawnSync } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GuestWatch } from '../../src/supervisor/guest-watch.js';
import { EventRecorder, type StoreHealth } from '../../src/supervisor/recorder.js';
import { EventStore } from '../../src/store/event-store.js';
import { SqliteLadderStateStore } from '../../src/store/ladder-state-store.js';
import { SqliteBaselineStore } from '../../src/store/baseline-store.js';
import { fixedPolicySource } from '../../src/policy/fixed-source.js';
import { DEFAULT_POLICY } from '../../src/policy/defaults.js';
import { report, snapshot, task } from '../detectors/synthetic.js';
import { FakeGuest, FakeScanner } from './fakes.js';

const root = mkdtempSync(join(tmpdir(), 'iv-outage-'));
const mounts: string[] = [];
t.teardown(() => {
  for (const m of mounts.reverse()) spawnSync('umount', ['-l', m]);
  rmSync(root, { recursive: true, force: true });
});

const sh = (cmd: string, args: string[]): void => {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr || r.error?.message}`);
};

function watchOn(dbPath: string) {
  const store = new EventStore({ path: dbPath, deviceId: 'outage' });
  const recorder = new EventRecorder(store);
  const health: StoreHealth[] = [];
  recorder.onHealthChange((h) => health.push(h));
  const guest = new FakeGuest();
  const scanner = new FakeScanner();
  const watch = new GuestWatch({
    controller: guest, scanner, critical: [{ name: 'csdtest', start: { path: '/data/bin/csdtest', args: ['-d'] } }],
    scanIntervalMs: 1000, policy: fixedPolicySource(DEFAULT_POLICY, 0, 'defaults'),
    ladders: new SqliteLadderStateStore(store.db), baselines: new SqliteBaselineStore(store.db), recorder, log: () => undefined,
  });
  const killCritical = (): void => {
    const gone = snapshot({ tasks: [task(1, 'init'), task(120, 'qemu-ga')] });
    scanner.snap = gone;
    guest.guestReport = report(gone);
  };
  const heal = (): void => { scanner.snap = snapshot(); guest.guestReport = report(snapshot()); };
  return { store, recorder, health, guest, watch, killCritical, heal };
}

/** Writes filler until the filesystem is full. */
function fill(path: string): void {
  const fd = openSync(path, 'w');
  const chunk = Buffer.alloc(64 * 1024, 1);
  try {
    for (;;) writeSync(fd, chunk);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOSPC') throw e;
  } finally {
    closeSync(fd);
  }
}

async function throughOutage(t: Test, w: ReturnType<typeof watchOn>, fail: () => void, recover: () => void, why: RegExp): Promise<void> {
  await w.watch.cycle();
  const before = w.store.events({ limit: 10_000 }).length;
  fail();
  w.killCritical();
  for (let i = 0; i < 3; i++) await w.watch.cycle();
  t.same(w.guest.calls, ['start /data/bin/csdtest'], 'the critical process was restarted while the store refused writes');
  t.match(w.health, [{ ok: false, error: why }], 'store-unavailable raised once, with the store\'s error');
  t.ok(w.recorder.health.pending > 0, `${w.recorder.health.pending} events wait in memory`);
  w.heal();
  await w.watch.cycle();
  recover();
  await w.watch.cycle();
  t.equal(w.recorder.health.pending, 0, 'caught up');
  t.match(w.health, [{ ok: false }, { ok: true }], 'and the alert cleared');
  const events = w.store.events({ limit: 10_000, newestFirst: false });
  const late = events.slice(before).map((e) => e.kind);
  t.ok(late.includes('finding') && late.includes('action'), 'the finding and the action were recorded, late');
  t.equal(w.watch.ladderState.pending, null, 'the ladder is not wedged');
  t.equal(w.store.db.pragma('integrity_check', { simple: true }), 'ok');
}

t.test('a tiny tmpfs filled up and freed', async (t) => {
  const mnt = join(root, 'tmpfs');
  mkdirSync(mnt);
  sh('mount', ['-t', 'tmpfs', '-o', 'size=3m', 'tmpfs', mnt]);
  mounts.push(mnt);
  const w = watchOn(join(mnt, 'introvisor.db'));
  t.teardown(() => w.store.close());
  const filler = join(mnt, 'filler');
  await throughOutage(t, w, () => fill(filler), () => rmSync(filler), /full/i);
});

t.test('an ext4 image whose database is made immutable mid-run', async (t) => {
  const img = join(root, 'ext4.img');
  const mnt = join(root, 'ext4');
  mkdirSync(mnt);
  sh('truncate', ['-s', '16M', img]);
  sh('mkfs.ext4', ['-q', img]);
  sh('mount', ['-o', 'loop', img, mnt]);
  mounts.push(mnt);
  const db = join(mnt, 'introvisor.db');
  const w = watchOn(db);
  t.teardown(() => { spawnSync('chattr', ['-i', db, `${db}-wal`, `${db}-shm`]); w.store.close(); });
  await throughOutage(t, w, () => sh('chattr', ['+i', db, `${db}-wal`, `${db}-shm`]), () => sh('chattr', ['-i', db, `${db}-wal`, `${db}-shm`]), /./);
});
