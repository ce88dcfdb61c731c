// The supervisor side of the write trap against a real KVM: spawns the tiny
// VMM (test/trap/node/vmm.c), attaches to it by pid through the native
// binding, arms ranges, makes the guest write, and checks what the kernel
// logged. Also drives the watchdog's SyscallTableTrap over the same VM.
//   node check-binding.js <vmm> patched   (kernel with kernel-patches/)
//   node check-binding.js <vmm> stock     (kernel without: "trap unavailable")
// Prints TAP ("ok N - ..."), exits 0 only if every check passed.
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { TapLines } from './tap-lines.js';
import { openWriteTrap, type TrapRecord } from '../../../src/trap/write-trap.js';
import { SyscallTableTrap } from '../../../src/trap/syscall-table-trap.js';
import { analyzeScan } from '../../../src/detectors/index.js';
import { payloadProblem } from '../../../src/events/schemas.js';
import type { SyscallTableView } from '../../../src/views/types.js';

const [vmmPath, mode] = process.argv.slice(2);
if (!vmmPath || (mode !== 'patched' && mode !== 'stock')) {
  console.error('usage: check-binding.js <vmm> patched|stock');
  process.exit(2);
}

const tap = new TapLines(mode);
const check = tap.check.bind(tap);
function finish(): never {
  const passed = tap.plan();
  vmm.stdin.end('quit\n');
  process.exit(passed ? 0 : 1);
}

const t0 = Date.now();
const vmm = spawn(vmmPath, [], { stdio: ['pipe', 'pipe', 'inherit'] });
const lines = createInterface({ input: vmm.stdout })[Symbol.asyncIterator]();
async function next(): Promise<string> {
  const r = await lines.next();
  if (r.done) throw new Error('the VMM exited');
  return r.value.startsWith('#') ? next() : r.value;
}
async function store(off: number, val: number): Promise<{ port: number; ip: number; mem: number }> {
  vmm.stdin.write(`store ${off.toString(16)} ${val.toString(16)}\n`);
  const l = await next();
  const m = /^DONE port=0x([0-9a-f]+) ip=0x([0-9a-f]+) mem=0x([0-9a-f]+)$/.exec(l);
  if (!m) throw new Error(`VMM: ${l}`);
  return { port: parseInt(m[1]!, 16), ip: parseInt(m[2]!, 16), mem: parseInt(m[3]!, 16) };
}

const ready = /^READY pid=(\d+) table=0x([0-9a-f]+)/.exec(await next());
if (!ready) throw new Error('VMM did not get ready');
const pid = Number(ready[1]);
const TABLE = BigInt(parseInt(ready[2]!, 16));
const initial = (i: number): number => (0x81000000 + 0x10 * i) >>> 0; // low half of the VMM's table entries
const CODE_IP = 0x1000;
const VAL = 0x41414141;

const opened = openWriteTrap(pid);
if (mode === 'stock') {
  check('unavailable' in opened, 'attach on a KVM without the trap reports unavailable, does not throw', opened);
  if ('unavailable' in opened) {
    check(opened.error.step === 'attach' && ['EINVAL', 'ENOTTY'].includes(opened.error.code), `the refusal is the attach ioctl itself (${opened.error.code})`, opened.error);
    check(/has no introvisor write trap/.test(opened.unavailable), 'reason says the kernel has no write trap', opened.unavailable);
  }
  const logs: string[] = [];
  const guard = new SyscallTableTrap({ guest: 'vmm', action: 'gp', log: (l) => logs.push(l) });
  for (let i = 0; i < 3; i++) guard.update({ qemuPid: pid, bootGeneration: 1, tables: null, translate: null });
  check(logs.filter((l) => l.startsWith('trap unavailable: ')).length === 1 && guard.state.status === 'unavailable', '"trap unavailable" logged once over three scans', logs);
  finish();
}
if (!('ok' in opened)) {
  check(false, 'attach by pid (pidfd_getfd + INTROVISOR_TRAP_ATTACH)', opened);
  finish();
}
const trap = opened.ok;
check(true, `attach by pid (pidfd_getfd of QEMU fd ${trap.qemuPid})`);
const again = openWriteTrap(pid);
check('unavailable' in again && again.error.code === 'EBUSY', 'a second attach is refused (EBUSY)', again);

const GP_AT = TABLE + 0x100n;
const DROP_AT = TABLE + 0x200n;
trap.addRange({ gpa: GP_AT, len: 0x40, action: 'gp' });
trap.addRange({ gpa: DROP_AT, len: 0x40, action: 'drop' });
let overlap = '';
try { trap.addRange({ gpa: GP_AT + 8n, len: 8, action: 'gp' }); } catch (e) { overlap = String((e as { code?: string }).code); }
check(overlap === 'EEXIST', 'an overlapping range is refused with code EEXIST', overlap);
const listed = trap.list();
check(listed.length === 2 && listed[0]?.gpa === GP_AT && listed[0].action === 'gp' && listed[1]?.gpa === DROP_AT && listed[1].action === 'drop', 'list() returns both ranges with their actions', listed);

