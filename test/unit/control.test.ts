// The control socket's protocol and views, over a real unix socket with a
// scripted guest: the mode of the socket, requests checked and bounded, every
// operator action recorded with its outcome, the cross views of processes and modules.
import t from 'tap';
import { closeSync, mkdtempSync, openSync, rmSync, statSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { loadNative } from '../../src/native/binding.js';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { taskStateLetter } from '../../src/views/task-state.js';
import { MAX_REQUEST_BYTES, controlSocketPath, parseRequest } from '../../src/control/protocol.js';
import { ControlOperations } from '../../src/control/operations.js';
import { startControlServer } from '../../src/control/server.js';
import { controlRequest } from '../../src/control/client.js';
import { moduleView, processView } from '../../src/control/views.js';
import type { ConsoleGuest, GuestObservation } from '../../src/control/types.js';
import type { EventInput } from '../../src/events/types.js';
import { payloadProblem } from '../../src/events/schemas.js';
import { initialLadderState } from '../../src/policy/ladder.js';
import type { KernelSnapshot, TaskInfo } from '../../src/views/types.js';

t.test('ps letters from task state bits', async (t) => {
  t.equal(taskStateLetter(0), 'R');
  t.equal(taskStateLetter(1), 'S');
  t.equal(taskStateLetter(0x2001), 'S', 'interruptible + freezable (8193)');
  t.equal(taskStateLetter(0x402), 'I', 'TASK_IDLE (1026): an idle kernel thread, not D');
  t.equal(taskStateLetter(2), 'D');
  t.equal(taskStateLetter(4), 'T');
  t.equal(taskStateLetter(8), 't');
  t.equal(taskStateLetter(0, 0x20), 'Z');
  t.equal(taskStateLetter(-1), '?');
  t.equal(taskStateLetter(2 ** 40), '?');
});

t.test('requests are schema-checked, naming what is wrong', async (t) => {
  t.same(parseRequest('{"op":"view","guest":"demo","view":"ps"}'), { op: 'view', guest: 'demo', view: 'ps' });
  t.throws(() => parseRequest('nope'), /not JSON/);
  t.throws(() => parseRequest('{"op":"view","guest":"demo","view":"secrets"}'), /op view.*not valid/);
  t.throws(() => parseRequest('{"op":"action","guest":"demo","action":"rm-rf"}'), /not valid/);
  t.throws(() => parseRequest('{"op":"guests","extra":1}'), /not valid/);
  t.throws(() => parseRequest('{"op":"exec","guest":"../x","argv":["/bin/true"]}'), /not valid/);
  t.throws(() => parseRequest('{"op":"exec","guest":"demo","argv":[]}'), /not valid/);
});

const task = (pid: number, comm: string, state: number, kernelThread = false): TaskInfo => ({
  address: 0xffff888000000000n + BigInt(pid) * 0x1000n, pid, tgid: pid, ppid: 1, comm, state, uid: 0, mm: kernelThread ? 0n : 1n, pgd: 0n, startTimeNs: 0n, kernelThread,
});
const mod = (name: string, a: bigint): { name: string; address: bigint; coreBase: bigint; coreSize: number } => ({ name, address: a, coreBase: a + 0x1000n, coreSize: 4096 });

function observation(): GuestObservation {
  const snapshot = {
    takenAtMs: 1, kernel: { banner: 'Linux', release: '6.1.0-test', kaslrSlide: 0n, pagingLevels: 4 },
    tasks: { tasks: [task(1, 'init', 0x2001), task(2, 'kthreadd', 0x402, true), task(40, 'csdtest', 1)], threads: [], errors: [] },
    pidIdr: { entries: [], errors: [] }, runQueues: { cpus: [], errors: [] },
    modules: { modules: [mod('e1000', 0xffffffffc0000000n)], kobjects: [mod('e1000', 0xffffffffc0000000n), mod('rootkit', 0xffffffffc0100000n)], errors: [] },
    syscallTables: [], integrity: { textHash: null, rodataHash: null, dispatchers: [], idt: [], lstar: null, errors: [] },
  } as KernelSnapshot;
  return {
    startedAtMs: 1000, durationMs: 12, snapshot, snapshotError: null, findings: [],
    report: { takenAtMs: 1000, agent: 'ok', processes: [{ pid: 1, ppid: 0, comm: 'init', state: 'S' }, { pid: 2, ppid: 0, comm: 'kthreadd', state: 'I' }, { pid: 40, ppid: 1, comm: 'csdtest', state: 'S' }, { pid: 77, ppid: 1, comm: 'hidden', state: 'S' }] },
  };
}

t.test('cross views: a pid on one side only, a module off the list', async (t) => {
  const v = processView(observation());
  t.same(v.rows.map((r) => `${r.pid}:${r.outside ?? '-'}${r.inside ?? '-'}${r.mismatch ? '!' : ''}`), ['1:SS', '2:II', '40:SS', '77:-S!']);
  const down = processView({ ...observation(), report: { takenAtMs: 1, agent: 'down', error: 'agent socket closed' } });
  t.equal(down.insideError, 'agent socket closed');
  t.notOk(down.rows.some((r) => r.mismatch), 'one side unread: nothing is called a mismatch');
  t.same(processView(null).rows, []);
  const m = moduleView(observation());
  t.same(m.rows.map((r) => `${r.name}:${r.onList ? 'L' : '-'}${r.inSysfs ? 'S' : '-'}${r.mismatch ? '!' : ''}`), ['e1000:LS', 'rootkit:-S!']);
});

t.test('the socket: mode 0600, bounded lines, every operator action recorded', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'iv-control-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const events: EventInput[] = [];
  let watching = true;
  let released = 0;
  const guest: ConsoleGuest = {
    name: 'g1', scans: 3, get watching() { return watching; }, ladderState: initialLadderState('g1'), criticalNames: ['csdtest'],
    latestObservation: observation, trapState: () => ({ status: 'unavailable', detail: 'no write trap in this host kernel' }),
    progress: () => ({ action: 'boot', phase: null, elapsedMs: 3000, expectedMs: 12000, percent: 25, note: 'Run /init as init process' }),
    runAction: async (kind, _target, onProgress) => { onProgress?.({ action: kind, phase: null, elapsedMs: 1000, expectedMs: 2000, percent: 50, note: 'booting' }); return { ok: kind !== 'restore-image', detail: 'done', error: kind === 'restore-image' ? 'no golden image' : null, durationMs: 5 }; },
    releaseHold: async () => { released++; if (released > 1) throw new Error('guest g1 is not held'); return 'hold released'; },
    acceptBaseline: async () => 'baseline recorded',
    pauseWatching: () => { watching = false; }, resumeWatching: () => { watching = true; },
    exec: async (argv) => ({ exitCode: 0, signal: null, stdout: Buffer.from(argv.join(' ')), stderr: Buffer.alloc(0), truncated: false }),
  };
  const ops = new ControlOperations({ guests: [guest], record: (e) => events.push(...e) });
  const path = controlSocketPath(join(dir, 'run'));
  const server = await startControlServer(path, ops);
  t.teardown(() => server.close());
  t.equal(statSync(path).mode & 0o777, 0o600, 'socket mode 0600');
  await t.rejects(startControlServer(path, ops), /another supervisor answers/, 'a second server refuses to take over a live socket');

  const gs = await controlRequest(path, { op: 'guests' }) as { name: string; trap: { status: string; detail: string }; progress: unknown }[];
  t.same(gs.map((g) => [g.name, g.trap.status, g.trap.detail]), [['g1', 'unavailable', 'no write trap in this host kernel']]);
  t.same(gs[0]?.progress, { action: 'boot', phase: null, elapsedMs: 3000, expectedMs: 12000, percent: 25, note: 'Run /init as init process' }, 'the work under way, in the summary');
  const ps = await controlRequest(path, { op: 'view', guest: 'g1', view: 'ps' }) as { rows: { pid: number; mismatch: boolean }[] };
  t.same(ps.rows.filter((r) => r.mismatch).map((r) => r.pid), [77]);
  await t.rejects(controlRequest(path, { op: 'view', guest: 'nope', view: 'ps' }), /no supervised guest "nope"/);

  t.same(await controlRequest(path, { op: 'pause', guest: 'g1' }), { watching: false });
  t.equal(watching, false);
  await controlRequest(path, { op: 'resume', guest: 'g1' });
  t.same(await controlRequest(path, { op: 'exec', guest: 'g1', argv: ['/bin/echo', 'hi'] }), { exitCode: 0, signal: null, stdout: '/bin/echo hi', stderr: '', truncated: false });
  await controlRequest(path, { op: 'release', guest: 'g1' });
  await t.rejects(controlRequest(path, { op: 'release', guest: 'g1' }), /not held/);
  await t.rejects(controlRequest(path, { op: 'action', guest: 'g1', action: 'restore-image' }), /no golden image/);
  await controlRequest(path, { op: 'action', guest: 'g1', action: 'reboot-os' });
  await t.rejects(controlRequest(path, { op: 'action', guest: 'ghost', action: 'reboot-os' }), /no supervised guest/);

  const ops2 = events.map((e) => { t.equal(payloadProblem(e.kind, e.payload), null, 'schema-valid event'); return e.payload as { operation: string; outcome: string; who: string; guest: string | null; detail: string | null }; });
  t.same(ops2.map((p) => `${p.operation}:${p.outcome}`), ['pause:ok', 'resume:ok', 'exec:ok', 'release:ok', 'release:failed', 'action:failed', 'action:ok', 'action:refused']);
  // The peer is what the kernel says (SO_PEERCRED), not what the client claims: here, this process.
  const uid = process.getuid?.() ?? -1;
  t.equal(ops2[0]?.who, `local cli uid ${uid} pid ${process.pid}`, 'who: the verified uid and pid');
  t.same((events[0]?.payload as { peer: unknown }).peer, { uid, pid: process.pid }, 'peer recorded in the event');
  t.equal(ops2[2]?.detail, '/bin/echo hi');
  t.equal(ops2[7]?.guest, null);

  // Raw lines: not JSON, an unknown op, and one over the size limit (answered, then the connection closes).
  const raw = (data: string): Promise<string> => new Promise((resolve, reject) => {
    const s = connect(path);
    let got = '';
    s.on('data', (d) => { got += d.toString(); });
    s.on('close', () => resolve(got));
    s.on('error', reject);
    s.on('connect', () => { s.write(data); setTimeout(() => s.end(), 300); });
  });
  t.match(await raw('hello\n{"op":"reboot-everything"}\n'), /request is not JSON[\s\S]*op reboot-everything\) is not valid/);
  const big = await raw(`{"op":"guests","pad":"${'x'.repeat(MAX_REQUEST_BYTES)}"}\n`);
  t.match(big, new RegExp(`longer than ${MAX_REQUEST_BYTES} bytes`));
  t.equal(events.length, 8, 'refused requests act on nothing');

  // A client that claims another pid: recorded as a claim next to the kernel's pid.
  t.match(await raw('{"op":"pause","guest":"g1","client":{"name":"cli","pid":1}}\n'), /"ok":true/);
  t.equal((events[8]?.payload as { who: string }).who, `local cli uid ${uid} pid ${process.pid} (claims pid 1)`);
  // Another process: its own pid, whatever it says.
  // (Asynchronously: the server answering it lives in this process.)
  const child = await new Promise<{ pid: number; stdout: string; stderr: string }>((resolve, reject) => {
    const c = spawn(process.execPath, ['-e', `
      const s = require('node:net').connect(${JSON.stringify(path)});
      s.on('connect', () => s.write(JSON.stringify({ op: 'resume', guest: 'g1', client: { name: 'cli', pid: 4242 } }) + '\\n'));
      s.on('data', (d) => { process.stdout.write(d); s.end(); });`], { stdio: ['ignore', 'pipe', 'pipe'], timeout: 20_000 });
    let stdout = '';
    let stderr = '';
    c.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    c.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    c.once('error', reject);
    c.once('close', () => resolve({ pid: c.pid ?? -1, stdout, stderr }));
  });
  t.match(child.stdout, /"ok":true/, `child: ${child.stderr}`);
  t.same((events[9]?.payload as { peer: unknown }).peer, { uid, pid: child.pid }, 'the child\'s pid, from the kernel');
  t.equal((events[9]?.payload as { who: string }).who, `local cli uid ${uid} pid ${child.pid} (claims pid 4242)`);
  for (const e of events) t.equal(payloadProblem(e.kind, e.payload), null, 'schema-valid event');

  // Progress lines before the reply, only when asked for.
  const seen: unknown[] = [];
  t.match(await controlRequest(path, { op: 'action', guest: 'g1', action: 'reboot-os', progress: true }, 5_000, (p) => seen.push(p)), { action: 'reboot-os' });
  t.same(seen, [{ action: 'reboot-os', phase: null, elapsedMs: 1000, expectedMs: 2000, percent: 50, note: 'booting' }], 'the progress line, then the reply');
  await controlRequest(path, { op: 'action', guest: 'g1', action: 'reboot-os' }, 5_000, (p) => seen.push(p));
  t.equal(seen.length, 1, 'none unasked');
});

