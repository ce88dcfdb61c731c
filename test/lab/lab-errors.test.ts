// Bad input to the lab gives a clear error that says what and where.
import t from 'tap';
import { createServer } from 'node:net';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { labGuestVm } from '../../lab/lab-guest.js';
import { loadLabImages } from '../../lab/lab-images.js';
import { VmBusyError } from '../../src/vm/qemu-vm.js';
import { packageRoot } from '../../src/native/binding.js';

const tmp = mkdtempSync(join(tmpdir(), 'iv-laberr-'));
t.teardown(() => rmSync(tmp, { recursive: true, force: true }));

t.test('a kernel package that is not in the archive', async (t) => {
  const r = spawnSync('bash', [join(packageRoot(), 'lab/build-images.sh')], {
    env: { ...process.env, INTROVISOR_KERNEL_ABI: '6.1.0-999-amd64', INTROVISOR_CACHE: join(tmp, 'cache') },
    encoding: 'utf8',
  });
  t.equal(r.status, 1);
  t.match(r.stderr, /kernel package linux-image-6\.1\.0-999-amd64 is not in the apt archive/);
});

t.test('a kernel ABI that is not Debian 12 6.1', async (t) => {
  const r = spawnSync('bash', [join(packageRoot(), 'lab/build-images.sh')], {
    env: { ...process.env, INTROVISOR_KERNEL_ABI: '5.10.0-9-amd64', INTROVISOR_CACHE: join(tmp, 'cache') },
    encoding: 'utf8',
  });
  t.equal(r.status, 1);
  t.match(r.stderr, /kernel ABI '5\.10\.0-9-amd64' is not of the form 6\.1\.0-N-amd64/);
});

t.test('lab images not built', async (t) => {
  t.throws(() => loadLabImages(join(tmp, 'nowhere', 'manifest.json')), /nowhere\/manifest\.json: not built yet \(run scripts\/setup\.sh/);
});

t.test('no QEMU on the machine', async (t) => {
  const vm = labGuestVm('noqemu', { runRoot: tmp, qemuBinary: 'qemu-system-nowhere' });
  await t.rejects(vm.start(), /QEMU not found: "qemu-system-nowhere" is not on PATH/);
});

t.test('a socket path another process is listening on', async (t) => {
  const runRoot = join(tmp, 'busy');
  mkdirSync(join(runRoot, 'guests', 'busy'), { recursive: true });
  const server = createServer();
  await new Promise<void>((r) => server.listen(join(runRoot, 'guests', 'busy', 'qmp.sock'), r));
  t.teardown(() => server.close());
  const vm = labGuestVm('busy', { runRoot });
  await t.rejects(vm.start(), VmBusyError);
  await t.rejects(vm.start(), /socket path busy: .*busy\/qmp\.sock already has a listener/);
  t.notOk(vm.running, 'no QEMU was started');
});

t.test('QEMU refusing its arguments: its own message is in the error', async (t) => {
  const vm = labGuestVm('badcpu', { runRoot: tmp, cpuModel: 'no-such-cpu' });
  await t.rejects(vm.start(), /QEMU exited at start: .*no-such-cpu/s);
  t.notOk(vm.running);
});

t.test('a guest name that cannot be a file name', async (t) => {
  t.throws(() => labGuestVm('../etc', { runRoot: tmp }), /guest name "\.\.\/etc" must match/);
});

t.test('a disk overlay on a golden image that is gone (a newer lab build superseded it) is recreated, and says so; a good one is kept', async (t) => {
  const runRoot = join(tmp, 'stale');
  mkdirSync(join(runRoot, 'guests', 'stale'), { recursive: true });
  const overlay = join(runRoot, 'guests', 'stale', 'disk.qcow2');
  const r = spawnSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-u', '-b', join(tmp, 'gone', 'base.qcow2'), '-F', 'qcow2', overlay, '64M'], { encoding: 'utf8' });
  t.equal(r.status, 0, r.stderr);
  const vm = labGuestVm('stale', { runRoot });
  t.teardown(() => vm.stop());
  const note = await vm.start();
  t.match(note, /disk overlay .*stale\/disk\.qcow2 was on .*gone\/base\.qcow2 \(gone\), not .*base\.qcow2: recreated from the golden image/);
  const info = JSON.parse(spawnSync('qemu-img', ['info', '--output=json', '-U', overlay], { encoding: 'utf8' }).stdout) as { 'backing-filename'?: string };
  t.equal(info['backing-filename'], loadLabImages().baseImage, 'the overlay is on the current golden image');
  await (await vm.agent()).shell('echo kept > /data/marker && sync');
  await vm.stop();
  t.equal(await vm.start(), null, 'a start on a good overlay has nothing to say');
  t.equal((await (await vm.agent()).shell('cat /data/marker')).trim(), 'kept', 'and keeps the guest\'s disk');
});
