// Profile parsing from bytes: BTF (nested, anonymous and bitfield members,
// truncation), System.map and Volatility ISF overrides (exact 64-bit addresses).
import t from 'tap';
import { Btf, BtfError } from '../../src/profile/btf.js';
import { parseSystemMap, slideSymbols } from '../../src/profile/symbols.js';
import { IsfLayouts, isfSymbols, parseIsf } from '../../src/profile/layouts.js';
import { ProfileCache, SharedByKey } from '../../src/profile/profile-cache.js';

/** A minimal BTF encoder for the kinds the reader must handle. */
class BtfBuilder {
  private strs = Buffer.from([0]);
  private types: Buffer[] = [];
  str(s: string): number { const off = this.strs.length; this.strs = Buffer.concat([this.strs, Buffer.from(s + '\0')]); return off; }
  private add(name: string, kind: number, vlen: number, sizeOrType: number, extra: Buffer, kindFlag = false): number {
    const h = Buffer.alloc(12);
    h.writeUInt32LE(name ? this.str(name) : 0, 0);
    h.writeUInt32LE((((kindFlag ? 1 : 0) << 31) | (kind << 24) | vlen) >>> 0, 4);
    h.writeUInt32LE(sizeOrType, 8);
    this.types.push(Buffer.concat([h, extra]));
    return this.types.length;
  }
  int(name: string, size: number): number { const e = Buffer.alloc(4); e.writeUInt32LE(size * 8, 0); return this.add(name, 1, 0, size, e); }
  ptr(to: number): number { return this.add('', 2, 0, to, Buffer.alloc(0)); }
  array(elem: number, index: number, n: number): number { const e = Buffer.alloc(12); e.writeUInt32LE(elem, 0); e.writeUInt32LE(index, 4); e.writeUInt32LE(n, 8); return this.add('', 3, 0, 0, e); }
  typedef(name: string, to: number): number { return this.add(name, 8, 0, to, Buffer.alloc(0)); }
  struct(name: string, size: number, members: [string, number, number, number?][], union = false): number {
    const bitfields = members.some((m) => m[3] !== undefined);
    const e = Buffer.alloc(12 * members.length);
    members.forEach(([n, type, bitOff, bitSize], i) => {
      e.writeUInt32LE(n ? this.str(n) : 0, i * 12);
      e.writeUInt32LE(type, i * 12 + 4);
      e.writeUInt32LE((bitfields ? ((bitSize ?? 0) << 24) | bitOff : bitOff) >>> 0, i * 12 + 8);
    });
    return this.add(name, union ? 5 : 4, members.length, size, e, bitfields);
  }
  build(): Buffer {
    const types = Buffer.concat(this.types);
    const h = Buffer.alloc(24);
    h.writeUInt16LE(0xeb9f, 0); h[2] = 1; h.writeUInt32LE(24, 4);
    h.writeUInt32LE(0, 8); h.writeUInt32LE(types.length, 12);
    h.writeUInt32LE(types.length, 16); h.writeUInt32LE(this.strs.length, 20);
    return Buffer.concat([h, types, this.strs]);
  }
}

function sampleBtf(): Buffer {
  const b = new BtfBuilder();
  const int = b.int('int', 4);
  const u64 = b.int('long long unsigned int', 8);
  const char = b.int('char', 1);
  const listHead = b.struct('list_head', 16, [['next', 0, 0], ['prev', 0, 64]]);
  const comm = b.array(char, int, 16);
  const pidT = b.typedef('pid_t', int);
  const inner = b.struct('', 8, [['a', int, 0], ['b', int, 32]]);
  const anonUnion = b.struct('', 8, [['x', u64, 0], ['', inner, 0]], true);
  const flags = b.struct('flags_s', 4, [['lo', int, 0, 3], ['hi', int, 3, 29]]);
  const task = b.struct('task_struct', 96, [['state', int, 0], ['', anonUnion, 64], ['tasks', listHead, 128], ['pid', pidT, 256], ['comm', comm, 288], ['f', flags, 416], ['parent', b.ptr(0), 448]]);
  t.ok(task > 0);
  return b.build();
}

t.test('BTF: nested, anonymous and bitfield members resolve by name', async (t) => {
  const btf = new Btf(sampleBtf());
  t.equal(btf.offsetof('task_struct', 'tasks'), 16);
  t.equal(btf.offsetof('task_struct', 'tasks.prev'), 24, 'nested member');
  t.equal(btf.offsetof('task_struct', 'x'), 8, 'member of an anonymous union');
  t.equal(btf.offsetof('task_struct', 'b'), 12, 'member of an anonymous struct inside an anonymous union');
  t.equal(btf.offsetof('task_struct', 'pid'), 32);
  t.same(btf.member('task_struct', 'f.hi'), { offset: 52, bitOffset: 419, bitSize: 29, type: 1 }, 'bitfield: bit offset and size');
  t.equal(btf.sizeofStruct('task_struct'), 96);
  t.equal(btf.sizeof(btf.member('task_struct', 'comm').type), 16, 'array size');
  t.equal(btf.sizeof(btf.member('task_struct', 'pid').type), 4, 'typedef resolved');
  t.throws(() => btf.offsetof('task_struct', 'nope'), /task_struct has no member nope/);
  t.throws(() => btf.offsetof('mm_struct', 'pgd'), /no struct mm_struct/);
});

