// The live supervisor's dispatch-switch decoder runs in a child process: its answer equals the
// in-process decoder's (targets rebased on the body's start), a body is asked for once, and a
// child that dies (SIGSEGV) or lies is a view error for that switch, not a dead supervisor.
import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { mapSwitch, type SwitchMap } from '../../src/views/dispatch.js';
import { ChildSwitchDecoder, parseReply } from '../../src/supervisor/switch-decoder.js';

const base = 0xffff_ffff_8100_0000n;
const H = (k: number): bigint => base + 0x10000n * BigInt(k + 1);

/** cmp esi,1; je L1; ja Ldef; jmp H0; L1: jmp H1; Ldef: jmp H2 */
function body(at: bigint): Buffer {
  const b: number[] = [];
  const jmp = (target: bigint): void => {
    const rel = Buffer.alloc(4);
    rel.writeInt32LE(Number(target - (at + BigInt(b.length + 5))));
    b.push(0xe9, ...rel);
  };
  b.push(0x83, 0xfe, 0x01, 0x74, 0x07, 0x77, 0x0a);
  jmp(H(0)); jmp(H(1)); jmp(H(2));
  return Buffer.from(b);
}

async function answer(dec: ChildSwitchDecoder, name: string, code: Buffer, start: bigint): Promise<SwitchMap> {
  for (let i = 0; i < 1200; i++) {
    const m = dec.decode(name, code, start);
    if (m !== null && !dec.busy) return m;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('the decoder never answered');
}

const sorted = (m: SwitchMap): string[] => m.ranges.map((r) => `${r.lo}-${r.hi}:${r.target.toString(16)}`).sort();

t.test('the child decodes as the process itself does, once per body', async (t) => {
  const dec = new ChildSwitchDecoder();
  t.teardown(() => dec.close());
  const code = body(base);
  t.equal(dec.decode('x64_sys_call', code, base), null, 'first ask: not decoded yet');
  const m = await answer(dec, 'x64_sys_call', code, base);
  t.same(m.errors, []);
  t.same(sorted(m), sorted(mapSwitch(code, base)), 'same ranges and targets as in-process');
  // The same body elsewhere (another KASLR slide): known at once, targets moved with it.
  const other = base + 0x2000_0000n;
  const again = dec.decode('x64_sys_call', code, other);
  t.ok(again, 'a body already decoded is answered at once');
  t.same(again && sorted(again), sorted(mapSwitch(code, other)), 'targets rebased on the new start');
  t.notOk(dec.busy, 'no new child for a known body');
});

t.test('a child that dies or lies is a view error, retried later, never a crash', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'iv-switch-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const segv = join(dir, 'segv.mjs');
  writeFileSync(segv, "process.stdin.resume(); process.kill(process.pid, 'SIGSEGV');\n");
  const dec = new ChildSwitchDecoder(30_000, segv);
  t.teardown(() => dec.close());
  const m = await answer(dec, 'x64_sys_call', body(base), base);
  t.same(m.ranges, []);
  t.match(m.errors[0], /decoder process \(attempt 1 of 3\): killed by SIGSEGV/);

  const liar = join(dir, 'liar.mjs');
  writeFileSync(liar, 'process.stdin.resume(); process.stdout.write(JSON.stringify({ results: [{ ranges: [{ lo: -1, hi: 2, delta: 0 }], errors: [] }] }));\n');
  const dec2 = new ChildSwitchDecoder(30_000, liar);
  t.teardown(() => dec2.close());
  const m2 = await answer(dec2, 'ia32_sys_call', body(base), base);
  t.same(m2.ranges, []);
  t.match(m2.errors[0], /reply malformed/);

  const slow = join(dir, 'slow.mjs');
  writeFileSync(slow, 'setTimeout(() => {}, 60000);\n');
  const dec3 = new ChildSwitchDecoder(500, slow);
  t.teardown(() => dec3.close());
  const m3 = await answer(dec3, 'x32_sys_call', body(base), base);
  t.match(m3.errors[0], /killed by SIGKILL \(timeout\)/);
});

t.test('reply checks', async (t) => {
  t.match(parseReply('not json', 1), /not JSON/);
  t.match(parseReply(JSON.stringify({ results: [] }), 1), /0 results for 1 requests/);
  t.match(parseReply(JSON.stringify({ results: [{ ranges: [], errors: [], extra: 1 }] }), 1), /malformed/);
  t.same(parseReply(JSON.stringify({ results: [{ ranges: [{ lo: 0, hi: 1, delta: -16 }], errors: [] }] }), 1), [{ ranges: [{ lo: 0, hi: 1, delta: -16 }], errors: [] }]);
});
