import t from 'tap';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openPhysicalMemory } from '../../src/memory/physical-memory.js';

const dir = mkdtempSync(join(tmpdir(), 'iv-pm-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

const file = join(dir, 'ram.bin');
const image = Buffer.alloc(1 << 20);
image.write('Linux version 6.1.0-test', 0x80000);
writeFileSync(file, image);

t.test('reads inside the file and finds a pattern', async (t) => {
  const mem = openPhysicalMemory(file);
  t.equal(mem.size, 1 << 20);
  t.equal(mem.read(0x80000, 13).toString(), 'Linux version');
  t.equal(mem.read(0x80000n, 5).toString(), 'Linux');
  t.equal(mem.indexOf(Buffer.from('Linux version')), 0x80000);
  t.equal(mem.indexOf(Buffer.from('Linux version'), 0x80001), -1);
  t.equal(mem.indexOf(Buffer.from('Linux version'), 0, 0x80000), -1, 'to is exclusive of match starts');
  t.equal(mem.read(mem.size - 4, 4).length, 4, 'last bytes are readable');
  mem.close();
});

t.test('search reads through the file in chunks: matches across a chunk seam, limits, bounds', async (t) => {
  const big = join(dir, 'big.bin');
  const img = Buffer.alloc(9 << 20);
  const pat = Buffer.from('0\u00001\u00002\u00003\u0000', 'latin1');
  const at = [0x1000, (4 << 20) - 3, (8 << 20) - 1, img.length - pat.length];
  for (const a of at) pat.copy(img, a);
  writeFileSync(big, img);
  const mem = openPhysicalMemory(big);
  t.same(mem.search(pat, 0, mem.size, 10), at, 'every match, including those across the 4 MiB seams and at the very end');
  t.same(mem.search(pat, 0, mem.size, 2), at.slice(0, 2), 'limit');
  t.same(mem.search(pat, 0x1001, (8 << 20) - 1, 10), [(4 << 20) - 3], 'from inclusive, to exclusive of match starts');
  t.same(mem.search(pat, (8 << 20) - 1, (8 << 20), 10), [(8 << 20) - 1], 'a match starting before to may end after it');
  t.same(mem.search(pat, 5, 5, 10), []);
  mem.close();
});

t.test('out-of-range and malformed reads are clear errors', async (t) => {
  const mem = openPhysicalMemory(file);
  t.throws(() => mem.read(mem.size - 2, 4), /outside guest memory/);
  t.throws(() => mem.read(2n ** 60n, 1), /outside guest memory/);
  t.throws(() => mem.read(2 ** 60, 1), /below 2\^53/);
  t.throws(() => mem.read(-1, 1), /non-negative integer/);
  t.throws(() => mem.read(0, 128 << 20), /limit/);
  t.throws(() => mem.read(1.5, 1), /non-negative integer/);
  mem.close();
  t.throws(() => mem.read(0, 1), /closed/);
});

t.test('opening a missing or empty file names it', async (t) => {
  t.throws(() => openPhysicalMemory(join(dir, 'missing.ram')), /cannot open guest memory .*missing\.ram/);
  const empty = join(dir, 'empty.ram');
  writeFileSync(empty, '');
  t.throws(() => openPhysicalMemory(empty), /not a non-empty regular file/);
});