t.test('BTF: names found among thousands of types, every id of a name in ascending order', async (t) => {
  const b = new BtfBuilder();
  const int = b.int('int', 4);
  const dups: number[] = [];
  for (let i = 0; i < 5000; i++) {
    // Every 997th type is another "dup" (structs and typedefs alike); the rest are distinct names.
    if (i % 997 === 0) dups.push(i % 2 === 0 ? b.struct('dup', 4, [['v', int, 0]]) : b.typedef('dup', int));
    else b.typedef(`t_${i}`, int);
  }
  const btf = new Btf(b.build());
  t.same(btf.find('dup'), dups, 'all of them, lowest id first');
  t.same(btf.find('dup', 4), dups.filter((_, k) => k % 2 === 0), 'by kind');
  t.equal(btf.find('t_4999').length, 1);
  t.same(btf.find('t_5000'), [], 'never defined');
  t.same(btf.find(''), [], 'no name');
  t.equal(btf.sizeofStruct('dup'), 4);
});

t.test('BTF: truncated or forged blobs are clean errors', async (t) => {
  const good = sampleBtf();
  t.throws(() => new Btf(good.subarray(0, 10)), BtfError);
  t.throws(() => new Btf(good.subarray(0, good.length - 8)), /runs past/);
  const badKind = Buffer.from(good);
  badKind.writeUInt32LE((31 << 24) | 0, 24 + 4);
  t.throws(() => new Btf(badKind), /unknown kind 31/);
  const hugeVlen = Buffer.from(good);
  hugeVlen.writeUInt32LE((4 << 24) | 0xffff, 24 + 4);
  t.throws(() => new Btf(hugeVlen), BtfError, 'a huge member count runs off the type section');
  const badString = Buffer.from(good);
  badString.writeUInt32LE(0x7fff_ffff, 24 + 12 * 0 + 0); // name offset of type 1
  const btf = new Btf(badString);
  t.throws(() => btf.name(1), /string offset/);
  // A string section whose NULs were overwritten (an old kernel's BTF after a reset): names stay
  // bounded instead of running on to the end of the section once per type.
  const b = new BtfBuilder();
  b.int('int', 4);
  const noNul = Buffer.concat([b.build(), Buffer.alloc(64 * 1024, 0x41)]);
  noNul.writeUInt32LE(noNul.readUInt32LE(20) + 64 * 1024, 20); // the string section now ends in 64 KiB of 'A'
  noNul.fill(0x41, noNul.length - 64 * 1024 - 4, noNul.length - 64 * 1024); // 'int\0' loses its NUL
  t.throws(() => new Btf(noNul).name(1), /no NUL within 1024 bytes/);
});

t.test('System.map: parsed, slid, and errors name the line', async (t) => {
  const map = parseSystemMap('ffffffff81000000 T _text\nffffffff82000360 D sys_call_table\n0000000000031c40 A runqueues\n');
  t.equal(map.address('sys_call_table'), 0xffff_ffff_8200_0360n);
  const slid = slideSymbols(map, 0x2a20_0000n);
  t.equal(slid.address('_text'), 0xffff_ffff_ab20_0000n);
  t.equal(slid.address('runqueues'), 0x31c40n, 'absolute symbols do not move');
  t.same(slid.lookup(0xffff_ffff_ac20_0368n), { name: 'sys_call_table', address: 0xffff_ffff_ac20_0360n, offset: 8n });
  t.throws(() => parseSystemMap('ffffffff81000000 T _text\nnot a line\n', 'my.map'), /my\.map:2:/);
});

