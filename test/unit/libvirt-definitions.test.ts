// libvirt guests without a libvirtd: the config's `{"libvirt": "domain"}` kind and what it refuses,
// what is read from a domain's XML, and how virsh's replies are bounded and parsed.
import t from 'tap';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseSupervisorConfig } from '../../src/supervisor/config.js';
import { guestKind, guestVmSpec } from '../../src/vm/guest-vm-spec.js';
import { domainFacts } from '../../src/libvirt/domain-xml.js';
import { Virsh, VirshError, replyReturn, DEFAULT_LIBVIRT_URI, DEFAULT_LIBVIRT_STATE_DIR } from '../../src/libvirt/virsh.js';
import { TimeoutError } from '../../src/util/errors.js';

const parse = (guest: Record<string, unknown>, top: Record<string, unknown> = {}): ReturnType<typeof parseSupervisorConfig> =>
  parseSupervisorConfig({ version: 1, database: 'x.db', ...top, guests: [{ name: 'web', ...guest }] }, 'c.json');
const errorOf = (f: () => unknown): string => {
  try { f(); } catch (e) { return (e as Error).message; }
  return '(no error)';
};

t.test('config: a libvirt guest by domain name, the system libvirtd by default', async (t) => {
  const c = parse({ image: { libvirt: 'web-vm' }, critical: [{ name: 'nginx', start: ['/usr/bin/systemctl', 'start', 'nginx'] }] });
  const g = c.guests[0];
  if (!g) throw new Error('no guest');
  t.equal(g.image.libvirt, 'web-vm');
  t.equal(guestKind(g), 'libvirt');
  t.same(c.libvirt, { uri: DEFAULT_LIBVIRT_URI, stateDir: DEFAULT_LIBVIRT_STATE_DIR });
  t.throws(() => guestVmSpec(g, '/tmp/x', { dieWithParent: true }), /guest web: libvirt runs domain "web-vm"/);
  const c2 = parse({ image: { libvirt: 'web-vm' } }, { libvirt: { uri: 'qemu+unix:///system?socket=/x/sock', stateDir: 'state' } });
  t.equal(c2.libvirt.uri, 'qemu+unix:///system?socket=/x/sock');
  t.equal(c2.libvirt.stateDir, join(process.cwd(), 'state'), 'stateDir resolved against the config folder');
});

t.test('config: what the domain XML defines cannot be set, and one kind only', async (t) => {
  const e = errorOf(() => parse({ image: { libvirt: 'web-vm' }, memoryMiB: 512, disks: [{ path: '/x.raw' }], overlay: '/o.qcow2', extraQemuArgs: ['-S'] }));
  t.match(e, /\/guests\/0\/disks cannot be set for a libvirt guest/);
  t.match(e, /\/guests\/0\/overlay cannot be set for a libvirt guest/);
  t.match(e, /\/guests\/0\/memoryMiB cannot be set for a libvirt guest/);
  t.match(e, /\/guests\/0\/extraQemuArgs cannot be set for a libvirt guest/);
  t.match(errorOf(() => parse({ image: { libvirt: 'web-vm', lab: true } })), /\/guests\/0\/image needs exactly one of .* \(found lab and libvirt\)/);
  t.match(errorOf(() => parse({ image: { libvirt: 'web vm; rm' } })), /\/guests\/0\/image\/libvirt must match pattern/);
  t.match(errorOf(() => parse({ image: { libvirt: 'x' } }, { libvirt: { uri: 'not a uri' } })), /\/libvirt\/uri must match pattern/);
});

const DOMAIN = `<domain type='qemu'><name>web-vm</name>
  <memory unit='KiB'>262144</memory>
  <memoryBacking><source type='file'/><access mode='shared'/></memoryBacking>
  <devices>
    <disk type='file' device='cdrom'><driver name='qemu' type='raw'/><source file='/iso/d.iso'/><target dev='sda'/></disk>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/var/lib/libvirt/images/web.qcow2'/><target dev='vda' bus='virtio'/></disk>
    <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='/srv/data.raw'/><target dev='vdb' bus='virtio'/></disk>
    <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>
  </devices></domain>`;

t.test('domain XML: shared file memory, agent channel, boot disk, on_reboot', async (t) => {
  t.same(domainFacts(DOMAIN), {
    name: 'web-vm', fileMemory: true, sharedMemory: true, agentChannel: true,
    bootDisk: { file: '/var/lib/libvirt/images/web.qcow2', format: 'qcow2' }, onReboot: 'restart',
  });
  const bare = domainFacts("<domain type='kvm'><name>x</name><on_reboot>destroy</on_reboot><devices><channel type='spicevmc'><target type='virtio' name='com.redhat.spice.0'/></channel></devices></domain>");
  t.same(bare, { name: 'x', fileMemory: false, sharedMemory: false, agentChannel: false, bootDisk: null, onReboot: 'destroy' });
  // Shared per NUMA cell counts; one private cell does not.
  const numa = (b: string): boolean => domainFacts(`<domain><memoryBacking><source type='file'/></memoryBacking><cpu><numa><cell id='0' memory='1' memAccess='shared'/>${b}</numa></cpu></domain>`).sharedMemory;
  t.equal(numa(''), true);
  t.equal(numa("<cell id='1' memory='1'/>"), false);
  t.match(errorOf(() => domainFacts('<network><name>default</name></network>')), /not a libvirt domain XML/);
  t.match(errorOf(() => domainFacts('')), /not a libvirt domain XML/);
});

t.test('virsh replies: return, error, garbage and hostile shapes', async (t) => {
  t.same(replyReturn('{"return":{"pid":12},"id":"libvirt-1"}\n\n', 'x'), { pid: 12 });
  t.match(errorOf(() => replyReturn('{"error":{"class":"GenericError","desc":"no"}}', 'guest agent guest-exec')), /guest agent guest-exec: GenericError: no/);
  t.match(errorOf(() => replyReturn('', 'x')), /x: empty reply/);
  t.match(errorOf(() => replyReturn('not json', 'x')), /x: reply is not JSON/);
  t.match(errorOf(() => replyReturn('[1]', 'x')), /not an object/);
  t.match(errorOf(() => replyReturn(`{"return":${'['.repeat(100)}${']'.repeat(100)}}`, 'x')), /nested deeper/);
});

t.test('virsh runs bounded: a deadline, a reply size limit, its error text', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'iv-virsh-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  // A stand-in program in virsh's place: what it does is chosen by the command's first word.
  const fake = join(dir, 'virsh');
  writeFileSync(fake, `#!/bin/sh
shift 3
case "$1" in
  sleep) sleep 30 ;;
  big) head -c 3000000 /dev/zero ;;
  fail) echo "error: failed to get domain 'nosuch'" >&2; exit 1 ;;
  *) echo "$@" ;;
esac
`);
  chmodSync(fake, 0o755);
  const v = new Virsh({ uri: 'qemu:///system', stateDir: '/run/libvirt/qemu' }, fake);
  t.equal((await v.run(['domstate', 'web'], 5_000)).trim(), 'domstate web');
  const t0 = Date.now();
  await t.rejects(v.run(['sleep'], 300), TimeoutError);
  t.ok(Date.now() - t0 < 5_000, 'killed at its deadline');
  await t.rejects(v.run(['big'], 5_000, 1 << 20), /reply over 1048576 bytes refused/);
  const e = await v.run(['fail', 'x'], 5_000).catch((x: unknown) => x);
  t.ok(e instanceof VirshError);
  t.match((e as Error).message, /virsh fail x: failed to get domain 'nosuch'/);
  t.equal((e as VirshError).unreachable, false);
});
