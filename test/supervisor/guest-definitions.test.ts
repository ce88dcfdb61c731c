// Guests defined the way a user defines an existing VM: a disk that boots through its own
// bootloader (BIOS or UEFI), data disks, networking, console log, extra QEMU arguments. Bad
// definitions name the guest and the field, and nothing starts.
import t from 'tap';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadSupervisorConfig, parseSupervisorConfig } from '../../src/supervisor/config.js';
import { guestVmSpec, preflightVmSpec, OVMF_FILES } from '../../src/vm/guest-vm-spec.js';
import { QemuVm } from '../../src/vm/qemu-vm.js';
import { Supervisor } from '../../src/supervisor/supervisor.js';
import { run } from '../../src/util/exec.js';

const dir = mkdtempSync(join(tmpdir(), 'iv-guestdef-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const runRoot = join(dir, 'run');
const golden = join(dir, 'golden.qcow2');
const rawGolden = join(dir, 'golden.raw');
const data = join(dir, 'data.raw');

t.before(async () => {
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', golden, '16M']);
  writeFileSync(rawGolden, Buffer.alloc(1 << 20));
  writeFileSync(data, Buffer.alloc(1 << 20));
});

const parse = (guest: Record<string, unknown>): ReturnType<typeof parseSupervisorConfig> =>
  parseSupervisorConfig({ version: 1, database: 'x.db', guests: [{ name: 'web', ...guest }] }, 'c.json');
const errorOf = (f: () => unknown): string => {
  try { f(); } catch (e) { return (e as Error).message; }
  return '(no error)';
};

t.test('a disk-booting guest with data disk, forwards, console log and extra arguments loads, paths resolved', async (t) => {
  const cfgDir = join(dir, 'cfg');
  mkdirSync(cfgDir, { recursive: true });
  const p = join(cfgDir, 'supervisor.json');
  writeFileSync(p, JSON.stringify({
    version: 1, database: 'x.db', guests: [{
      name: 'web', image: { disk: { golden: '../golden.qcow2' }, firmware: 'uefi' },
      disks: [{ path: '../data.raw', format: 'raw' }],
      network: { user: { forwards: [{ hostPort: 18080, guestPort: 80 }] } },
      consoleLog: 'web-console.log',
      extraQemuArgs: ['-device', 'virtio-rng-pci'],
      critical: [{ name: 'nginx', start: ['/usr/bin/systemctl', 'start', 'nginx'] }],
    }],
  }));
  const c = loadSupervisorConfig(p);
  const g = c.guests[0];
  if (!g) throw new Error('no guest');
  t.equal(g.image.disk?.golden, golden);
  t.equal(g.disks?.[0]?.path, data);
  t.equal(g.consoleLog, join(cfgDir, 'web-console.log'));
  t.same(g.critical[0]?.start, { path: '/usr/bin/systemctl', args: ['start', 'nginx'] });

  const spec = guestVmSpec(g, runRoot, { dieWithParent: true });
  t.match(spec.boot, { kind: 'firmware', firmware: 'uefi', code: OVMF_FILES.code, varsTemplate: OVMF_FILES.varsTemplate });
  t.equal(spec.memoryMiB, 512);
  t.same(preflightVmSpec(spec), [], 'preflight passes: golden readable, ovmf installed, folders writable');
  const args = new QemuVm(spec).qemuArgs();
  const joined = args.join(' ');
  t.notMatch(joined, /-kernel|-initrd|-append/, 'no kernel: the firmware boots the disk');
  t.match(joined, new RegExp(`-drive if=pflash,format=raw,unit=0,readonly=on,file=${OVMF_FILES.code}`));
  t.match(joined, /-drive if=pflash,format=raw,unit=1,file=\S+\/guests\/web\/OVMF_VARS\.fd/, 'a per-guest variable store in its run folder');
  t.match(joined, /-device virtio-blk-pci,drive=iv-disk0,bootindex=0/);
  t.match(joined, new RegExp(`-drive if=none,id=iv-disk1,file=${data},format=raw -device virtio-blk-pci,drive=iv-disk1`));
  t.match(joined, /-netdev user,id=iv-net0,hostfwd=tcp:127\.0\.0\.1:18080-:80 -device virtio-net-pci,netdev=iv-net0,romfile=/);
  t.match(joined, new RegExp(`-serial file:${join(cfgDir, 'web-console.log')}`));
  t.same(args.slice(-2), ['-device', 'virtio-rng-pci'], 'extra arguments go last');

  const bios = guestVmSpec({ name: 'b', image: { disk: { golden: rawGolden, format: 'raw' } }, network: { tap: 'ivtap0', mac: '52:54:00:12:34:56' } }, runRoot, { dieWithParent: true });
  const bargs = new QemuVm(bios).qemuArgs().join(' ');
  t.notMatch(bargs, /pflash/, 'BIOS: QEMU\'s own SeaBIOS');
  t.match(bargs, /-netdev tap,id=iv-net0,ifname=ivtap0,script=no,downscript=no -device virtio-net-pci,netdev=iv-net0,romfile=,mac=52:54:00:12:34:56/);
  t.match(preflightVmSpec(bios).join('\n'), /^guest b: \/network\/tap: interface ivtap0 does not exist/m);
});

t.test('definition errors name the guest field; the schema refuses unknown shapes', async (t) => {
  t.match(errorOf(() => parse({ image: { lab: true, disk: { golden: 'g.qcow2' } } })), /\/guests\/0\/image needs exactly one of .* \(found lab and disk\)/);
  t.match(errorOf(() => parse({ image: {} })), /\/guests\/0\/image needs exactly one of .* \(found none\)/);
  t.match(errorOf(() => parse({ image: { lab: true, firmware: 'uefi' } })), /\/guests\/0\/image\/firmware applies only to a guest that boots from its "disk"/);
  t.match(errorOf(() => parse({ image: { disk: { golden: 'g' } }, kaslr: false, kernelArgs: ['x'] })), /\/guests\/0\/kaslr cannot be set .*; \/guests\/0\/kernelArgs cannot be set/);
  t.match(errorOf(() => parse({ image: { disk: { golden: 'g', format: 'vmdk' } } })), /\/guests\/0\/image\/disk\/format must be one of "qcow2", "raw"/);
  t.match(errorOf(() => parse({ image: { disk: { golden: 'g' }, firmware: 'coreboot' } })), /\/guests\/0\/image\/firmware must be one of "bios", "uefi"/);
  t.match(errorOf(() => parse({ image: { disk: { golden: 'g' } }, disks: [{ path: 'g' }] })), /\/guests\/0\/disks\/0\/path is the guest's golden image/);
  t.match(errorOf(() => parse({ image: { disk: { golden: 'g' } }, disks: [{ path: 'd' }, { path: 'd' }] })), /\/guests\/0\/disks\/1\/path d is given twice/);
  t.match(errorOf(() => parse({ image: { disk: { golden: 'g' } }, network: { user: {}, tap: 'tap0' } })), /\/guests\/0\/network has both "user" and "tap"/);
  t.match(errorOf(() => parse({ image: { disk: { golden: 'g' } }, network: {} })), /\/guests\/0\/network needs "user" or "tap"/);
  t.match(errorOf(() => parse({ image: { disk: { golden: 'g' } }, network: { tap: 'tap0', mac: '01:00:00:00:00:01' } })), /\/guests\/0\/network\/mac 01:00:00:00:00:01 is a multicast address/);
  t.match(errorOf(() => parse({ image: { disk: { golden: 'g' } }, network: { user: { forwards: [{ hostPort: 80, guestPort: 80 }, { hostPort: 80, guestPort: 81 }] } } })),
    /\/guests\/0\/network\/user\/forwards\/1\/hostPort 80 is forwarded twice/);
});

t.test('extra QEMU arguments that clash with what introvisor sets are refused, each by index', async (t) => {
  const bad: [string[], RegExp][] = [
    [['-name', 'x'], /extraQemuArgs\/0 "-name" is set by introvisor/],
    [['-qmp', 'unix:/tmp/q'], /extraQemuArgs\/0 "-qmp" is set by introvisor/],
    [['-pidfile', '/tmp/p'], /extraQemuArgs\/0 "-pidfile" is set by introvisor/],
    [['-daemonize'], /extraQemuArgs\/0 "-daemonize" is set by introvisor/],
    [['-machine', 'pc'], /extraQemuArgs\/0 "-machine" is set by introvisor/],
    [['-chardev', 'socket,id=qga0,path=/tmp/x'], /extraQemuArgs\/1 id "qga0" is one introvisor uses/],
    [['-object', 'memory-backend-ram,id=ram0,size=1G'], /extraQemuArgs\/1 id "ram0" is one introvisor uses/],
    [['-netdev', 'user,id=iv-net0'], /extraQemuArgs\/1 id "iv-net0" is one introvisor uses/],
    [['-device', 'virtserialport,chardev=c1,name=org.qemu.guest_agent.0'], /extraQemuArgs\/1 defines a second guest agent port/],
    [['-drive', 'if=pflash,file=/tmp/f'], /extraQemuArgs\/1 is a firmware flash drive/],
    [['-device'], /extraQemuArgs\/0 "-device" needs a value/],
    [['virtio-rng-pci'], /extraQemuArgs\/0 "virtio-rng-pci" is not an option/],
  ];
  for (const [args, re] of bad) t.match(errorOf(() => parse({ image: { disk: { golden: 'g' } }, extraQemuArgs: args })), re, args.join(' '));
  t.doesNotThrow(() => parse({ image: { disk: { golden: 'g' } }, extraQemuArgs: ['-device', 'virtio-rng-pci', '-rtc', 'base=utc'] }));
});

t.test('preflight names the guest and field: missing golden image, wrong format, firmware not installed, data disk gone', async (t) => {
  const spec = (g: Parameters<typeof guestVmSpec>[0], ovmf?: { code: string; varsTemplate: string }): string =>
    preflightVmSpec(guestVmSpec(g, runRoot, { dieWithParent: true, ...(ovmf ? { ovmf } : {}) })).join('\n');
  t.match(spec({ name: 'a', image: { disk: { golden: join(dir, 'nope.qcow2') } } }), /^guest a: \/image\/disk\/golden: \S+nope\.qcow2 does not exist$/m);
  t.match(spec({ name: 'a', image: { disk: { golden: rawGolden } } }), /^guest a: \/image\/disk\/golden: \S+golden\.raw is not a qcow2 image \(give "format": "raw" for a raw one\)$/m);
  t.match(spec({ name: 'a', image: { disk: { golden, format: 'raw' } } }), /^guest a: \/image\/disk\/golden: \S+golden\.qcow2 is a qcow2 image, not raw$/m);
  t.match(spec({ name: 'a', image: { disk: { golden }, firmware: 'uefi' } }, { code: join(dir, 'no-ovmf/CODE.fd'), varsTemplate: join(dir, 'no-ovmf/VARS.fd') }),
    /^guest a: \/image\/firmware: UEFI firmware \S+CODE\.fd does not exist \(apt-get install ovmf\)$/m);
  t.match(spec({ name: 'a', image: { disk: { golden } }, disks: [{ path: join(dir, 'gone.raw'), format: 'raw' }] }), /^guest a: \/disks\/0\/path: \S+gone\.raw does not exist$/m);
  t.match(spec({ name: 'a', image: { kernel: join(dir, 'vmlinuz'), initrd: join(dir, 'initrd'), baseImage: golden } }), /^guest a: \/image\/kernel: \S+vmlinuz does not exist$/m);
  t.equal(spec({ name: 'a', image: { disk: { golden } }, disks: [{ path: data, format: 'raw' }] }), '', 'a good definition passes');
});

t.test('a supervisor with one bad guest starts nothing and says which guest and field', async (t) => {
  const sdir = join(dir, 'sup');
  mkdirSync(sdir, { recursive: true });
  const p = join(sdir, 'supervisor.json');
  writeFileSync(p, JSON.stringify({
    version: 1, database: 'x.db', runDir: 'run', guests: [
      { name: 'good', image: { disk: { golden } } },
      { name: 'bad', image: { disk: { golden: 'missing.qcow2' } } },
    ],
  }));
  const sup = new Supervisor(loadSupervisorConfig(p), { log: () => undefined });
  await t.rejects(sup.start(), /preflight: guest bad: \/image\/disk\/golden: \S+missing\.qcow2 does not exist/);
  await sup.stop();
  const guests = join(sdir, 'run', 'guests');
  const started = existsSync(guests) ? readdirSync(guests).filter((g) => existsSync(join(guests, g, 'qemu.pid'))) : [];
  t.same(started, [], 'no QEMU was started');
});
