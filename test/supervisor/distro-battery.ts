// The end-to-end battery for a lab distro guest (lab/build-distro-guest.sh <distro>): a full Debian
// systemd guest that boots from its own disk (SeaBIOS -> GRUB -> Debian's kernel), defined the way a
// user defines an existing VM: golden qcow2, a persistent data disk, user networking with a port
// forward to nginx, nginx as the critical service. One boot, one battery: the kernel views (kallsyms,
// task list, modules) equal what the guest reports; clean scans; nginx stopped -> restarted through
// the agent with systemctl; a DKOM-hidden process -> OS reboot; a syscall hook -> image restore, the
// root disk's change gone and the data disk's kept. Boot, reboot and restore times are printed.
// Each distro has a one-line test file that runs this (e2e-distro-<distro>.test.ts).
import t, { type Test } from 'tap';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { get } from 'node:http';
import { LiveSupervisor, makeHarness, FAST_POLICY } from './harness.js';
import { loadDistroGuest, type DistroGuestImage } from '../../lab/distro-guest.js';
import { run } from '../../src/util/exec.js';
import { sleep } from '../../src/util/deadline.js';
import { QemuGuestController } from '../../src/recovery/qemu-controller.js';
import { Introspector } from '../../src/views/scan.js';
import type { KernelSnapshot } from '../../src/views/types.js';
import { compareProcesses, guestKallsyms, kallsymsLines, withoutAgentCommands, type PsRow } from '../introspection/ground-truth.js';
import type { GuestAgentClient } from '../../src/qemu/guest-agent-client.js';

/** A free TCP port on the loopback for the nginx forward. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => (typeof a === 'object' && a ? resolve(a.port) : reject(new Error('no port'))));
    });
  });
}

function httpStatus(port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = get({ host: '127.0.0.1', port, path: '/', timeout: 10_000 }, (res) => { res.resume(); resolve(res.statusCode ?? 0); });
    req.once('timeout', () => req.destroy(new Error('timeout')));
    req.once('error', reject);
  });
}

/** The guest's processes as procps lists them (all of them: -e), without our own agent commands. */
async function guestPsAll(agent: GuestAgentClient): Promise<PsRow[]> {
  const text = await agent.shell('ps -e -o pid=,ppid=,comm=');
  const rows = text.trim().split('\n').map((l) => {
    const [pid, ppid, ...comm] = l.trim().split(/\s+/);
    // procfs shows a kernel thread's full name ("rcu_tasks_kthread"); the task's comm keeps 15 characters.
    return { pid: Number(pid), ppid: Number(ppid), comm: comm.join(' ').slice(0, 15) };
  });
  return withoutAgentCommands(rows);
}

const policy = {
  ...FAST_POLICY,
  faults: {
    ...FAST_POLICY.faults,
    // A systemd guest under TCG on a loaded machine can leave its agent busy for tens of seconds.
    'agent-down': {
      confirmScans: 5, resetWindowSec: 300,
      ladder: [{ action: 'restart-vm', count: 1, verifyTimeoutSec: 300, backoffSec: 0 }],
    },
    // systemd starts the agent (udev, on its port) before nginx: the first scans can precede nginx.
    'critical-process-missing': {
      confirmScans: 5, resetWindowSec: 300,
      ladder: [
        { action: 'restart-process', count: 2, verifyTimeoutSec: 30, backoffSec: 1, backoffFactor: 2 },
        { action: 'reboot-os', count: 1, verifyTimeoutSec: 120, backoffSec: 0 },
        { action: 'restore-image', count: 1, verifyTimeoutSec: 120, backoffSec: 0 },
      ],
    },
    // The DKOM-hidden process: an OS reboot, verified once systemd and the agent are back.
    'hidden-process': {
      confirmScans: 2, resetWindowSec: 300,
      ladder: [
        { action: 'reboot-os', count: 2, verifyTimeoutSec: 120, backoffSec: 0 },
        { action: 'restore-image', count: 1, verifyTimeoutSec: 120, backoffSec: 0 },
      ],
    },
    'syscall-table-changed': {
      confirmScans: 1, resetWindowSec: 300,
      ladder: [{ action: 'restore-image', count: 1, verifyTimeoutSec: 120, backoffSec: 0 }],
    },
  },
};

