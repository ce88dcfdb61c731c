// Clean text copies kept against a build's base: every byte range reads back as the copy it was
// made from (runs inside, across and at the edges of pages), only the differences are kept, and a
// copy too different from its base, or of another length, is kept whole.
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { TextCopy } from '../../src/views/text-copy.js';

const PAGE = 4096;
const base = randomBytes(PAGE * 16);

/** `base` with a 4-byte field rewritten every `every` bytes from `from` (a relocation), plus a few odd bytes. */
function relocated(every: number, from = 100): Buffer {
  const raw = Buffer.from(base);
  for (let o = from; o + 4 <= raw.length; o += every) raw.writeUInt32LE((raw.readUInt32LE(o) + 0x2c00000) >>> 0, o);
  raw[0] = (raw[0] as number) ^ 1; // the first byte
  raw[raw.length - 1] = (raw[raw.length - 1] as number) ^ 1; // the last
  raw.writeUInt32LE(0xdeadbeef, PAGE - 2); // across a page edge
  return raw;
}

t.test('every range of a copy kept as runs reads back as the copy', async (t) => {
  const raw = relocated(997);
  const copy = TextCopy.of(Buffer.from(raw), base);
  t.equal(copy.length, raw.length);
  t.equal(copy.baseBuffer, base, 'kept against the base');
  t.ok(copy.ownBytes > 0 && copy.ownBytes < raw.length / 20, `only the differences are kept (${copy.ownBytes} bytes)`);
  for (const [off, len] of [[0, raw.length], [0, 1], [raw.length - 1, 1], [PAGE - 4, 8], [PAGE - 2, 2], [5 * PAGE, PAGE], [98, 10], [1, 0]] as const) {
    t.same(copy.bytes(off, len), raw.subarray(off, off + len), `[${off}, +${len})`);
  }
  let bad = 0;
  for (let i = 0; i < 2000; i++) {
    const off = Math.floor(Math.random() * raw.length);
    const len = Math.floor(Math.random() * 300);
    if (!copy.bytes(off, len)?.equals(raw.subarray(off, off + len))) bad++;
  }
  t.equal(bad, 0, '2000 random ranges');
  t.same(copy.bytes(raw.length - 3, 10), raw.subarray(raw.length - 3), 'cut at the end');
  t.equal(copy.bytes(raw.length, 1), null, 'outside');
  t.equal(copy.bytes(-1, 1), null, 'before');
  t.equal(copy.bytes(0.5, 1), null, 'not a byte offset');
});

t.test('a range with no difference is the base itself (no copy made); one with differences is not', async (t) => {
  const raw = Buffer.from(base);
  raw[3 * PAGE + 10] = (raw[3 * PAGE + 10] as number) ^ 0xff;
  const copy = TextCopy.of(raw, base);
  const same = copy.bytes(PAGE, PAGE);
  t.equal(same?.buffer, base.buffer, 'a view of the base');
  const changed = copy.bytes(3 * PAGE, PAGE);
  t.not(changed?.buffer, base.buffer);
  t.equal(changed?.[10], raw[3 * PAGE + 10]);
});

t.test('no base, another length, or too many differences: kept whole', async (t) => {
  const raw = relocated(997);
  t.equal(TextCopy.of(raw, null).baseBuffer, raw, 'no base');
  t.equal(TextCopy.of(raw, base.subarray(0, base.length - PAGE)).baseBuffer, raw, 'another length');
  const far = relocated(9);
  const whole = TextCopy.of(far, base);
  t.equal(whole.baseBuffer, far, 'more than one byte in eight differs');
  t.equal(whole.ownBytes, 0);
  t.same(whole.bytes(0, far.length), far);
  t.equal(TextCopy.of(Buffer.from(base), base).ownBytes, 0, 'an identical copy keeps nothing of its own');
});
