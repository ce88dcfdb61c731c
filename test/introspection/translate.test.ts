// The native page walker on hand-built page tables in a real file: 4- and
// 5-level paging, 4 KiB / 2 MiB / 1 GiB pages, CR3 PCID/PTI bits, reads that
// cross pages, unmapped and hostile entries, the PCI-hole RAM layout, and
// bounded list walks with cycles.
import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GuestMemory, qemuRamLayout } from '../../src/memory/guest-memory.js';
import { openPhysicalMemory } from '../../src/memory/physical-memory.js';
import { AddressSpace, pageTableRootFromCr3 } from '../../src/translate/address-space.js';

const dir = mkdtempSync(join(tmpdir(), 'iv-translate-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

const P = 1n; // present
const PS = 0x80n; // page size
const NX = 1n << 63n;
const idx = (va: bigint, level: number): number => Number((va >> BigInt(12 + 9 * (level - 1))) & 0x1ffn);

/** A 16 MiB "guest" whose page tables we write by hand. */
class Builder {
  readonly ram = Buffer.alloc(16 << 20);
  private next = 0x10_0000n; // table frames from 1 MiB
  alloc(): bigint { const f = this.next; this.next += 0x1000n; return f; }
  set(table: bigint, index: number, value: bigint): void { this.ram.writeBigUInt64LE(value, Number(table) + index * 8); }
  get(table: bigint, index: number): bigint { return this.ram.readBigUInt64LE(Number(table) + index * 8); }
  /** Maps va -> pa with a page of `size` (4K, 2M, 1G) under `root` with `levels`. */
  map(root: bigint, levels: number, va: bigint, pa: bigint, size: '4k' | '2m' | '1g'): void {
    const leafLevel = size === '4k' ? 1 : size === '2m' ? 2 : 3;
    let table = root;
    for (let level = levels; level > leafLevel; level--) {
      let e = this.get(table, idx(va, level));
      if ((e & P) === 0n) { e = this.alloc() | P | 2n; this.set(table, idx(va, level), e); }
      table = e & 0x000f_ffff_ffff_f000n;
    }
    this.set(table, idx(va, leafLevel), pa | P | 2n | (leafLevel > 1 ? PS : 0n) | NX);
  }
  write(file: string): GuestMemory {
    writeFileSync(file, this.ram);
    return new GuestMemory(openPhysicalMemory(file), 'flat');
  }
}

for (const levels of [4, 5] as const) {
  t.test(`${levels}-level paging: 4 KiB, 2 MiB and 1 GiB pages`, async (t) => {
    const b = new Builder();
    const root = b.alloc();
    const high = levels === 5 ? 0xff11_0000_0000_0000n : 0xffff_8880_0000_0000n;
    b.map(root, levels, high + 0x1000n, 0x40_0000n, '4k');
    b.map(root, levels, high + 0x2000n, 0x40_3000n, '4k'); // not adjacent physically
    b.map(root, levels, 0xffff_ffff_8100_0000n, 0x20_0000n, '2m');
    b.map(root, levels, high + 0x4000_0000n, 0n, '1g');
    b.ram.write('hello', 0x40_0ffe);
    b.ram.write('world', 0x40_3000);
    const mem = b.write(join(dir, `ram${levels}`));
    t.teardown(() => mem.close());
    // CR3 with a PCID and the KPTI user bit set: the walker must start at the kernel half.
    const cr3 = root | 0x1000n | 0x5n | (1n << 63n);
    const as = new AddressSpace(mem, pageTableRootFromCr3(cr3), levels);
    t.equal(pageTableRootFromCr3(cr3), root, 'PCID, PTI and no-flush bits masked');
    t.equal(as.translate(high + 0x1234n), 0x40_0234n, '4 KiB page');
    t.equal(as.translate(0xffff_ffff_8112_3456n), 0x32_3456n, '2 MiB page keeps the low 21 bits');
    t.equal(as.translate(high + 0x4000_0000n + 0x1234_5678n), 0x1234_5678n, '1 GiB page keeps the low 30 bits');
    t.equal(as.read(high + 0x1ffen, 7).toString(), 'heworld', 'a read crossing into a physically distant page');
    t.equal(as.translate(high + 0x3000n), null, 'unmapped page');
    t.throws(() => as.read(high + 0x2ffen, 8), /0x[0-9a-f]+3000 .* is not mapped/, 'an unmapped page names its address');
    t.equal(as.tryRead(high + 0x2ffen, 8), null);
    t.equal(as.translate(0x0000_8000_0000_0000n), null, 'non-canonical address');
    if (levels === 4) t.equal(as.translate(0xff11_0000_0000_1000n), null, 'LA57-only address is non-canonical at 4 levels');
  });
}

t.test('hostile page tables: entries beyond RAM and self-references end as "not mapped"', async (t) => {
  const b = new Builder();
  const root = b.alloc();
  b.set(root, 511, 0x7fff_ffff_f000n | P); // a PML4 entry pointing far beyond RAM
  b.set(root, 510, root | P); // a table pointing at itself: still only 4 steps
  const mem = b.write(join(dir, 'hostile'));
  t.teardown(() => mem.close());
  const as = new AddressSpace(mem, root, 4);
  t.equal(as.translate(0xffff_ff80_0000_0000n), null);
  const recursive = 0xffff_0000_0000_0000n | (510n << 39n) | (510n << 30n) | (510n << 21n) | (510n << 12n);
  t.equal(as.translate(recursive), root, 'a recursive mapping resolves in bounded steps (to the root itself)');
  t.throws(() => as.read(0xffff_ff80_0000_0000n, (64 << 20) + 1), /limit/);
});

t.test('list walks are bounded and cycle-checked', async (t) => {
  const b = new Builder();
  const root = b.alloc();
  const base = 0xffff_8880_0000_0000n;
  b.map(root, 4, base, 0x80_0000n, '2m');
  const mem0 = b.ram;
  const node = (i: number): bigint => base + BigInt(i * 0x100);
  const link = (from: number, to: number): void => { mem0.writeBigUInt64LE(node(to), 0x80_0000 + from * 0x100); };
  // head 0 -> 1 -> 2 -> 3 -> 0, with a payload at +8 in each node
  for (let i = 0; i < 4; i++) { link(i, (i + 1) % 4); mem0.writeUInt32LE(1000 + i, 0x80_0000 + i * 0x100 + 8); }
  let mem = b.write(join(dir, 'list'));
  let as = new AddressSpace(mem, root, 4);
  let w = as.walkList(node(0), 0, 100, 8, 4);
  t.same(Array.from(w.nodes), [node(1), node(2), node(3)]);
  t.same([0, 1, 2].map((i) => w.data.readUInt32LE(i * 4)), [1001, 1002, 1003], 'gathered fields per node');
  t.equal(w.error, null);
  t.equal(as.walkList(node(0), 0, 2, 0, 0).error, 'more than 2 nodes', 'node limit');
  mem.close();
  link(3, 2); // 0 -> 1 -> 2 -> 3 -> 2: a cycle that never returns to the head
  mem = b.write(join(dir, 'list2'));
  as = new AddressSpace(mem, root, 4);
  w = as.walkList(node(0), 0, 1000, 0, 0);
  t.match(w.error, /cycle/);
  t.equal(w.nodes.length, 3, 'what was read before the cycle is kept');
  mem.close();
  mem0.writeBigUInt64LE(0xffff_8880_4000_0000n, 0x80_0000 + 2 * 0x100); // wild pointer
  mem = b.write(join(dir, 'list3'));
  as = new AddressSpace(mem, root, 4);
  t.match(as.walkList(node(0), 0, 1000, 0, 0).error, /not mapped/);
  const g = as.readGather(BigUint64Array.from([node(1), 0xdead_0000n]), 8, 4);
  t.same(Array.from(g.ok), [1, 0], 'gather marks the unmapped record');
  mem.close();
});

t.test('record walks and gathers: fields, one-level derefs, bounds', async (t) => {
  const b = new Builder();
  const root = b.alloc();
  const base = 0xffff_8880_0000_0000n;
  b.map(root, 4, base, 0x80_0000n, '2m');
  const ram = b.ram;
  const at = (va: bigint): number => 0x80_0000 + Number(va - base);
  const node = (i: number): bigint => base + BigInt(i * 0x100);
  const link = (from: number, to: number): void => { ram.writeBigUInt64LE(node(to), at(node(from))); };
  // head 0 -> 1 -> 2 -> 3 -> 0; each node: u32 at +8, pointer at +16 to a struct with a u32 at +4.
  const target = base + 0x10_0000n;
  ram.writeUInt32LE(4242, at(target) + 4);
  for (let i = 0; i < 4; i++) { link(i, (i + 1) % 4); ram.writeUInt32LE(1000 + i, at(node(i)) + 8); }
  ram.writeBigUInt64LE(target, at(node(1)) + 16);
  ram.writeBigUInt64LE(0x1000n, at(node(2)) + 16); // below the floor: not followed
  ram.writeBigUInt64LE(0xffff_8880_4000_0000n, at(node(3)) + 16); // kernel half, unmapped
  const spec = { fields: Uint32Array.from([8, 4, 16, 16, 8, 24]), derefs: Uint32Array.from([24, 4, 4, 32]), stride: 40, floor: 0xffff_8000_0000_0000n };
  let mem = b.write(join(dir, 'records'));
  let as = new AddressSpace(mem, root, 4);
  const w = as.walkRecords(node(0), 0, 100, spec);
  t.equal(w.error, null);
  const u32 = new Uint32Array(w.records);
  const u64 = new BigUint64Array(w.records);
  t.equal(w.records.byteLength, 3 * 40);
  t.same([0, 1, 2].map((i) => u64[i * 5]), [node(1), node(2), node(3)], 'each record starts with its address');
  t.same([0, 1, 2].map((i) => u32[i * 10 + 4]), [1001, 1002, 1003], 'fields land at dst');
  t.same([0, 1, 2].map((i) => u32[i * 10 + 2]), [3, 1, 1], 'status: fields read; the deref followed only for a readable kernel pointer');
  t.equal(u32[8], 4242, 'deref value');
  t.equal(u32[10 + 8], 0, 'an unfollowed deref is zero');
  t.equal(as.walkRecords(node(0), 0, 2, spec).error, 'more than 2 nodes', 'node limit');
  const g = new Uint32Array(as.gatherRecords(BigUint64Array.from([node(1), 0xffff_8880_4000_0000n]), spec));
  t.same([g[2], g[4], g[12]], [3, 1001, 0], 'gather: an unmapped structure has status 0');
  t.throws(() => as.gatherRecords(new BigUint64Array(1), { ...spec, stride: 36 }), /stride/);
  t.throws(() => as.gatherRecords(new BigUint64Array(1), { ...spec, fields: Uint32Array.from([0, 8, 8]) }), /does not fit/, 'fields cannot overwrite the header');
  t.throws(() => as.gatherRecords(new BigUint64Array(1), { ...spec, fields: Uint32Array.from([0, 8, 36]) }), /does not fit/);
  mem.close();
  // Node 2's field crosses out of the mapping: the walk stops there, keeping node 1.
  const edge = base + 0x20_0000n - 0x10n; // 16 bytes before the end of the 2 MiB page
  ram.writeBigUInt64LE(edge, at(node(1)));
  ram.writeBigUInt64LE(node(0), at(edge));
  mem = b.write(join(dir, 'records2'));
  as = new AddressSpace(mem, root, 4);
  const w2 = as.walkRecords(node(0), 0, 100, spec);
  t.match(w2.error, /^node 0xffff8880001ffff0: address 0xffff888000200000 is not mapped$/);
  t.equal(w2.records.byteLength, 40, 'records before the unreadable node are kept');
  mem.close();
  link(1, 2); link(3, 2); // 0 -> 1 -> 2 -> 3 -> 2: a cycle that skips the head
  mem = b.write(join(dir, 'records3'));
  as = new AddressSpace(mem, root, 4);
  const w3 = as.walkRecords(node(0), 0, 1000, spec);
  t.match(w3.error, /cycle/);
  t.equal(w3.records.byteLength, 3 * 40, 'each node of the cycle once');
  mem.close();
});

t.test('XArray walks: entries by index, hostile nodes bounded', async (t) => {
  const b = new Builder();
  const root = b.alloc();
  const base = 0xffff_8880_0000_0000n;
  b.map(root, 4, base, 0x80_0000n, '2m');
  const ram = b.ram;
  const at = (va: bigint): number => 0x80_0000 + Number(va - base);
  // xa_node: shift (u8) at +0, slots at +8.
  const xnode = (i: number): bigint => base + BigInt(i * 0x1000);
  const slot = (n: bigint, i: number, v: bigint): void => { ram.writeBigUInt64LE(v, at(n) + 8 + 8 * i); };
  const top = xnode(1), child = xnode(2), bad = xnode(3), loop = xnode(4);
  ram[at(top)] = 6;
  ram[at(child)] = 0;
  ram[at(bad)] = 7;
  ram[at(loop)] = 0;
  slot(top, 0, base + 0x100n); // entry at index 0
  slot(top, 3, base + 0x200n); // index 192
  slot(top, 5, 0x21n); // a value entry: skipped
  slot(top, 6, child | 2n);
  slot(child, 1, base + 0x300n); // index 6*64 + 1
  slot(top, 7, bad | 2n); // shift 7: refused
  slot(top, 8, 0x1_0002n); // a node pointer in the user half
  slot(top, 9, loop | 2n);
  slot(loop, 0, loop | 2n); // a node that contains itself: cut at the depth limit
  const mem = b.write(join(dir, 'xarray'));
  const as = new AddressSpace(mem, root, 4);
  const limits = { maxDepth: 12, maxNodes: 1000, maxEntries: 1000 };
  const x = as.walkXArray(top | 2n, 0, 8, limits, 0xffff_8000_0000_0000n, 'idr');
  t.same(Array.from(x.indices), [0, 192, 385]);
  t.same(Array.from(x.entries), [base + 0x100n, base + 0x200n, base + 0x300n]);
  t.same(x.errors, [
    `idr: xa_node 0x${bad.toString(16)}`, 'shift 7 is not a multiple of 6 up to 30',
    'idr: xa_node 0x10000', 'not a kernel pointer',
    `idr: xa_node 0x${loop.toString(16)}`, 'deeper than 12 levels',
  ]);
  t.same(Array.from(as.walkXArray(top | 2n, 0, 8, { ...limits, maxEntries: 2 }, 0xffff_8000_0000_0000n, 'idr').entries), [base + 0x100n, base + 0x200n], 'entry limit');
  t.same(as.walkXArray(top | 2n, 0, 8, { ...limits, maxNodes: 2 }, 0xffff_8000_0000_0000n, 'idr').errors.slice(0, 2), ['idr', 'more than 2 nodes'], 'node limit');
  t.same(as.walkXArray(base + 0x100n, 0, 8, limits, 0xffff_8000_0000_0000n, 'idr').indices, Float64Array.from([0]), 'a single entry at the head');
  const far = base + 0x40_0000n; // beyond the 2 MiB mapping
  t.same(as.walkXArray(far | 2n, 0, 8, limits, 0xffff_8000_0000_0000n, 'idr').errors, [`idr: xa_node 0x${far.toString(16)}`, 'not mapped']);
  mem.close();
});

t.test('QEMU RAM layout: RAM above the PCI hole lives at 4 GiB', async (t) => {
  t.same(qemuRamLayout(256 << 20), [{ gpa: 0n, fileOffset: 0n, size: 256n << 20n }]);
  const big = qemuRamLayout(4 * 1024 ** 3, 'q35');
  t.same(big, [
    { gpa: 0n, fileOffset: 0n, size: 0x8000_0000n },
    { gpa: 0x1_0000_0000n, fileOffset: 0x8000_0000n, size: 0x8000_0000n },
  ], 'q35 with 4 GiB: 2 GiB low, 2 GiB at 4 GiB');
  t.same(qemuRamLayout(0xb000_0000 - 4096, 'q35').length, 1, 'q35 below 2.75 GiB: one range');
  t.same(qemuRamLayout(4 * 1024 ** 3, 'pc')[1], { gpa: 0x1_0000_0000n, fileOffset: 0xc000_0000n, size: 0x4000_0000n }, 'pc: 3 GiB low');
  // A small file with a fake "high" split: reads through the layout land in the right place.
  const file = join(dir, 'layout');
  const buf = Buffer.alloc(8192);
  buf.write('LOW', 0);
  buf.write('HIGH', 4096);
  writeFileSync(file, buf);
  const gm = new GuestMemory(openPhysicalMemory(file), [
    { gpa: 0n, fileOffset: 0n, size: 4096n },
    { gpa: 0x1_0000_0000n, fileOffset: 4096n, size: 4096n },
  ]);
  t.teardown(() => gm.close());
  t.equal(gm.readPhys(0x1_0000_0000n, 4).toString(), 'HIGH');
  t.throws(() => gm.readPhys(0x1000n, 4), /not backed by RAM/);
  t.same(gm.findAll(Buffer.from('HIGH')), [0x1_0000_0000n]);
});

t.test('scans skip the holes of a sparse RAM file (tmpfs would allocate them)', async (t) => {
  const file = join(dir, 'sparse');
  const { openSync, writeSync, ftruncateSync, closeSync, statSync } = await import('node:fs');
  const fd = openSync(file, 'w');
  ftruncateSync(fd, 64 << 20);
  writeSync(fd, Buffer.from('Linux version 6.1'), 0, 17, 32 << 20);
  closeSync(fd);
  const gm = new GuestMemory(openPhysicalMemory(file), 'flat');
  t.teardown(() => gm.close());
  const extents = Array.from(gm.dataExtents());
  t.ok(extents.length >= 2 && (extents[0] as bigint) <= 32n << 20n && (extents[1] as bigint) > 32n << 20n, `data extents ${extents.map((e) => e.toString(16)).join(',')}`);
  t.same(gm.findAll(Buffer.from('Linux version')), [32n << 20n]);
  t.ok(statSync(file).blocks * 512 < 4 << 20, 'the file is still sparse after the scan');
});
