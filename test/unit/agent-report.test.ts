// The guest's process report as the supervisor obtains it (QemuGuestController
// .report(): one guest-exec of a /proc read through the agent), against a
// hostile agent on real unix sockets: 150,000 processes with a 1 MB name come
// back cut to the bounds and marked malformed; text that is no /proc at all is
// a malformed report, not an agent that is down. The QEMU is adopted: a real
// process, its pid file and a scripted QMP socket (no guest boot needed).
import t from 'tap';
import { spawn } from 'node:child_process';
import { createServer, type Server } from 'node:net';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { QemuVm, type VmSpec } from '../../src/vm/qemu-vm.js';
import { guestLayout } from '../../src/vm/guest-layout.js';
import { QemuGuestController } from '../../src/recovery/qemu-controller.js';
import { GUEST_REPORT_LIMITS } from '../../src/detectors/guest-report.js';

const dir = mkdtempSync(join(tmpdir(), 'iv-agent-report-'));
process.env.INTROVISOR_SHM = join(dir, 'shm');
mkdirSync(process.env.INTROVISOR_SHM);
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

function lineServer(path: string, onLine: (msg: { execute: string; id?: string; arguments?: Record<string, unknown> }, write: (b: string | Buffer) => void) => void, greeting?: string): Promise<Server> {
  const srv = createServer((sock) => {
    sock.on('error', () => undefined);
    if (greeting) sock.write(greeting);
    let buf = '';
    sock.on('data', (d: Buffer) => {
      buf += d.toString();
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        onLine(JSON.parse(line), (b) => sock.write(b));
      }
    });
  });
  return new Promise((r) => srv.listen(path, () => r(srv)));
}

async function adoptedGuest(t: { teardown(fn: () => unknown): void }, name: string, psText: string): Promise<QemuGuestController> {
  const layout = guestLayout(join(dir, 'run'), name);
  const spec: VmSpec = {
    name, boot: { kind: 'kernel', kernel: '/none', initrd: '/none', kernelArgs: [] }, baseImage: '/none', baseFormat: 'qcow2', overlay: layout.overlay,
    disks: [], network: null, consoleLog: layout.consoleLog, extraArgs: [], memoryMiB: 64, cpus: 1,
    accel: 'tcg', cpuModel: 'max', layout, qemuBinary: 'qemu-system-x86_64', dieWithParent: true,
  };
  mkdirSync(layout.dir, { recursive: true });
  const qemu = spawn('sleep', ['300'], { stdio: 'ignore' });
  t.teardown(() => { try { qemu.kill('SIGKILL'); } catch { /* gone */ } });
  writeFileSync(layout.pidFile, `${qemu.pid}\n`);
  const qmp = await lineServer(layout.qmpSocket, (m, w) => w(JSON.stringify({ return: {}, id: m.id }) + '\n'), '{"QMP": {"version": {}, "capabilities": []}}\n');
  const out = Buffer.from(psText).toString('base64');
  const agent = await lineServer(layout.agentSocket, (m, w) => {
    if (m.execute === 'guest-sync-delimited') w(Buffer.concat([Buffer.from([0xff]), Buffer.from(JSON.stringify({ return: m.arguments?.id }) + '\n')]));
    else if (m.execute === 'guest-exec') w('{"return": {"pid": 42}}\n');
    else if (m.execute === 'guest-exec-status') w(`{"return": {"exited": true, "exitcode": 0, "out-data": "${out}"}}\n`);
    else w('{"error": {"class": "CommandNotFound", "desc": "no"}}\n');
  });
  t.teardown(() => { qmp.close(); agent.close(); });
  const ctl = new QemuGuestController(new QemuVm(spec));
  t.teardown(() => ctl.close({ stopGuest: false }));
  return ctl;
}

t.test('150,000 processes and a 1 MB name: cut to the bounds, marked malformed', async (t) => {
  const lines = ['1 (init) S 0 1 1 0', `2 (${'N'.repeat(1024 * 1024)}) S 1 2 2 0`];
  for (let i = 0; i < 150_000; i++) lines.push(`${1000 + i} (fake${i}) S 1 0 0 0`);
  const ctl = await adoptedGuest(t, 'flood', lines.join('\n') + '\n');
  t.equal(await ctl.ensureRunning(5_000), 'adopted');
  const r = await ctl.report(20_000);
  t.equal(r.agent, 'ok');
  if (r.agent !== 'ok') return;
  t.equal(r.processes.length, GUEST_REPORT_LIMITS.maxProcesses);
  t.equal(r.processes[1]?.comm, 'N'.repeat(63));
  t.match(r.malformed, { complete: false, reasons: [/150002 processes reported/, /1 process name longer than 63 bytes/] });
});

t.test('text that is no /proc: a malformed report, not agent down', async (t) => {
  const ctl = await adoptedGuest(t, 'liar', 'hello from a hostile agent\n');
  t.equal(await ctl.ensureRunning(5_000), 'adopted');
  const r = await ctl.report(10_000);
  t.equal(r.agent, 'ok');
  if (r.agent !== 'ok') return;
  t.same(r.processes, []);
  t.match(r.malformed, { complete: false, reasons: [/guest liar \/proc: not a \/proc\/PID\/stat line: "hello from a hostile agent"/] });
});
