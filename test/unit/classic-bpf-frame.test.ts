// The shape of a classic BPF JIT allocation (kernels < 5.19), which has no kernel record to own it.
// The first case is the page a Debian 11 guest's systemd left (a seccomp filter whose random hole
// offset was 0): the image right after the header's padding, 4 bytes of int3 before it.
import t from 'tap';
import { isClassicBpfFrame } from '../../src/views/module-area.js';

const PROLOGUE_510 = Buffer.from('6666666690554889e5', 'hex');
const BODY = Buffer.from('53415531c04531ed4889fb8b4304be3e0000c04839f00f858e0100008b4300', 'hex');

function frame(pages: number, at: number, prologue = PROLOGUE_510, body = BODY, count = pages): Buffer {
  const b = Buffer.alloc(pages * 4096, 0xcc);
  b.writeUInt32LE(count, 0);
  prologue.copy(b, at);
  body.copy(b, at + prologue.length);
  return b;
}

t.test('frames the JIT makes', async (t) => {
  t.ok(isClassicBpfFrame(frame(1, 8)), 'image at the header\'s image[] (hole offset 0): seen on Debian 11');
  t.ok(isClassicBpfFrame(frame(1, 4)), 'image[] 4-aligned right after the page count (5.4\'s header)');
  t.ok(isClassicBpfFrame(frame(1, 0x5a4)), 'image deep in the hole');
  t.ok(isClassicBpfFrame(frame(2, 0x10, Buffer.from('0f1f440000554889e5', 'hex'))), 'two pages, the other 5-byte nop');
});

t.test('what is not such a frame', async (t) => {
  t.notOk(isClassicBpfFrame(frame(1, 10)), 'image not 4-aligned');
  t.notOk(isClassicBpfFrame(frame(1, 8, PROLOGUE_510, BODY, 2)), 'page count does not match the allocation');
  t.notOk(isClassicBpfFrame(frame(1, 8, Buffer.from('909090909090909090', 'hex'))), 'no JIT prologue');
  t.notOk(isClassicBpfFrame(frame(1, 8, PROLOGUE_510, Buffer.alloc(0))), 'a prologue and nothing after it');
  const noFill = frame(1, 8);
  noFill[5] = 0x90;
  t.notOk(isClassicBpfFrame(noFill), 'something other than int3 between the header and the image');
  t.notOk(isClassicBpfFrame(Buffer.alloc(100)), 'shorter than a page');
});
