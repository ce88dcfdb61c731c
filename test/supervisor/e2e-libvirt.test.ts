// E2E on a libvirt domain: a private libvirtd (test/libvirt/private-libvirtd.ts)
// defines and runs the lab guest as a TCG domain with its RAM in a shared file
// on a tmpfs; the supervisor guards it through libvirt only (monitor and agent
// passthrough, events, pid file). One domain boot, then a battery: clean scans,
// the critical service killed and restarted, then made unstartable so the
// ladder reboots the OS, restarts the VM and restores the image; a new
// supervisor adopts the running domain. Bad definitions are refused before
// anything starts.
import t from 'tap';
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { LiveSupervisor, makeHarness, FAST_POLICY } from './harness.js';
import { PrivateLibvirtd } from '../libvirt/private-libvirtd.js';
import { loadLabImages } from '../../lab/lab-images.js';
import { run } from '../../src/util/exec.js';
import { readPid } from '../../src/util/pid.js';
import { LibvirtGuestController } from '../../src/recovery/libvirt-controller.js';
import { Supervisor } from '../../src/supervisor/supervisor.js';
import { loadSupervisorConfig } from '../../src/supervisor/config.js';

const DOMAIN = 'ivlv';

interface DomainOpts { name: string; kernel: string; initrd: string; disk: string; diskFormat?: string; console: string; memory?: boolean; agent?: boolean }

/** The lab guest as a libvirt domain, written as a user would (memoryBacking and agent channel as docs/GUESTS.md says). */
function domainXml(o: DomainOpts): string {
  return `<domain type='qemu'>
  <name>${o.name}</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  ${o.memory === false ? '' : "<memoryBacking><source type='file'/><access mode='shared'/></memoryBacking>"}
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>${o.kernel}</kernel>
    <initrd>${o.initrd}</initrd>
    <cmdline>console=ttyS0 introvisor.name=${o.name} panic=-1 loglevel=4 no_timer_check</cmdline>
  </os>
  <cpu mode='maximum'/>
  <on_reboot>restart</on_reboot>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='${o.diskFormat ?? 'qcow2'}'/>
      <source file='${o.disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <serial type='file'><source path='${o.console}'/><target port='0'/></serial>
    ${o.agent === false ? '' : "<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>"}
    <memballoon model='none'/>
  </devices>
</domain>
`;
}

// critical-process-missing climbs restart-process -> reboot-os -> restart-vm -> restore-image.
const POLICY = {
  ...FAST_POLICY,
  faults: {
    ...FAST_POLICY.faults,
    'critical-process-missing': {
      confirmScans: 1, resetWindowSec: 30,
      ladder: [
        { action: 'restart-process', count: 1, verifyTimeoutSec: 10, backoffSec: 0 },
        { action: 'reboot-os', count: 1, verifyTimeoutSec: 20, backoffSec: 0 },
        { action: 'restart-vm', count: 1, verifyTimeoutSec: 20, backoffSec: 0 },
        { action: 'restore-image', count: 1, verifyTimeoutSec: 60, backoffSec: 0 },
      ],
    },
  },
};

