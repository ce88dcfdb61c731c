// A libvirtd of the test's own: Debian's daemon, run as root in a private mount
// namespace where /etc/libvirt, /run/libvirt, /var/lib/libvirt, /var/cache/libvirt
// and /var/log/libvirt are folders of the test. It listens on its own socket,
// keeps its own domains and pid files, and never meets a libvirtd of the machine.
// Stopped by its pid (its domains destroyed first).
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Virsh } from '../../src/libvirt/virsh.js';
import { findOnPath } from '../../src/util/exec.js';
import { cacheDir } from '../../src/util/paths.js';
import { processAlive, readPid } from '../../src/util/pid.js';
import { sleep } from '../../src/util/deadline.js';

const BOUND = ['etc', 'run', 'lib', 'cache', 'log'] as const;
const TARGET: Record<(typeof BOUND)[number], string> = {
  etc: '/etc/libvirt', run: '/run/libvirt', lib: '/var/lib/libvirt', cache: '/var/cache/libvirt', log: '/var/log/libvirt',
};

export class PrivateLibvirtd {
  private constructor(readonly root: string, readonly pid: number, readonly memoryBackingDir: string, readonly virsh: Virsh) {}

  get uri(): string { return this.virsh.conn.uri; }
  get stateDir(): string { return this.virsh.conn.stateDir; }
  get socket(): string { return join(this.root, 'run', 'libvirt-sock'); }

  /** Starts libvirtd under `root` (a folder libvirt-qemu can traverse) with RAM files in memoryBackingDir (a tmpfs). */
  static async start(root: string, memoryBackingDir: string, timeoutMs = 60_000): Promise<PrivateLibvirtd> {
    for (const p of ['libvirtd', 'virsh', 'unshare']) {
      if (!findOnPath(p)) throw new Error(`${p} not found (scripts/setup.sh installs libvirt-daemon, libvirt-clients)`);
    }
    for (const d of BOUND) mkdirSync(join(root, d), { recursive: true });
    // QEMU's capabilities, which libvirtd probes at its first define (minutes on a loaded TCG
    // host), are kept across runs; libvirt re-probes when the QEMU or libvirt binaries change.
    const caps = join(cacheDir(), 'libvirt-test-cache');
    mkdirSync(caps, { recursive: true });
    mkdirSync(memoryBackingDir, { recursive: true });
    chmodSync(root, 0o755);
    writeFileSync(join(root, 'etc', 'libvirtd.conf'), [
      'unix_sock_rw_perms = "0700"', 'auth_unix_ro = "none"', 'auth_unix_rw = "none"', '',
    ].join('\n'));
    // RAM as shared files on a tmpfs; QEMU's output to a file (no virtlogd); no cgroups or
    // namespaces for QEMU and no security driver: none of these exist in the test's container.
    writeFileSync(join(root, 'etc', 'qemu.conf'), [
      `memory_backing_dir = "${memoryBackingDir}"`, 'stdio_handler = "file"', 'cgroup_controllers = [ ]',
      'namespaces = [ ]', 'security_driver = "none"', '',
    ].join('\n'));
    const binds = BOUND.map((d) => `mkdir -p ${TARGET[d]} && mount --bind ${d === 'cache' ? caps : join(root, d)} ${TARGET[d]}`).join(' && ');
    // No /dev/kvm for this daemon (a file libvirt-qemu cannot open in its place): here it is a
    // restricted nested KVM that QEMU cannot use, and libvirt, finding /dev/kvm usable while its
    // probe found KVM missing, would throw its capabilities away and probe QEMU again (a minute
    // under load) at every define. Domains here are TCG (type='qemu').
    const noKvm = join(root, 'no-kvm');
    writeFileSync(noKvm, '');
    chmodSync(noKvm, 0o000);
    const hideKvm = `if [ -e /dev/kvm ]; then mount --bind ${noKvm} /dev/kvm; fi`;
    const daemon = `exec libvirtd --config ${join(root, 'etc', 'libvirtd.conf')} --pid-file ${join(root, 'run', 'libvirtd.pid')}`;
    const child = spawn('unshare', ['-m', '--propagation', 'private', 'sh', '-c', `${binds} && ${hideKvm} && ${daemon}`], {
      stdio: ['ignore', 'ignore', 'ignore'], detached: false,
    });
    if (child.pid === undefined) throw new Error('libvirtd: not started');
    const d = new PrivateLibvirtd(root, child.pid, memoryBackingDir,
      new Virsh({ uri: `qemu+unix:///system?socket=${join(root, 'run', 'libvirt-sock')}`, stateDir: join(root, 'run', 'qemu') }));
    const until = Date.now() + timeoutMs;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`libvirtd exited ${child.exitCode} at start`);
      try {
        await d.virsh.run(['list', '--all'], 10_000);
        return d;
      } catch (e) {
        if (Date.now() > until) {
          await d.stop();
          throw new Error(`libvirtd did not answer on ${d.socket} within ${timeoutMs} ms: ${(e as Error).message}`);
        }
      }
      await sleep(500);
    }
  }

  /** Defines a domain from its XML. */
  async define(name: string, xml: string): Promise<void> {
    const file = join(this.root, `${name}.xml`);
    writeFileSync(file, xml);
    // The first define has libvirtd probe QEMU's capabilities (minutes on a loaded TCG host).
    await this.virsh.run(['define', file], 300_000);
  }

  /** Destroys its running domains, stops libvirtd by its pid and any QEMU it left, removes the RAM folder. */
  async stop(): Promise<void> {
    // Domains' QEMUs (<stateDir>/<dom>.pid) and the QEMU libvirtd runs to probe capabilities
    // (<lib>/qemu/qmp-*/qmp.pid), which outlives a daemon stopped while probing.
    const pidFiles = [
      ...(existsSync(this.stateDir) ? readdirSync(this.stateDir).filter((f) => f.endsWith('.pid')).map((f) => join(this.stateDir, f)) : []),
      ...(existsSync(join(this.root, 'lib', 'qemu')) ? readdirSync(join(this.root, 'lib', 'qemu')).filter((f) => f.startsWith('qmp-')).map((f) => join(this.root, 'lib', 'qemu', f, 'qmp.pid')) : []),
    ];
    const qemuPids = pidFiles.map((f) => readPid(f)).filter((p): p is number => p !== undefined);
    try {
      const names = (await this.virsh.run(['list', '--name'], 10_000)).split('\n').map((s) => s.trim()).filter(Boolean);
      for (const n of names) await this.virsh.run(['destroy', n], 30_000).catch(() => undefined);
    } catch { /* libvirtd gone: its QEMUs are killed below */ }
    for (const pid of [this.pid, ...qemuPids]) {
      if (!processAlive(pid)) continue;
      // Only a QEMU of this daemon: the pid file's process must still be a QEMU.
      let cmdline = '';
      try { cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8'); } catch { continue; }
      if (pid !== this.pid && !cmdline.includes('qemu-system')) continue;
      try { process.kill(pid, 'SIGTERM'); } catch { /* gone */ }
      const until = Date.now() + 10_000;
      while (processAlive(pid) && Date.now() < until) await sleep(100);
      if (processAlive(pid)) try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
    }
    rmSync(this.memoryBackingDir, { recursive: true, force: true });
  }
}
