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