t.test('a libvirt domain guarded through a private libvirtd', async (t) => {
  const images = loadLabImages();
  const root = mkdtempSync(join(tmpdir(), 'iv-libvirt-'));
  chmodSync(root, 0o755);
  const ramDir = join('/dev/shm', `iv-libvirt-${randomBytes(4).toString('hex')}`);
  const lv = await PrivateLibvirtd.start(join(root, 'libvirt'), ramDir);
  // The supervisor stops first, then the daemon (which destroys its domains).
  let s: LiveSupervisor | undefined;
  t.teardown(async () => { await s?.stop(); await lv.stop(); rmSync(root, { recursive: true, force: true }); });

  // Copies: libvirt labels the files a domain uses (chown to libvirt-qemu), not the lab's cache.
  const img = join(root, 'img');
  mkdirSync(img);
  chmodSync(img, 0o755);
  for (const f of ['kernel', 'initrd'] as const) copyFileSync(images[f], join(img, f));
  const golden = join(img, 'golden.qcow2');
  copyFileSync(images.baseImage, golden);
  const overlay = join(img, `${DOMAIN}.qcow2`);
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', golden, '-F', 'qcow2', overlay]);
  const raw = join(img, 'raw.img');
  await run('qemu-img', ['create', '-q', '-f', 'raw', raw, '16M']);
  const base = { kernel: join(img, 'kernel'), initrd: join(img, 'initrd'), console: join(root, 'console.log') };
  await lv.define(DOMAIN, domainXml({ ...base, name: DOMAIN, disk: overlay }));
  await lv.define('ivlv-nomem', domainXml({ ...base, name: 'ivlv-nomem', disk: overlay, memory: false }));
  await lv.define('ivlv-noagent', domainXml({ ...base, name: 'ivlv-noagent', disk: overlay, agent: false }));
  await lv.define('ivlv-raw', domainXml({ ...base, name: 'ivlv-raw', disk: raw, diskFormat: 'raw' }));
  // An overlay whose golden image has gone (-u: qemu-img does not open the backing file).
  const orphan = join(img, 'orphan.qcow2');
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-u', '-b', join(img, 'gone.qcow2'), '-F', 'qcow2', orphan, '64M']);
  await lv.define('ivlv-nogolden', domainXml({ ...base, name: 'ivlv-nogolden', disk: orphan }));
  const libvirt = { uri: lv.uri, stateDir: lv.stateDir };

  await t.test('bad definitions: a clear error naming guest and field, and nothing starts', async (t) => {
    const bad = makeHarness('bad', {
      config: { libvirt },
      guest: () => ({ image: { libvirt: 'ivlv-nomem' } }),
    });
    t.teardown(() => bad.cleanup());
    // The harness names its one guest `bad`; the others are added here as a user would.
    const cfg = JSON.parse(readFileSync(bad.configPath, 'utf8')) as { guests: object[] };
    cfg.guests.push({ name: 'noagent', image: { libvirt: 'ivlv-noagent' } }, { name: 'rawdisk', image: { libvirt: 'ivlv-raw' } },
      { name: 'nogolden', image: { libvirt: 'ivlv-nogolden' } },
      { name: 'unknown', image: { libvirt: 'no-such-domain' } });
    writeFileSync(bad.configPath, JSON.stringify(cfg));
    const sup = new Supervisor(loadSupervisorConfig(bad.configPath), { log: () => undefined });
    const err = await sup.start().then(() => null, (e: unknown) => e as Error);
    await sup.stop();
    t.ok(err, 'start refused');
    const msg = err?.message ?? '';
    t.match(msg, /^preflight: /);
    t.match(msg, /guest bad: \/image\/libvirt: domain "ivlv-nomem" has no shared file memory.*<memoryBacking><source type='file'\/><access mode='shared'\/><\/memoryBacking>/);
    t.match(msg, /guest noagent: \/image\/libvirt: domain "ivlv-noagent" has no guest agent channel/);
    t.match(msg, /guest rawdisk: \/image\/libvirt: domain "ivlv-raw"'s boot disk .*raw\.img is raw: an image restore needs a qcow2 overlay/);
    t.match(msg, /guest unknown: \/image\/libvirt: domain "no-such-domain" is not defined in libvirt/);
    t.match(msg, /guest nogolden: \/image\/libvirt: golden image .*gone\.qcow2 \(the backing file of .*orphan\.qcow2\) does not exist/);
    t.equal((await lv.virsh.run(['list', '--name'], 10_000)).trim(), '', 'no domain was started');

    // libvirtd not reachable: a socket no daemon listens on.
    const gone = makeHarness('gone', {
      config: { libvirt: { uri: `qemu+unix:///system?socket=${join(root, 'none.sock')}` } },
      guest: () => ({ image: { libvirt: DOMAIN } }),
    });
    t.teardown(() => gone.cleanup());
    const sup2 = new Supervisor(loadSupervisorConfig(gone.configPath), { log: () => undefined });
    const err2 = await sup2.start().then(() => null, (e: unknown) => e as Error);
    await sup2.stop();
    t.match(err2?.message ?? '', /preflight: guest gone: \/image\/libvirt: libvirtd is not reachable at qemu\+unix:\/\/\/system\?socket=.*none\.sock/);
    t.equal((await lv.virsh.state(DOMAIN, 10_000)), 'shut off');
  });

  const h = makeHarness(DOMAIN, {
    policy: POLICY,
    // The domain outlives this supervisor: the next one adopts it (the daemon's stop destroys it at the end).
    config: { libvirt, onExit: 'leave-running' },
    actionTimeoutsSec: { 'reboot-os': 300, 'restart-vm': 300, 'restore-image': 300, 'restart-process': 30 },
    guest: () => ({
      image: { libvirt: DOMAIN },
      critical: [{ name: 'csdtest', start: ['/data/bin/csdtest', '-d'] }],
      bootTimeoutSec: 600, agentTimeoutSec: 30,
    }),
  });
  const sup = new LiveSupervisor(h);
  s = sup;
  t.teardown(() => h.cleanup());

  const t0 = Date.now();
  await sup.start();
  await sup.waitFor(/kernel baseline recorded at the first clean scan/, 600_000);
  t.pass(`domain started through libvirt and scanned clean ${Date.now() - t0} ms after start`);
  const ctl = sup.sup.controllers[0];
  if (!(ctl instanceof LibvirtGuestController)) throw new Error('not a libvirt controller');

  await t.test('RAM file, QEMU pid and clean scans, all through libvirt', async (t) => {
    const ram = await ctl.ramPath();
    t.ok(ram.startsWith(`${ramDir}/`), `RAM file ${ram} in memory_backing_dir`);
    const pid = ctl.qemuPid;
    t.equal(pid, readPid(join(lv.stateDir, `${DOMAIN}.pid`)), "QEMU pid from libvirt's pid file");
    t.match(readFileSync(`/proc/${pid}/cmdline`, 'utf8'), new RegExp(`guest=${DOMAIN}`));
    t.match(readFileSync(`/proc/${pid}/maps`, 'utf8'), ram, 'that QEMU maps the RAM file');
    await new Promise((r) => setTimeout(r, 5_000));
    t.same(sup.sup.watches[0]?.lastScan?.findings, [], 'scans stay clean');
    t.same(sup.actions(), [], 'no action on a clean guest');
    const r = await ctl.exec(['/bin/sh', '-c', 'cat /proc/sys/kernel/hostname'], 30_000);
    t.equal(r.exitCode, 0, 'the agent runs commands through libvirt');
  });

  await t.test('critical service killed -> restarted through the agent', async (t) => {
    const pidBefore = (await ctl.exec(['/bin/sh', '-c', 'cat /run/csdtest.pid'], 30_000)).stdout.toString().trim();
    const from = sup.lines.length;
    const killedAt = Date.now();
    await ctl.exec(['/bin/sh', '-c', `kill ${pidBefore}`], 30_000);
    const raised = await sup.waitFor(/finding raised: critical-process-missing: critical process csdtest/, 60_000, from);
    const verified = await sup.waitFor(/ladder critical-process-missing: verified/, 120_000, raised.index);
    t.pass(`finding ${raised.atMs - killedAt} ms, verified ${verified.atMs - killedAt} ms after the kill`);
    t.same(sup.actions().map((a) => [a.action, a.outcome]), [['restart-process', 'ok']]);
    const pidAfter = (await ctl.exec(['/bin/sh', '-c', 'cat /run/csdtest.pid'], 30_000)).stdout.toString().trim();
    t.not(pidAfter, pidBefore, 'a new csdtest runs');
  });

  await t.test('service cannot start -> OS reboot -> VM restart -> image restore, guest back clean', async (t) => {
    // Past the ladder's reset window, so it starts from its first rung again.
    await new Promise((r) => setTimeout(r, 31_000));
    const from = sup.lines.length;
    const n0 = sup.actions().length;
    const brokeAt = Date.now();
    // The binary moved away on the overlay: a restart cannot start it, a reboot neither; the golden image has it.
    await ctl.exec(['/bin/sh', '-c', 'mv /data/bin/csdtest /data/csdtest.off && sync && kill $(cat /run/csdtest.pid)'], 30_000);
    let resets = 0;
    ctl.onGuestReset(() => { resets++; });
    const reboot = await sup.waitFor(/action reboot-os done/, 400_000, from);
    t.match(reboot.line, /rebooted via virsh reboot --mode agent; boot id [0-9a-f-]{36} -> [0-9a-f-]{36}/, `OS rebooted through the agent ${reboot.atMs - brokeAt} ms after the break`);
    t.ok(resets >= 1, `libvirt's event stream reported the guest's reset (${resets} reboot events)`);
    const vm = await sup.waitFor(/action restart-vm done/, 400_000, reboot.index);
    t.pass(`VM restarted through libvirt ${vm.atMs - brokeAt} ms after the break: ${vm.line.slice(0, 200)}`);
    const restored = await sup.waitFor(/action restore-image done/, 500_000, vm.index);
    t.pass(`image restored ${restored.atMs - brokeAt} ms after the break: ${restored.line.slice(0, 300)}`);
    const verified = await sup.waitFor(/ladder critical-process-missing: verified/, 300_000, restored.index);
    t.pass(`clean again ${verified.atMs - brokeAt} ms after the break`);
    const acts = sup.actions().slice(n0).map((a) => [a.action, a.outcome]);
    t.same(acts, [['restart-process', 'failed'], ['reboot-os', 'ok'], ['restart-vm', 'ok'], ['restore-image', 'ok']], 'the ladder climbed restart-process -> reboot-os -> restart-vm -> restore-image');
    const ls = await ctl.exec(['/bin/sh', '-c', 'test -x /data/bin/csdtest'], 30_000);
    t.equal(ls.exitCode, 0, 'the golden image\'s csdtest is back');
    t.not((await ctl.exec(['/bin/sh', '-c', 'test -e /data/csdtest.off'], 30_000)).exitCode, 0, 'the overlay\'s change is gone');
    t.equal(await lv.virsh.state(DOMAIN, 10_000), 'running');
    await new Promise((r) => setTimeout(r, 5_000));
    t.same(sup.sup.watches[0]?.lastScan?.findings, [], 'scans clean after the restore');
  });

  await t.test('a new supervisor adopts the running domain: RAM file found again, scans clean, no boot', async (t) => {
    const pidBefore = ctl.qemuPid;
    await sup.stop();
    t.equal(await lv.virsh.state(DOMAIN, 10_000), 'running', 'leave-running: the domain still runs');
    const next = new LiveSupervisor(h);
    s = next;
    await next.start();
    await next.waitFor(/\[ivlv\] guest adopted/, 120_000);
    const c2 = next.sup.controllers[0];
    if (!(c2 instanceof LibvirtGuestController)) throw new Error('not a libvirt controller');
    t.equal(c2.qemuPid, pidBefore, 'the same QEMU');
    t.ok((await c2.ramPath()).startsWith(`${ramDir}/`), 'its RAM file asked of QEMU again');
    const until = Date.now() + 120_000;
    const scanned = (): boolean => { const l = next.sup.watches[0]?.lastScan; return !!l && l.snapshotError === null && l.agent === 'ok'; };
    while (!scanned() && Date.now() < until) await new Promise((r) => setTimeout(r, 1_000));
    t.ok(scanned(), 'a kernel scan and an agent report of the adopted guest');
    t.same(next.sup.watches[0]?.lastScan?.findings, [], 'scans clean after adoption');
    t.same(next.actions().slice(-1).map((a) => a.action), ['restore-image'], 'no action since: the last one is the restore');
  });
});