t.test('Volatility ISF: layouts and exact 64-bit symbol addresses', async (t) => {
  const text = JSON.stringify({
    metadata: {},
    base_types: {},
    symbols: { _text: { address: 0 }, init_task: { address: 0 } },
    user_types: {
      task_struct: { kind: 'struct', size: 9792, fields: { tasks: { offset: 2192, type: { kind: 'struct', name: 'list_head' } }, pid: { offset: 2416, type: { kind: 'base', name: 'int' } } } },
      list_head: { kind: 'struct', size: 16, fields: { next: { offset: 0, type: { kind: 'pointer' } }, prev: { offset: 8, type: { kind: 'pointer' } } } },
    },
  }).replace('"_text":{"address":0}', '"_text":{"address":18446744071578845184}').replace('"init_task":{"address":0}', '"init_task":{"address":18446744071600671296}');
  const doc = parseIsf(text);
  const layouts = new IsfLayouts(doc, 'test.isf');
  t.equal(layouts.offsetof('task_struct', 'tasks.prev'), 2200);
  t.equal(layouts.sizeof('task_struct'), 9792);
  const syms = isfSymbols(doc);
  t.equal(syms.address('_text'), 18446744071578845184n, 'no rounding through doubles');
  t.equal(syms.address('init_task'), 18446744071600671296n);
  t.throws(() => new IsfLayouts({ user_types: { x: { kind: 'struct' } } }, 'bad.isf'), /bad\.isf: not a Volatility ISF/);
});

t.test('symbols of one build at another slide share names and indices; a changed order rebuilds them', async (t) => {
  const map = parseSystemMap('ffffffff81000000 T _text\nffffffff82000360 D sys_call_table\nffffffff82000360 d sys_call_table_alias\n0000000000031c40 A runqueues\n');
  const slid = slideSymbols(map, 0x2a20_0000n);
  t.equal(slid.names, map.names, 'names are the same array, not a copy');
  t.same(slid.lookup(0xffff_ffff_ac20_0368n), { name: 'sys_call_table', address: 0xffff_ffff_ac20_0360n, offset: 8n }, 'lookup through the shared index, global name preferred');
  t.equal(slid.address('runqueues'), 0x31c40n);
  // Addresses in another order than the shared index's: the index is rebuilt, lookups stay right.
  const swapped = map.withAddresses(BigUint64Array.from([0xffff_ffff_8300_0000n, 0xffff_ffff_8100_0000n, 0xffff_ffff_8100_0000n, 0x31c40n]));
  t.same(swapped.lookup(0xffff_ffff_8300_0010n), { name: '_text', address: 0xffff_ffff_8300_0000n, offset: 0x10n });
  t.same(swapped.lookup(0xffff_ffff_8100_0001n), { name: 'sys_call_table', address: 0xffff_ffff_8100_0000n, offset: 1n });
  t.equal(swapped.extent('sys_call_table'), 0x200_0000);
});

t.test('shared profiles: kept while leased, up to maxIdle unused ones after, least recently released go first', async (t) => {
  const c = new SharedByKey<{ n: number }>(1);
  let made = 0;
  const a1 = c.acquire('a', () => ({ n: ++made }));
  const a2 = c.acquire('a', () => ({ n: ++made }));
  t.equal(a1.value, a2.value, 'a second lease of a key gets the same value');
  t.same([a1.shared, a2.shared, made], [false, true, 1]);
  const b = c.acquire('b', () => ({ n: ++made }));
  a1.release();
  a1.release(); // idempotent: one lease, one release
  t.same(c.stats, { leased: 2, idle: 0 }, 'a is still leased by a2');
  a2.release();
  b.release();
  t.same(c.stats, { leased: 0, idle: 1 }, 'one idle entry kept');
  t.equal(c.peek('a'), undefined, 'a, released first, is evicted');
  t.equal(c.peek('b')?.n, 2, 'b, released last, is kept');
  const b2 = c.acquire('b', () => ({ n: ++made }));
  t.same([b2.shared, made], [true, 2], 'a returning build is not decoded again');
  b2.release();
});

t.test('shared profiles: BTF is shared only between identical bytes; a bad blob leaks no lease', async (t) => {
  const cache = new ProfileCache(0);
  const syms = parseSystemMap('ffffffff81000000 T _text\n');
  const blob = sampleBtf();
  const one = cache.lease('k', syms, blob);
  const two = cache.lease('k', syms.withAddresses(BigUint64Array.from([0xffff_ffff_9000_0000n])), Buffer.from(blob));
  t.equal(two.btf, one.btf, 'same bytes: one parsed BTF');
  t.same([one.lease.sharedSymbols, two.lease.sharedSymbols, two.lease.sharedBtf], [false, true, true]);
  t.same(cache.names('k')?.names, ['_text']);
  const other = Buffer.from(blob);
  other[other.length - 2] = 0x7a; // a different string section: another build's (or a tampered) BTF
  const three = cache.lease('k', syms, other);
  t.not(three.btf, one.btf, 'different bytes are never served another guest\'s BTF');
  t.throws(() => cache.lease('k', syms, Buffer.from('not btf at all, not at all')), /BTF/);
  for (const l of [one, two, three]) l.lease.release();
  t.same(cache.symbols.stats, { leased: 0, idle: 0 }, 'all released, nothing kept with maxIdle 0 (the failed lease released its symbols)');
  t.same(cache.btf.stats, { leased: 0, idle: 0 });
});