const recOk = (r: TrapRecord | undefined, gpa: bigint, action: 'gp' | 'drop'): boolean =>
  !!r && r.gpa === gpa && r.rip === BigInt(CODE_IP) && r.length === 4 && r.data.toString('hex') === '41414141' &&
  r.action === action && r.source === 'emulated' && r.instruction.subarray(0, 3).toString('hex') === '668905' && r.vcpu === 0 &&
  Math.abs(Number(r.timeNs / 1_000_000n) - Date.now()) < 60_000;

let s = await store(0x108, VAL);
check(s.port === 0x11 && s.ip === CODE_IP, 'gp range: the guest gets #GP at the store (IP stays)', s);
check(s.mem === initial(0x108 / 8), 'gp range: the protected entry is unchanged', s);
let d = trap.drain();
check(d.records.length === 1 && recOk(d.records[0], GP_AT + 8n, 'gp'), 'gp range: one record with gpa, rip, len, bytes, insn, action, time', d);

s = await store(0x208, VAL);
check(s.port === 0x10 && s.mem === initial(0x208 / 8), 'drop range: the store completes, the entry is unchanged', s);
d = trap.drain();
check(d.records.length === 1 && recOk(d.records[0], DROP_AT + 8n, 'drop'), 'drop range: one record', d);

s = await store(0x180, VAL);
d = trap.drain();
check(s.port === 0x10 && s.mem === VAL && d.records.length === 0, 'same page outside the ranges: the write lands, nothing logged', { s, d });
const st = trap.stats();
check(st.refused === 2n && st.ranges === 2 && st.apiVersion === 1 && st.lost === 0n, 'stats: 2 refused, 2 ranges, api 1', st);

trap.close();
s = await store(0x108, VAL);
check(s.mem === VAL, 'after close(): writes land again', s);

// The watchdog's guard over the same VM: a fake "kernel" whose sys_call_table
// (512 entries) sits at a kernel VA that translates to the VMM's table page.
const KVA = 0xffffffff82000000n;
const tables: SyscallTableView[] = [{
  table: 'sys_call_table', address: KVA, errors: [],
  entries: Array.from({ length: 512 }, (_, nr) => ({ nr, target: 0n, owner: { kind: 'unknown' as const }, expected: null })),
}];
const translate = (va: bigint): bigint | null => (va >= KVA && va < KVA + 0x1000n ? TABLE + (va - KVA) : null);
const logs: string[] = [];
const guard = new SyscallTableTrap({ guest: 'vmm', action: 'gp', log: (l) => logs.push(l) });
let u = guard.update({ qemuPid: pid, bootGeneration: 1, tables, translate });
check(u.status === 'armed' && guard.state.ranges.length === 1 && guard.state.ranges[0]?.gpa === TABLE && guard.state.ranges[0].len === 4096, 'guard: armed on the table page after a clean scan', { u, ranges: guard.state.ranges, logs });
s = await store(62 * 8, VAL);
check(s.port === 0x11 && s.mem === initial(62), 'guard: a write to slot 62 is refused (#GP)', s);
u = guard.update({ qemuPid: pid, bootGeneration: 1, tables, translate });
const ev = u.events[0];
check(u.events.length === 1 && ev?.kind === 'refused-write' && ev.payload.table === 'sys_call_table' && ev.payload.entry === 62 &&
  ev.payload.gva === `0x${(KVA + 62n * 8n).toString(16)}` && ev.payload.value === '41414141' && ev.payload.rip === '0x1000', 'guard: one refused-write event naming sys_call_table[62]', u.events);
check(ev !== undefined && payloadProblem('refused-write', ev.payload) === null, 'guard: the event passes the store schema');
const a = analyzeScan({ nowMs: Date.now(), snapshot: null, snapshotError: 'n/a', report: { takenAtMs: 0, agent: 'ok', processes: [] }, critical: [], baseline: null, refusedWrites: u.tally });
check(a.observations.some((o) => o.kind === 'syscall-write-refused'), 'guard: the tally becomes a syscall-write-refused observation');
guard.beforeKernelRestart();
s = await store(62 * 8, VAL);
check(s.mem === VAL, 'guard: disarmed before a kernel restart, writes land', s);
u = guard.update({ qemuPid: pid, bootGeneration: 2, tables, translate });
check(u.status === 'armed' && u.tally === null, 'guard: re-armed in the next boot generation, tally reset', u);
guard.close();
console.log(`# binding check took ${Date.now() - t0} ms`);
finish();
