// One owner per guest and per supervisor state on a machine: a second owner,
// in this process or another, is refused with the owner's pid and touches
// nothing; a lock left by a dead process is taken over; an adopted QEMU's RAM
// file goes when it is stopped. Real files, real processes, a real unix socket
// for the adopted QEMU's QMP (a scripted peer: no guest boot needed for this).
import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { createServer } from 'node:net';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { acquireLock, acquireStateLock, LockHeldError } from '../../src/util/lock.js';
import { QemuVm, VmBusyError, type VmSpec } from '../../src/vm/qemu-vm.js';
import { guestLayout } from '../../src/vm/guest-layout.js';
import { QemuGuestController } from '../../src/recovery/qemu-controller.js';
import { processAlive } from '../../src/util/pid.js';

const dir = mkdtempSync(join(tmpdir(), 'iv-owner-'));
process.env.INTROVISOR_SHM = join(dir, 'shm');
mkdirSync(process.env.INTROVISOR_SHM);
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

const deadPid = (): number => {
  const r = spawnSync('true');
  if (r.pid === undefined || processAlive(r.pid)) throw new Error('no dead pid to use');
  return r.pid;
};

function spec(runRoot: string, name: string): VmSpec {
  const layout = guestLayout(runRoot, name);
  return {
    name, boot: { kind: 'kernel', kernel: join(dir, 'no-kernel'), initrd: join(dir, 'no-initrd'), kernelArgs: [] }, baseImage: join(dir, 'no-image'), baseFormat: 'qcow2',
    overlay: layout.overlay, disks: [], network: null, consoleLog: layout.consoleLog, extraArgs: [], memoryMiB: 64, cpus: 1, accel: 'tcg', cpuModel: 'max', layout, qemuBinary: 'qemu-system-x86_64', dieWithParent: true,
  };
}

t.test('a lock held by another live process is refused naming its pid; once that process is dead it is taken over', async (t) => {
  const path = join(dir, 'state.db.lock');
  const lockModule = fileURLToPath(new URL('../../src/util/lock.js', import.meta.url));
  const child = spawn(process.execPath, ['--input-type=module', '-e',
    `const { acquireLock } = await import(${JSON.stringify(lockModule)}); acquireLock(${JSON.stringify(path)}, 'supervisor state x'); console.log('held'); setInterval(() => {}, 1000);`],
  { stdio: ['ignore', 'pipe', 'inherit'] });
  t.teardown(() => { try { child.kill('SIGKILL'); } catch { /* gone */ } });
  await new Promise<void>((resolve, reject) => {
    child.stdout.once('data', () => resolve());
    child.once('exit', (c) => reject(new Error(`child exited ${c}`)));
  });
  const err = (() => { try { acquireLock(path, 'supervisor state y'); return null; } catch (e) { return e; } })();
  t.ok(err instanceof LockHeldError);
  t.match((err as Error).message, `supervisor state y: owned by pid ${child.pid} (supervisor state x), which is running`);
  t.equal((err as LockHeldError).ownerPid, child.pid);
  child.kill('SIGKILL');
  await new Promise((r) => child.once('exit', r));
  const mine = acquireLock(path, 'supervisor state y');
  t.pass('taken over from the dead owner');
  mine.release();
  t.notOk(existsSync(path), 'released: the file is gone');
});

t.test('the state lock sits beside the database; a second one in this process is refused too', async (t) => {
  const db = join(dir, 'events.db');
  const a = acquireStateLock(db);
  t.equal(a.path, `${db}.lock`);
  t.throws(() => acquireStateLock(db), { name: 'LockHeldError', message: new RegExp(`already owned by this process \\(pid ${process.pid}\\)`) });
  a.release();
  acquireStateLock(db).release();
});