t.test('peerCredentials: bounds-checked, unix sockets only', async (t) => {
  const native = loadNative();
  t.throws(() => native.peerCredentials(-1), /whole number/);
  t.throws(() => native.peerCredentials(1.5), /whole number/);
  t.throws(() => native.peerCredentials(2 ** 31), /whole number/);
  t.throws(() => (native.peerCredentials as (x: unknown) => unknown)('3'), /peerCredentials\(fd: number\)/);
  const fd = openSync(process.execPath, 'r');
  t.teardown(() => closeSync(fd));
  t.throws(() => native.peerCredentials(fd), /not a socket|Socket operation on non-socket/, 'a file is refused');
});

t.test('demo attacks: the command each plays in the guest', async (t) => {
  const { attackCommand } = await import('../../src/control/demo.js');
  t.equal(attackCommand('kill-critical', ['csdtest'], '/lib/introvisor'), 'kill -9 $(pidof csdtest)');
  t.throws(() => attackCommand('kill-critical', [], '/lib/introvisor'), /no critical process/);
  t.equal(attackCommand('hook-syscall', [], '/m'), 'insmod /m/iv_syscall_hook.ko nrs=39,62');
  t.match(attackCommand('hide-process', [], '/m'), /^sleep 100000 .*& insmod \/m\/iv_dkom_hide\.ko pid=\$!$/);
  t.equal(attackCommand('hide-module', [], '/m'), 'insmod /m/iv_hide_module.ko');
});
