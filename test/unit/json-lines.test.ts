import t from 'tap';
import { JsonLineDecoder, encodeJsonLine } from '../../src/qemu/json-lines.js';

t.test('splits lines across chunks and parses each', async (t) => {
  const d = new JsonLineDecoder();
  t.same(d.push(Buffer.from('{"a":1}\n{"b"')), [{ kind: 'message', value: { a: 1 } }]);
  t.same(d.push(Buffer.from(':2}\n')), [{ kind: 'message', value: { b: 2 } }]);
});

t.test('reports garbage instead of throwing', async (t) => {
  const d = new JsonLineDecoder();
  const out = d.push(Buffer.from('not json\n{"ok":true}\n'));
  t.equal(out.length, 2);
  t.equal(out[0]?.kind, 'garbage');
  t.same(out[1], { kind: 'message', value: { ok: true } });
});

t.test('skipToDelimiter drops everything up to the 0xFF byte', async (t) => {
  const d = new JsonLineDecoder();
  d.push(Buffer.from('{"return": {"half'));
  d.skipToDelimiter();
  t.same(d.push(Buffer.from('stale"}}\n{"return": 5}\n')), [], 'nothing before the delimiter is a message');
  t.same(d.push(Buffer.concat([Buffer.from([0xff]), Buffer.from('{"return": 42}\n')])), [{ kind: 'message', value: { return: 42 } }]);
});

t.test('a line longer than the bound is dropped, not buffered', async (t) => {
  const d = new JsonLineDecoder(16);
  const out = d.push(Buffer.from('{"x":"' + 'a'.repeat(64)));
  t.equal(out.length, 1);
  t.equal(out[0]?.kind, 'garbage');
  t.same(d.push(Buffer.from('\n{"y":1}\n')).filter((e) => e.kind === 'message'), [{ kind: 'message', value: { y: 1 } }]);
});

t.test('encoded commands never contain 0xFF', async (t) => {
  const b = encodeJsonLine({ execute: 'x', arguments: { s: '\u00ff\uffff\u{10ffff}' } });
  t.equal(b.indexOf(0xff), -1);
  t.equal(b[b.length - 1], 0x0a);
});