t.test('a lock of a dead pid, or of a pid reused by a later process, is stale', async (t) => {
  const path = join(dir, 'stale.lock');
  writeFileSync(path, `${deadPid()} 12345 guest old\n`);
  const a = acquireLock(path, 'guest new');
  a.release();
  // Our own (live) pid but another start time: a process that had this pid before us.
  writeFileSync(path, `${process.pid} 1 guest older\n`);
  acquireLock(path, 'guest new').release();
  t.pass('both taken over');
});

t.test('two QemuVm with one layout: the second start fails naming the owner and deletes nothing', async (t) => {
  const runRoot = join(dir, 'run-a');
  const first = new QemuVm(spec(runRoot, 'twin'));
  first.claim();
  // What the first owner's QEMU holds.
  writeFileSync(first.ramPath, 'ram');
  writeFileSync(first.qmpPath, '');
  const second = new QemuVm(spec(runRoot, 'twin'));
  await t.rejects(second.start(), { name: 'VmBusyError', message: new RegExp(`guest twin: already owned by this process \\(pid ${process.pid}\\)`) });
  t.ok(existsSync(first.ramPath), 'the owner\'s RAM file is still there');
  t.ok(existsSync(first.qmpPath), 'and its socket');
  first.release();
  // The owner dies without releasing: its lock names a dead pid.
  writeFileSync(first.ownerLockPath, `${deadPid()} 1 guest twin\n`);
  second.claim();
  t.pass('a stale owner lock is taken over');
  second.release();
});

t.test('a start that fails before launching gives the guest up again', async (t) => {
  const runRoot = join(dir, 'run-c');
  const a = new QemuVm(spec(runRoot, 'retry'));
  await t.rejects(a.start(), /kernel: .*no-kernel does not exist/);
  t.notOk(existsSync(a.ownerLockPath), 'no lock left behind');
  const b = new QemuVm(spec(runRoot, 'retry'));
  b.claim();
  t.pass('a new owner (a retry in the same process) can claim it');
  b.release();
});

t.test('an adopted QEMU stopped by its new owner leaves no RAM file behind', async (t) => {
  const runRoot = join(dir, 'run-b');
  const vm = new QemuVm(spec(runRoot, 'adoptee'));
  const L = vm.spec.layout;
  mkdirSync(L.dir, { recursive: true });
  // The QEMU an earlier supervisor launched: a live process, its pid file, RAM file and QMP socket.
  const qemu = spawn('sleep', ['300'], { stdio: 'ignore' });
  t.teardown(() => { try { qemu.kill('SIGKILL'); } catch { /* gone */ } });
  writeFileSync(L.pidFile, `${qemu.pid}\n`);
  writeFileSync(L.ramPath, 'guest ram');
  const qmp = createServer((sock) => {
    sock.on('error', () => undefined);
    sock.write('{"QMP": {"version": {}, "capabilities": []}}\n');
    let buf = '';
    sock.on('data', (d: Buffer) => {
      buf += d.toString();
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const cmd = JSON.parse(buf.slice(0, nl)) as { execute: string; id: string };
        buf = buf.slice(nl + 1);
        sock.write(JSON.stringify({ return: {}, id: cmd.id }) + '\n');
        if (cmd.execute === 'quit') qemu.kill('SIGKILL');
      }
    });
  });
  await new Promise<void>((r) => qmp.listen(L.qmpSocket, r));
  t.teardown(() => qmp.close());
  const ctl = new QemuGuestController(vm);
  t.equal(await ctl.ensureRunning(5_000), 'adopted');
  t.ok(existsSync(vm.ownerLockPath), 'adopting claims the guest');
  // Another owner is refused while this one holds it.
  const rival = new QemuGuestController(new QemuVm(spec(runRoot, 'adoptee')));
  await t.rejects(rival.ensureRunning(5_000), VmBusyError);
  await ctl.stop(5_000);
  t.notOk(processAlive(qemu.pid as number), 'the adopted QEMU is gone');
  t.notOk(existsSync(L.ramPath), 'its RAM file was removed');
  await ctl.close({ stopGuest: false });
  t.notOk(existsSync(vm.ownerLockPath), 'closing gives the guest up');
});