/** Runs the battery on the lab's `distro` guest (its manifest: lab/distro-guest.ts); `title` names it in the output. */
export function distroGuestBattery(distro: string, title: string): void {
  // A systemd boot, an OS reboot and a restore boot under TCG, on a shared 2-core machine.
  t.setTimeout(2_100_000);
  const image = loadDistroGuest(distro);
  t.test(`${title} from its own disk: views equal the guest's, clean, nginx restarted, DKOM -> OS reboot, hook -> image restore keeping the data disk`, async (t) => {
    await battery(t, image, distro);
  });
}

async function battery(t: Test, image: DistroGuestImage, distro: string): Promise<void> {
  const port = await freePort();
  const h = makeHarness(`e2e-${distro}`, {
    scanIntervalSec: 2,
    policy,
    actionTimeoutsSec: { 'restore-image': 900, 'reboot-os': 600 },
    guest: (dir) => ({
      image: { disk: { golden: image.disk, format: image.format }, firmware: 'bios' },
      disks: [{ path: join(dir, 'data.raw'), format: 'raw' }],
      network: { user: { forwards: [{ hostPort: port, guestPort: 80 }] } },
      memoryMiB: 768,
      bootTimeoutSec: 900,
      agentTimeoutSec: 60,
      cpus: 1,
      critical: [{ name: 'nginx', start: ['/usr/bin/systemctl', 'start', 'nginx'] }],
    }),
  });
  // The data disk: a raw ext4 the guest's fstab mounts by label at /srv/data.
  await run('truncate', ['-s', '64M', join(h.dir, 'data.raw')]);
  await run('mke2fs', ['-q', '-t', 'ext4', '-L', 'iv-data', '-F', join(h.dir, 'data.raw')]);
  const s = new LiveSupervisor(h);
  let ins: Introspector | undefined;
  t.teardown(async () => { ins?.close(); await s.stop(); h.cleanup(); });

  const t0 = Date.now();
  await s.start();
  await s.waitFor(/kernel baseline recorded at the first clean scan/, 900_000);
  const ctl = s.sup.controllers[0];
  if (!(ctl instanceof QemuGuestController)) throw new Error('no QEMU controller');
  t.pass(`booted (firmware -> GRUB -> systemd -> agent) in ${ctl.vm.lastBootMs} ms; first clean scan ${Date.now() - t0} ms after start`);
  let agent = await s.agent();
  t.equal((await agent.shell('uname -r')).trim(), image.kernelAbi, 'the distro\'s own kernel, from its own disk');
  t.equal((await agent.shell('cat /proc/1/comm')).trim(), 'systemd');
  t.match(await agent.shell('cat /proc/cmdline'), /root=LABEL=iv-root/, 'the command line GRUB on the disk gave');

  // --- the kernel views equal what the guest itself reports --------------------------------
  // Discovery on this guest has failed now and then (a stale kernel image picked, the running one's
  // kallsyms candidates rejected); the supervisor retries at its next cycle, and so does this test.
  const attachErrors: string[] = [];
  for (let i = 0; i < 3 && !ins; i++) {
    try { ins = await Introspector.attach(ctl.vm.ramPath, { qmp: ctl.vm.qmp }); } catch (e) { attachErrors.push((e as Error).message.slice(0, 300)); await new Promise((r) => setTimeout(r, 2000)); }
  }
  if (attachErrors.length) t.comment(`attach failed ${attachErrors.length} time(s) first: ${attachErrors.join(' | ')}`);
  if (!ins) throw new Error(`no attach: ${attachErrors.join(' | ')}`);
  const truthLines = await guestKallsyms(ctl.vm);
  const truth = new Set(truthLines);
  const mine = kallsymsLines(ins.kernel.profile.symbols);
  t.equal(mine.length, truthLines.length, `${truthLines.length} kernel symbols`);
  t.same(mine.filter((l) => !truth.has(l)).slice(0, 5), [], 'every decoded symbol is in the guest\'s /proc/kallsyms');
  // One consistent moment: the guest paused between its own listing and ours would let processes
  // come and go, so the listing is taken, then memory is read; a short-lived systemd helper may differ.
  // udev's workers come and go by the dozen after boot: a difference that is real persists over three tries.
  const listing = async (): Promise<{ ps: PsRow[]; snap: KernelSnapshot }> => {
    const rows = await guestPsAll(agent);
    await ctl.vm.qmp.execute('stop');
    try { return { ps: rows, snap: (ins as Introspector).scan() }; } finally { await ctl.vm.qmp.execute('cont'); }
  };
  let { ps, snap } = await listing();
  for (let i = 0; i < 2 && compareProcesses(ps, snap).length > 0; i++) ({ ps, snap } = await listing());
  const mods = (await agent.shell('cat /proc/modules')).trim().split('\n').map((l) => l.split(' ')[0]).sort();
  t.same(compareProcesses(ps, snap), [], `task list equals the guest's ps -e (${ps.length} processes)`);
  t.ok(snap.tasks.tasks.some((x) => x.comm === 'nginx'), 'nginx is in the task list');
  let modules = snap.modules;
  if (modules.errors.length) {
    // Seen once: module memory "not mapped" through the test's own attach while the supervisor's scans saw
    // every module. A fresh attach reads the page tables anew; the first errors are kept in the output.
    t.comment(`module view errors, attaching afresh: ${JSON.stringify(modules.errors).slice(0, 400)}`);
    ins.close();
    ins = await Introspector.attach(ctl.vm.ramPath, { qmp: ctl.vm.qmp });
    const again = ins;
    await ctl.vm.qmp.execute('stop');
    try { modules = again.scan().modules; } finally { await ctl.vm.qmp.execute('cont'); }
  }
  t.same(modules.modules.map((m) => m.name).sort(), mods, `module list equals /proc/modules (${mods.length} modules; view errors ${JSON.stringify(modules.errors).slice(0, 400)})`);
  ins.close();
  ins = undefined;

  // --- clean scans ----------------------------------------------------------------------------
  const w = s.sup.watches[0];
  if (!w) throw new Error('no watch');
  const scans0 = w.scans;
  while (w.scans - scans0 < 5) await new Promise((r) => setTimeout(r, 500));
  t.same(w.lastScan?.findings, [], `${w.scans - scans0} more scans, clean`);
  t.same(s.actions(), [], 'no action on a clean guest');
  t.equal(await httpStatus(port), 200, 'nginx answers through the port forward');

  // --- the data disk and a change on the root disk ----------------------------------------------
  // fstab mounts it at boot unless udev was slower than the mount's device timeout (TCG under load).
  const mountData = '(mountpoint -q /srv/data || mount /srv/data)';
  await agent.shell(`${mountData} && echo kept > /srv/data/marker && echo tampered > /root/marker && sync`);

  // --- nginx stopped -> restarted through the agent ---------------------------------------------
  let from = s.lines.length;
  const stoppedAt = Date.now();
  await agent.shell('systemctl stop nginx');
  const raised = await s.waitFor(/finding raised: critical-process-missing: critical process nginx/, 30_000, from);
  t.pass(`finding ${raised.atMs - stoppedAt} ms after systemctl stop`);
  const done = await s.waitFor(/action restart-process done/, 60_000, from);
  // Debian 11 has no /usr merge: /usr/bin/systemctl is not there, the controller runs /bin/systemctl.
  t.match(done.line, /started (\/usr)?\/bin\/systemctl start nginx/);
  const verified = await s.waitFor(/ladder critical-process-missing: verified/, 60_000, done.index);
  t.pass(`nginx healthy again ${verified.atMs - stoppedAt} ms after the stop`);
  t.equal((await agent.shell('systemctl is-active nginx')).trim(), 'active');
  t.equal(await httpStatus(port), 200, 'nginx answers again');
  t.same(s.actions().map((a) => [a.action, a.outcome]), [['restart-process', 'ok']]);

  // After a reboot or restore the supervisor may scan before systemd has started nginx (a Debian 11
  // guest under TCG starts it well after its agent): nginx is waited for, and a restart of it then
  // (confirmed over the policy's scans of that boot, done) is the ladder doing its work, not a step.
  const nginxActive = async (): Promise<string> => {
    let state = '';
    for (const until = Date.now() + 120_000; Date.now() < until; await sleep(2_000)) {
      state = (await s.shell('systemctl is-active nginx || true')).trim();
      if (state === 'active') break;
    }
    return state;
  };
  const ladderActions = (): string[][] => s.actions().map((a) => [a.action, a.outcome ?? 'none'])
    .filter(([a, o], i) => i === 0 || !(a === 'restart-process' && o === 'ok'));

  // --- a DKOM-hidden process -> OS reboot -----------------------------------------------------
  const bootBefore = (await agent.shell('cat /proc/sys/kernel/random/boot_id')).trim();
  const pid = Number((await agent.shell('sleep 100000 </dev/null >/dev/null 2>&1 & echo $!')).trim());
  t.ok(pid > 1, `victim pid ${pid}`);
  from = s.lines.length;
  const hiddenAt = Date.now();
  // Detached, as the hook below: the reboot may come before a waited-for exec could report back.
  await agent.exec('/sbin/insmod', [image.attackModules.dkomHide, `pid=${pid}`], { detach: true });
  const hidden = await s.waitFor(/finding raised: hidden-process/, 60_000, from);
  t.match(hidden.line, new RegExp(`pid ${pid} \\(sleep\\) is in pid-idr(, run-queue)?, guest-ps but not in task-list`));
  t.pass(`finding ${hidden.atMs - hiddenAt} ms after insmod`);
  const rebooted = await s.waitFor(/action reboot-os (done|FAILED)/, 900_000, hidden.index);
  t.match(rebooted.line, /action reboot-os done/, `OS rebooted ${rebooted.atMs - hiddenAt} ms after insmod: ${rebooted.line.replace(/^.*action reboot-os (done|FAILED) */, '')}`);
  const healthy = await s.waitFor(/ladder hidden-process: verified/, 300_000, rebooted.index);
  t.pass(`clean scan ${healthy.atMs - hiddenAt} ms after insmod`);
  t.not((await s.shell('cat /proc/sys/kernel/random/boot_id')).trim(), bootBefore, 'a new boot');
  t.notMatch(await s.shell('cat /proc/modules'), /iv_dkom_hide/);
  t.equal(await nginxActive(), 'active', 'nginx runs after the reboot');
  t.same(ladderActions(), [['restart-process', 'ok'], ['reboot-os', 'ok']]);
  agent = await s.agent();

  // --- syscall hook -> image restore ----------------------------------------------------------
  from = s.lines.length;
  const hookedAt = Date.now();
  // Detached: the supervisor may see the hook and stop the VM before a waited-for exec could report back.
  await agent.exec('/sbin/insmod', [image.attackModules.syscallHook, 'nrs=39,62'], { detach: true });
  const hook = await s.waitFor(/finding raised: syscall-table-changed/, 30_000, from);
  t.match(hook.line, /sys_call_table\[39\] points to .* instead of __x64_sys_getpid/);
  t.match(hook.line, /sys_call_table\[62\] points to .* instead of __x64_sys_kill/);
  const restored = await s.waitFor(/action restore-image done/, 900_000, from);
  t.pass(`image restored ${restored.atMs - hookedAt} ms after insmod: ${restored.line.replace(/^.*action restore-image done:? */, '')}`);
  const clean = await s.waitFor(/ladder syscall-table-changed: verified/, 300_000, restored.index);
  t.pass(`clean scan ${clean.atMs - hookedAt} ms after insmod`);
  // Idempotent reads, each on a fresh connection if the shared one closed under the restore.
  t.equal((await s.shell('cat /root/marker 2>/dev/null || echo none')).trim(), 'none', 'the root disk\'s overlay was discarded');
  t.equal((await s.shell(`${mountData} && cat /srv/data/marker`)).trim(), 'kept', 'the data disk was kept');
  t.notMatch(await s.shell('cat /proc/modules'), /iv_syscall_hook/);
  t.equal(await nginxActive(), 'active', 'nginx runs on the restored guest');
  t.same(ladderActions(), [['restart-process', 'ok'], ['reboot-os', 'ok'], ['restore-image', 'ok']]);
  t.same(s.sup.watches[0]?.lastScan?.findings, []);
}
