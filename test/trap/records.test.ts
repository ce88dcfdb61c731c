// Unit tests of the pure parts of the write trap: decoding the kernel's
// 112-byte records (crafted buffers: truncated, hostile fields, lost counters),
// mapping records onto the protected tables, planning ranges from page
// translations, and the finding -> ladder mapping of a refused write.
import t from 'tap';
import {
  encodeTrapRecord, parseTrapRecords, TRAP_RECORD_BYTES, unavailableReason,
} from '../../src/trap/write-trap.js';
import { planTrapRanges, refusedWritePayload } from '../../src/trap/syscall-table-trap.js';
import { detectRefusedWrites } from '../../src/detectors/write-trap.js';
import { analyzeScan } from '../../src/detectors/index.js';
import { FindingTracker } from '../../src/detectors/findings.js';
import { DEFAULT_POLICY } from '../../src/policy/defaults.js';
import { validatePolicy } from '../../src/policy/schema.js';
import { initialLadderState, step } from '../../src/policy/ladder.js';
import { payloadProblem } from '../../src/events/schemas.js';
import type { SyscallTableView } from '../../src/views/types.js';

const rec = (seq: bigint, extra: Parameters<typeof encodeTrapRecord>[0] extends infer P ? Partial<P> : never = {}) =>
  encodeTrapRecord({ seq, gpa: 0x2a00108n, rip: 0xffffffffc0001234n, timeNs: 1_700_000_000_123_456_789n, vcpu: 1,
    length: 8, action: 'gp', source: 'emulated', instruction: Buffer.from('48890f', 'hex'), data: Buffer.from('4141414141414141', 'hex'), ...extra });

t.test('record layout matches the uapi struct (112 bytes, field offsets)', async (t) => {
  t.equal(TRAP_RECORD_BYTES, 112);
  const b = rec(7n, { rangeGpa: 0x2a00100n, lostBefore: 3, dataTruncated: true });
  t.equal(b.length, 112);
  t.equal(b.readBigUInt64LE(0), 7n, 'seq at 0');
  t.equal(b.readBigUInt64LE(16), 0x2a00108n, 'gpa at 16');
  t.equal(b.readBigUInt64LE(32), 0x2a00100n, 'range_gpa at 32');
  t.equal(b.readUInt16LE(48), 2, 'action at 48 (GP = 2)');
  t.equal(b.readUInt32LE(52), 3, 'lost_before at 52');
  t.equal(b[58], 1, 'flags at 58');
  t.equal(b.subarray(64, 67).toString('hex'), '48890f', 'insn at 64');
  t.equal(b.subarray(80, 88).toString('hex'), '4141414141414141', 'data at 80');
});

t.test('whole records decode with every field', async (t) => {
  const p = parseTrapRecords(Buffer.concat([rec(1n), rec(2n, { action: 'drop', source: 'cmpxchg', vcpu: 3 })]));
  t.same(p.problems, []);
  t.equal(p.records.length, 2);
  t.equal(p.lost, 0);
  t.equal(p.lastSeq, 2n);
  const r = p.records[1]!;
  t.equal(r.gpa, 0x2a00108n);
  t.equal(r.rip, 0xffffffffc0001234n);
  t.equal(r.action, 'drop');
  t.equal(r.source, 'cmpxchg');
  t.equal(r.vcpu, 3);
  t.equal(r.instruction.toString('hex'), '48890f');
  t.equal(r.data.toString('hex'), '4141414141414141');
});

t.test('a truncated buffer decodes its whole records and names the rest', async (t) => {
  const buf = Buffer.concat([rec(1n), rec(2n)]).subarray(0, 112 + 50);
  const p = parseTrapRecords(buf);
  t.equal(p.records.length, 1);
  t.match(p.problems[0], /162 bytes is not a whole number of 112-byte records; the trailing 50 bytes/);
  t.equal(parseTrapRecords(Buffer.alloc(0)).records.length, 0, 'empty read: nothing');
});

