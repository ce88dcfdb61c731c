// The lab on real guests: two guests at once, each reachable over QMP, the
// guest agent and its RAM file; system_reset; the three attack modules.
import t from 'tap';
import { existsSync } from 'node:fs';
import { startLabGuest } from '../../lab/lab-guest.js';
import { loadLabImages } from '../../lab/lab-images.js';
import { openPhysicalMemory } from '../../src/memory/physical-memory.js';
import type { QemuVm } from '../../src/vm/qemu-vm.js';

const images = loadLabImages();
const vms: QemuVm[] = [];
t.teardown(async () => { await Promise.all(vms.map((vm) => vm.stop())); });

// Boot both concurrently: several guests at once, each with its own sockets and files.
const [a, b] = await Promise.all([
  startLabGuest('lab-a'),
  startLabGuest('lab-b', { kaslr: false }),
]);
vms.push(a, b);
t.comment(`boot times: lab-a ${a.lastBootMs} ms, lab-b ${b.lastBootMs} ms (both at once)`);

t.test('each guest has its own sockets, RAM file and disk', async (t) => {
  const files = (vm: QemuVm) => [vm.qmpPath, vm.agentPath, vm.ramPath, vm.spec.overlay];
  for (const f of [...files(a), ...files(b)]) t.ok(existsSync(f), `${f} exists`);
  t.equal(new Set([...files(a), ...files(b)]).size, 8, 'no path is shared');
});

for (const [label, vm] of [['lab-a', () => a], ['lab-b', () => b]] as const) {
  t.test(`${label}: QMP, guest agent and guest RAM`, async (t) => {
    const st = await vm().qmp.queryStatus();
    t.same(st, { status: 'running', running: true }, 'QMP query-status says running');
    const agent = await vm().agent();
    await agent.ping();
    t.pass('guest agent answers guest-ping');
    const ps = await agent.exec('/bin/ps', ['-o', 'pid,comm']);
    t.equal(ps.exitCode, 0);
    t.match(ps.stdout.toString(), /^\s*\d+\s+csdtest$/m, 'guest-exec ps lists csdtest');

    const release = (await agent.shell('uname -r')).trim();
    t.equal(release, images.kernelAbi, 'the guest runs the lab kernel');
    const mem = openPhysicalMemory(vm().ramPath);
    t.teardown(() => mem.close());
    t.equal(mem.size, 256 * 1024 * 1024, 'the RAM file covers all guest memory');
    const at = mem.indexOf(Buffer.from(`Linux version ${release} `));
    t.ok(at >= 0, `the kernel banner is in guest RAM (at 0x${at.toString(16)})`);
  });
}

t.test('system_reset brings the guest back', async (t) => {
  const agent = await b.agent();
  await agent.shell('echo before-reset > /tmp/marker');
  const t0 = Date.now();
  await b.reset();
  t.comment(`system_reset to guest agent ready: ${Date.now() - t0} ms`);
  const after = await b.agent();
  const marker = await after.exec('/bin/cat', ['/tmp/marker']);
  t.not(marker.exitCode, 0, 'tmpfs state is gone: the OS really restarted');
  t.match(await after.shell('ps -o comm'), /^csdtest$/m, 'csdtest runs again');
  t.same(await b.qmp.queryStatus(), { status: 'running', running: true });
});

t.test('a guest OS reboot through the agent brings the guest back', async (t) => {
  const agent = await b.agent();
  await agent.shell('echo before-reboot > /tmp/marker');
  const events: string[] = [];
  b.qmp.on('event', (e: { event: string }) => events.push(e.event));
  const t0 = Date.now();
  await agent.shutdown('reboot');
  await b.waitReady();
  t.ok(events.includes('RESET'), `QMP reports the guest-initiated reboot as RESET (events: ${events.join(', ')})`);
  t.comment(`guest-shutdown reboot to guest agent ready: ${Date.now() - t0} ms`);
  const marker = await (await b.agent()).exec('/bin/cat', ['/tmp/marker']);
  t.not(marker.exitCode, 0, 'tmpfs state is gone: the OS rebooted');
  t.ok(b.running, 'in the same QEMU process');
});

t.test('attack: sys_call_table hook, visible in the guest and undone by rmmod', async (t) => {
  const agent = await a.agent();
  await agent.shell(`insmod ${images.attackModules.syscallHook} nrs=39,62`);
  const log = await agent.shell('dmesg | grep iv_syscall_hook');
  t.match(log, /sys_call_table\[39\] \S+ -> iv_hook \[iv_syscall_hook\]/, 'entry 39 now points into the module');
  t.match(log, /sys_call_table\[62\] \S+ -> iv_hook \[iv_syscall_hook\]/, 'entry 62 now points into the module');
  t.match(await agent.shell('cat /proc/modules'), /^iv_syscall_hook /m);
  t.match(await agent.shell('echo still-works'), /still-works/, 'the hooked syscalls still work');
  await agent.shell('rmmod iv_syscall_hook');
  t.match(await agent.shell('dmesg | grep iv_syscall_hook'), /sys_call_table\[39\] restored to (?!iv_hook)\S+/, 'rmmod restores the entries');
});

t.test('attack: DKOM unlinks a pid from the task list, rmmod links it back', async (t) => {
  const agent = await a.agent();
  const pid = Number((await agent.shell('cat /run/csdtest.pid')).trim());
  t.ok(pid > 1, `csdtest pid ${pid}`);
  await agent.shell(`insmod ${images.attackModules.dkomHide} pid=${pid}`);
  t.match(await agent.shell('dmesg | grep iv_dkom_hide'), new RegExp(`pid ${pid} \\(csdtest\\) unlinked from the task list; for_each_process sees it: no`));
  t.match(await agent.shell(`cat /proc/${pid}/comm`), /^csdtest$/m, 'the pid is still found by number (pid IDR)');
  await agent.shell('rmmod iv_dkom_hide');
  t.match(await agent.shell('dmesg | grep iv_dkom_hide'), new RegExp(`pid ${pid} relinked; for_each_process sees it: yes`));
});

t.test('attack: a module hides itself from the module list and can be put back', async (t) => {
  const agent = await a.agent();
  await agent.shell(`insmod ${images.attackModules.hideModule}`);
  t.notMatch(await agent.shell('lsmod'), /iv_hide_module/, 'lsmod no longer shows it');
  t.match(await agent.shell('cat /sys/module/iv_hide_module/parameters/hidden'), /^1$/m, 'its kobject is still in /sys/module');
  await agent.shell('echo 0 > /sys/module/iv_hide_module/parameters/hidden');
  t.match(await agent.shell('lsmod'), /iv_hide_module/, 'back on the list');
  await agent.shell('rmmod iv_hide_module');
  t.notMatch(await agent.shell('ls /sys/module'), /iv_hide_module/, 'and unloaded');
});

t.test('clean shutdown and stop leave no QEMU and no RAM file behind', async (t) => {
  const pids = vms.map((vm) => vm.pid);
  const rams = vms.map((vm) => vm.ramPath);
  t.equal(await a.shutdown(), 'powered-off', 'lab-a powers itself off when asked through its agent');
  await b.stop();
  for (const pid of pids) {
    t.throws(() => process.kill(pid as number, 0), `QEMU pid ${pid} is gone`);
  }
  for (const f of rams) t.notOk(existsSync(f), `${f} removed`);
});
