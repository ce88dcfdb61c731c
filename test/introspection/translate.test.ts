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