t.test('hostile fields are refused, naming record and field, never read past the record', async (t) => {
  const bad = [rec(1n), rec(2n), rec(3n), rec(4n)];
  bad[0]!.writeUInt16LE(9, 48); // action
  bad[1]!.writeUInt8(200, 56); // insn_len > 16
  bad[2]!.writeUInt8(33, 57); // data_len > 32
  bad[3]!.writeUInt16LE(0, 50); // source
  const p = parseTrapRecords(Buffer.concat([...bad, rec(5n)]));
  t.equal(p.records.length, 1, 'only the sane record');
  t.equal(p.records[0]!.seq, 5n);
  t.equal(p.problems.length, 4);
  t.match(p.problems[0], /trap record 0 \(offset 0\): \/action must be equal to one of the allowed values/);
  t.match(p.problems[1], /record 1 .*\/insnLen must be <= 16/);
  t.match(p.problems[2], /record 2 .*\/dataLen must be <= 32/);
  t.match(p.problems[3], /record 3 .*\/source/);
});

t.test('lost records: lost_before and gaps in seq, across reads', async (t) => {
  const a = parseTrapRecords(Buffer.concat([rec(1n), rec(2n)]));
  // the ring was full: 10 writes refused but not logged, then seq 13 says lost_before=10
  const b = parseTrapRecords(rec(13n, { lostBefore: 10 }), a.lastSeq);
  t.equal(b.lost, 10, 'lost_before and the seq gap agree: counted once');
  t.equal(b.records[0]!.lostBefore, 10);
  const c = parseTrapRecords(rec(20n), b.lastSeq);
  t.equal(c.lost, 6, 'a gap without lost_before still counts');
  t.equal(c.records[0]!.lostBefore, 6, 'and is carried by the record after the gap');
  const d = parseTrapRecords(Buffer.concat([rec(21n), rec(21n)]), c.lastSeq);
  t.equal(d.records.length, 1);
  t.match(d.problems[0], /seq 21 does not follow 21/, 'a repeated seq is refused');
  t.equal(parseTrapRecords(Buffer.concat([rec(1n), rec(2n), rec(3n)]), 0n, 2).records.length, 2, 'maxRecords bounds the decode');
});

const table = (name: SyscallTableView['table'], address: bigint, n: number): SyscallTableView => ({
  table: name, address, errors: [],
  entries: Array.from({ length: n }, (_, nr) => ({ nr, target: 0n, owner: { kind: 'unknown' as const }, expected: null })),
});

t.test('ranges: the table pages translated, contiguous pages merged, split ones kept apart', async (t) => {
  // sys_call_table at va ...e00 + 451 entries = 3608 bytes: crosses one page boundary.
  const va = 0xffffffff82200e00n;
  const contiguous = planTrapRanges([table('sys_call_table', va, 451)], (v) => v - 0xffffffff80000000n + 0x1000000n);
  t.same(contiguous.ranges.map((r) => [r.gpa, r.len, r.tableOffset]), [[0x3200e00n, 3608, 0]]);
  const split = planTrapRanges([table('sys_call_table', va, 451)], (v) => (v < 0xffffffff82201000n ? 0x5000e00n + (v - va) : 0x9000000n + (v - 0xffffffff82201000n)));
  t.same(split.ranges.map((r) => [r.gpa, r.len, r.tableOffset]), [[0x5000e00n, 512, 0], [0x9000000n, 3096, 512]]);
  const hole = planTrapRanges([table('sys_call_table', va, 451), table('ia32_sys_call_table', 0xffffffff82300000n, 10)], (v) => (v >= 0xffffffff82201000n && v < 0xffffffff82300000n ? null : v & 0xfffffffn));
  t.equal(hole.ranges.length, 1, 'an unmapped page drops that table only');
  t.equal(hole.ranges[0]!.table, 'ia32_sys_call_table');
  t.match(hole.problems[0], /sys_call_table@0xffffffff82200e00: page at 0xffffffff82201000 is not mapped/);
});

