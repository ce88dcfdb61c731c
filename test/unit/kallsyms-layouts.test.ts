// kallsyms decoding on synthetic images of each layout scripts/kallsyms.c has written, for
// the kernels the lab cannot boot: offsets first (up to 6.3; with kallsyms_seqs_of_names from
// 6.2), names first (6.4+), with CONFIG_KALLSYMS_ABSOLUTE_PERCPU (x86-64 up to 6.14) and without
// it (6.15+), and Linux 7.0's place-relative offsets (no kallsyms_relative_base), which this
// version does not read: a clear error, never garbage.
import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openGuestMemory } from '../../src/memory/guest-memory.js';
import { findKallsyms } from '../../src/profile/kallsyms.js';

const N = 700;
const BASE = 0xffff_ffff_a340_0000n; // a KASLR-slid _text
const PERCPU = 40; // the first symbols are per-CPU (absolute 0.. addresses) with ABSOLUTE_PERCPU

interface Layout {
  order: 'offsets-first' | 'names-first' | 'place-relative';
  seqs: boolean;
  absolutePercpu: boolean;
}

const align8 = (n: number): number => (n + 7) & ~7;
const names = Array.from({ length: N }, (_, i) => (i === 0 ? '_text' : `sym_${i.toString(36)}`));
function address(i: number, l: Layout): bigint {
  if (l.absolutePercpu && i < PERCPU) return BigInt(i * 0x40);
  return BASE + BigInt(i * 0x30);
}

/** Token i is character i (token 0: "zz"), so each name byte is its own token. */
function tokenParts(): { table: Buffer; index: Buffer } {
  const parts: Buffer[] = [];
  const index = Buffer.alloc(512);
  let off = 0;
  for (let i = 0; i < 256; i++) {
    const tok = Buffer.from(i === 0 ? 'zz\0' : `${String.fromCharCode(i)}\0`, 'latin1');
    index.writeUInt16LE(off, 2 * i);
    parts.push(tok);
    off += tok.length;
  }
  return { table: Buffer.concat(parts), index };
}

/** One image: some filler, the kallsyms arrays as the layout orders them (8-aligned labels), filler. */
function image(l: Layout, sorted = true): Buffer {
  const out: Buffer[] = [];
  let at = 0;
  const put = (b: Buffer): number => { const pad = align8(at) - at; if (pad) out.push(Buffer.alloc(pad)); at += pad; const start = at; out.push(b); at += b.length; return start; };
  put(Buffer.alloc(64 << 10, 0x5a));
  const nameBlobs = names.map((n) => { const s = Buffer.from(`T${n}`, 'latin1'); return Buffer.concat([Buffer.from([s.length]), s]); });
  const namesBuf = Buffer.concat(nameBlobs);
  const markers = Buffer.alloc(4 * Math.ceil(N / 256));
  let pos = 0;
  nameBlobs.forEach((b, i) => { if (i % 256 === 0) markers.writeUInt32LE(pos, 4 * (i / 256)); pos += b.length; });
  const count = Buffer.alloc(8); count.writeUInt32LE(N);
  const seqs = Buffer.alloc(3 * N);
  const { table, index } = tokenParts();
  const order = sorted ? [...Array(N).keys()] : [...Array(N).keys()].reverse();
  const offsets = (placeAt: number | null): Buffer => {
    const b = Buffer.alloc(4 * N);
    order.forEach((i, k) => {
      const a = address(i, l);
      let o: number;
      if (placeAt !== null) o = Number(a - (BASE - 0x10_0000n + BigInt(placeAt + 4 * k))); // relative to the entry itself
      else if (l.absolutePercpu) o = a < BASE ? Number(a) : -Number(a - BASE) - 1;
      else o = Number(a - BASE);
      b.writeInt32LE(o, 4 * k);
    });
    return b;
  };
  const base = Buffer.alloc(8); base.writeBigUInt64LE(l.absolutePercpu ? BASE : BASE);
  if (l.order === 'offsets-first') {
    put(offsets(null)); put(base); put(count); put(namesBuf); put(markers);
    if (l.seqs) put(seqs);
    put(table); put(index);
  } else {
    put(count); put(namesBuf); put(markers); put(table); put(index);
    if (l.order === 'names-first') { put(offsets(null)); put(base); } else { const p = align8(at); put(offsets(p)); }
    put(seqs);
  }
  put(Buffer.alloc(64 << 10, 0xa5));
  return Buffer.concat(out);
}

const dir = mkdtempSync(join(tmpdir(), 'iv-kallsyms-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

function decode(name: string, img: Buffer): ReturnType<typeof findKallsyms> {
  const path = join(dir, name);
  writeFileSync(path, img);
  const mem = openGuestMemory(path, 'flat');
  try { return findKallsyms(mem); } finally { mem.close(); }
}

const cases: [string, Layout, 'offsets-first' | 'names-first'][] = [
  ['5.4..6.1 (offsets first, absolute per-CPU)', { order: 'offsets-first', seqs: false, absolutePercpu: true }, 'offsets-first'],
  ['6.2..6.3 (offsets first, seqs_of_names)', { order: 'offsets-first', seqs: true, absolutePercpu: true }, 'offsets-first'],
  ['6.4..6.14 (names first, absolute per-CPU)', { order: 'names-first', seqs: true, absolutePercpu: true }, 'names-first'],
  ['6.15+ (names first, no absolute per-CPU)', { order: 'names-first', seqs: true, absolutePercpu: false }, 'names-first'],
];
for (const [what, layout, order] of cases) {
  t.test(what, async (t) => {
    const { tables, rejected } = decode(what.replace(/\W+/g, '_'), image(layout));
    t.equal(tables.length, 1, `one table (rejected: ${rejected.slice(0, 2).join('; ')})`);
    const k = tables[0];
    if (!k) return;
    t.equal(k.order, order);
    t.equal(k.relativeBase, BASE);
    t.same(k.names, names, `${N} names`);
    t.equal(k.types, 'T'.repeat(N));
    t.same([...k.addresses], names.map((_, i) => address(i, layout)), 'every address');
  });
}

t.test('7.0+ place-relative offsets: a clear error saying what is not read', async (t) => {
  const { tables, rejected } = decode('place_relative', image({ order: 'place-relative', seqs: true, absolutePercpu: false }));
  t.equal(tables.length, 0, 'no table made up');
  t.match(rejected.join('\n'), new RegExp(`names of ${N} symbols decode, but no kallsyms_offsets .*place-relative offsets of Linux 7\\.0\\+`));
});

t.test('offsets not in ascending order: rejected, not garbage', async (t) => {
  const { tables } = decode('unsorted', image({ order: 'names-first', seqs: true, absolutePercpu: false }, false));
  t.equal(tables.length, 0);
});

t.test('the same build twice in one RAM (the image before a reboot): both found, the names decoded once', async (t) => {
  const one = image({ order: 'offsets-first', seqs: false, absolutePercpu: true });
  const { tables } = decode('twice', Buffer.concat([one, Buffer.alloc(8 - (one.length % 8 || 8)), one]));
  t.equal(tables.length, 2, 'two tables');
  const [a, b] = tables;
  if (!a || !b) return;
  t.equal(a.buildKey, b.buildKey, 'one build');
  t.not(a.tokenTablePhys, b.tokenTablePhys, 'at two places');
  t.equal(b.names, a.names, 'the second takes the first\'s names (the same array)');
  t.same(b.names, names);
  t.same([...b.addresses], [...a.addresses], 'addresses decoded from each table');
});
