// The kernel image probe on synthetic memory: the `leaq _text(%rip)` signature, which 2 MiB
// blocks are looked at (holes are not), the bound on image starts, the page-table probe, and
// discovery falling back to the whole-RAM search when the probe finds no kernel.
import t from 'tap';
import { closeSync, mkdtempSync, openSync, rmSync, writeSync, ftruncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { openPhysicalMemory } from '../../src/memory/physical-memory.js';
import { leaToStart, MAX_PROBED_IMAGES, probeByPageTables, probeBySignature } from '../../src/views/image-probe.js';
import { discoverKernel, DiscoveryError } from '../../src/views/discovery.js';

const dir = mkdtempSync(join(tmpdir(), 'iv-image-probe-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

const MiB = 1 << 20;

/** `leaq _text(%rip), %rdi` at `at` in a page whose start is _text (disp = -(at + 7)). */
function leaAt(at: number, rex = 0x48, modrm = 0x3d): Buffer {
  const b = Buffer.alloc(7);
  b[0] = rex; b[1] = 0x8d; b[2] = modrm;
  b.writeInt32LE(-(at + 7), 3);
  return b;
}

/** A sparse file of `size` bytes with the given pieces written (everything else is a hole). */
function sparse(name: string, size: number, pieces: [number, Buffer][]): GuestMemory {
  const file = join(dir, name);
  const fd = openSync(file, 'w');
  ftruncateSync(fd, size);
  for (const [off, buf] of pieces) writeSync(fd, buf, 0, buf.length, off);
  closeSync(fd);
  return new GuestMemory(openPhysicalMemory(file), 'flat');
}

t.test('the signature: a RIP-relative LEA to the page start, any register, nothing else', async (t) => {
  const page = Buffer.alloc(4096, 0xcc);
  leaAt(7).copy(page, 7);
  t.equal(leaToStart(page), 7, '48 8d 3d at +7 (5.10, 6.1)');
  const p2 = Buffer.alloc(4096, 0x90);
  leaAt(0xb8f, 0x4c, 0x05).copy(p2, 0xb8f);
  t.equal(leaToStart(p2), 0xb8f, 'REX.WR form (4c 8d 05) deeper in the page (6.12 puts startup_64 at +0xb53)');
  const off = Buffer.alloc(4096, 0xcc);
  const lea = leaAt(100);
  lea.writeInt32LE(-(100 + 7) + 0x1000, 3); // points at the next page, not this one
  lea.copy(off, 100);
  t.equal(leaToStart(off), -1, 'a LEA to elsewhere is not the signature');
  const noRex = Buffer.alloc(4096, 0xcc);
  leaAt(20).copy(noRex, 20);
  noRex[20] = 0x40; // REX without W: a 32-bit LEA
  t.equal(leaToStart(noRex), -1, 'without REX.W it is not');
  const reg = Buffer.alloc(4096, 0xcc);
  leaAt(20, 0x48, 0x7d).copy(reg, 20); // mod 01: [rbp+disp8], not RIP-relative
  t.equal(leaToStart(reg), -1, 'a non-RIP-relative LEA is not');
  t.equal(leaToStart(Buffer.from([0x48, 0x8d, 0x3d, 0xf9])), -1, 'truncated at the end of the window');
});

t.test('dump probe: only 2 MiB-aligned blocks with data, in address order, bounded', async (t) => {
  const page = (at: number): Buffer => { const p = Buffer.alloc(4096, 0xcc); leaAt(at).copy(p, at); return p; };
  const mem = sparse('two.ram', 64 * MiB, [
    [20 * MiB, page(7)], // a stale image
    [40 * MiB, page(0x40)], // the running one
    [41 * MiB, page(7)], // not 2 MiB-aligned: never looked at
    [50 * MiB, Buffer.alloc(4096, 0xcc)], // data without the signature
  ]);
  t.teardown(() => mem.close());
  const p = probeBySignature(mem);
  t.same(p.starts, [BigInt(20 * MiB), BigInt(40 * MiB)], 'both images, in order; the unaligned copy is not one');
  t.match(p.note, /3 2 MiB-aligned blocks checked/, 'only the blocks with data were read');

  const flood = sparse('flood.ram', 64 * MiB, Array.from({ length: MAX_PROBED_IMAGES + 1 }, (_, i): [number, Buffer] => [(2 + 2 * i) * MiB, page(7)]));
  t.teardown(() => flood.close());
  const f = probeBySignature(flood);
  t.same(f.starts, [], `more than ${MAX_PROBED_IMAGES} image starts: none taken`);
  t.match(f.note, /searching all of RAM/);

  const empty = sparse('empty.ram', 16 * MiB, []);
  t.teardown(() => empty.close());
  t.same(probeBySignature(empty).starts, [], 'an all-hole file: nothing read, nothing found');
});

t.test('live probe: the lowest mapped 2 MiB of the kernel map, through the page tables', async (t) => {
  // 4-level tables: PML4 at 1 MiB, PDPT at +4K, PD at +8K; KERNEL_MAP + 48 MiB -> PA 20 MiB (2 MiB pages).
  const pml4 = 0x10_0000, pdpt = 0x10_1000, pd = 0x10_2000;
  const e = (pa: number, flags: number): Buffer => { const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt(pa) | BigInt(flags)); return b; };
  const pieces: [number, Buffer][] = [
    [pml4 + 511 * 8, e(pdpt, 3)],
    [pdpt + 510 * 8, e(pd, 3)],
    [pd + 24 * 8, e(20 * MiB, 0x83)],
    [pd + 25 * 8, e(22 * MiB, 0x83)],
  ];
  const mem = sparse('tables.ram', 64 * MiB, pieces);
  t.teardown(() => mem.close());
  const p = probeByPageTables(mem, BigInt(pml4), [4]);
  t.same(p.starts, [BigInt(20 * MiB)], '_text is the first mapped step');
  const none = probeByPageTables(mem, BigInt(pd), [4]);
  t.same(none.starts, [], 'tables that map nothing there: no start');
  t.match(none.note, /searching all of RAM/);
});

t.test('discovery: a signature with no kernel behind it ends in the whole-RAM search and its error', async (t) => {
  const p = Buffer.alloc(4096, 0xcc);
  leaAt(7).copy(p, 7);
  const mem = sparse('fake.ram', 32 * MiB, [[16 * MiB, p]]);
  t.teardown(() => mem.close());
  let err: unknown = null;
  try { discoverKernel(mem, { profiles: null }); } catch (e) { err = e; }
  t.ok(err instanceof DiscoveryError, 'a DiscoveryError');
  t.match(err instanceof Error ? err.message : '', /no kallsyms table in RAM/, 'the whole-RAM search ran and found no kallsyms either');
});