t.test('a record becomes a refused-write event with table, slot and gva; the store schema accepts it', async (t) => {
  const va = 0xffffffff82200e00n;
  const plan = planTrapRanges([table('sys_call_table', va, 451)], (v) => (v < 0xffffffff82201000n ? 0x5000e00n + (v - va) : 0x9000000n + (v - 0xffffffff82201000n))).ranges;
  const p = parseTrapRecords(Buffer.concat([rec(1n, { gpa: 0x5000e00n + 62n * 8n }), rec(2n, { gpa: 0x9000000n + 8n, length: 0, data: Buffer.alloc(0), source: 'unemulated', instructionUndecoded: true })]));
  const [kill, late] = p.records.map((r) => refusedWritePayload('g1', r, plan));
  t.equal(kill!.table, 'sys_call_table');
  t.equal(kill!.entry, 62, 'slot 62 (kill)');
  t.equal(kill!.gva, '0xffffffff82200ff0');
  t.equal(kill!.refusedAtMs, 1_700_000_000_123);
  t.equal(kill!.value, '4141414141414141');
  t.equal(kill!.instruction, '48890f');
  t.same([kill!.action, kill!.source, kill!.trapSeq, kill!.lostBefore], ['gp', 'emulated', 1, 0], 'action, source, trap seq, lost before');
  t.equal(payloadProblem('refused-write', kill), null);
  t.equal(late!.entry, (512 + 8) / 8, 'slot on the second (physically separate) page');
  t.equal(late!.length, 0, 'an unemulated write: length unknown (0), no value bytes');
  t.equal(late!.source, 'unemulated');
  t.equal(late!.value, '');
  t.equal(payloadProblem('refused-write', late), null);
  t.equal(refusedWritePayload('g1', p.records[0]!, []).table, 'unknown', 'a record outside every known range is still recorded');
});

t.test('attach errors become reasons', async (t) => {
  t.match(unavailableReason({ code: 'EINVAL', step: 'attach', message: 'm' }), /has no introvisor write trap.*EINVAL/);
  t.match(unavailableReason({ code: 'ENOTTY', step: 'attach', message: 'm' }), /has no introvisor write trap/);
  t.match(unavailableReason({ code: 'ENOVMFD', step: 'find-vm-fd', message: 'no anon_inode:kvm-vm' }), /no anon_inode:kvm-vm/);
  t.match(unavailableReason({ code: 'EBUSY', step: 'attach', message: 'm' }), /already holds/);
});

t.test('finding and ladder: a refused write is a critical fault, restore-image at once, cleared by a new boot', async (t) => {
  const tally = { bootGeneration: 4, count: 2, lost: 1, firstAtMs: 1, lastRip: '0xffffffffc0001234', lastGpa: '0x5000ff0', tables: ['sys_call_table'], entries: [39, 62] };
  const obs = detectRefusedWrites(tally).observations;
  t.equal(obs.length, 1);
  t.equal(obs[0]!.kind, 'syscall-write-refused');
  t.match(obs[0]!.summary, /3 writes into sys_call_table refused by the write trap \(slots 39, 62\)/);
  t.same(detectRefusedWrites(null).observations, []);
  t.same(detectRefusedWrites({ ...tally, count: 0, lost: 0 }).observations, []);

  const report = { takenAtMs: 0, agent: 'ok' as const, processes: [] };
  const a = analyzeScan({ nowMs: 0, snapshot: null, snapshotError: 'x', report, critical: [], baseline: null, refusedWrites: tally });
  t.ok(a.observations.some((o) => o.kind === 'syscall-write-refused'), 'counted even when introspection failed');
  const tracker = new FindingTracker((k) => DEFAULT_POLICY.faults[k].confirmScans);
  const u = tracker.update(a, 1000);
  const f = u.raised.find((x) => x.kind === 'syscall-write-refused');
  t.equal(f?.severity, 'critical');

  t.same(DEFAULT_POLICY.faults['syscall-write-refused'].ladder.map((r) => r.action), ['restore-image']);
  const r = step(initialLadderState('g1'), { nowMs: 2000, scanAtMs: 1000, faults: [{ kind: 'syscall-write-refused', findingId: f!.id, summary: f!.summary, target: null }], policy: DEFAULT_POLICY });
  t.equal(r.decision.kind, 'act');
  if (r.decision.kind === 'act') t.equal(r.decision.action.action, 'restore-image');

  const next = tracker.update(analyzeScan({ nowMs: 0, snapshot: null, snapshotError: 'x', report, critical: [], baseline: null, refusedWrites: null }), 2000);
  t.ok(next.cleared.some((x) => x.kind === 'syscall-write-refused'), 'a new boot (no tally) clears it');

  const v = validatePolicy({ version: 1, faults: { 'syscall-write-refused': { ladder: [{ action: 'reboot-os', count: 1, verifyTimeoutSec: 30, backoffSec: 0 }] } } });
  t.ok(v.ok, 'a policy file may set its ladder');
  const old = validatePolicy({ version: 1 });
  t.ok(old.ok && old.policy.faults['syscall-write-refused'].ladder[0]?.action === 'restore-image', 'a policy without it gets the default');
});
