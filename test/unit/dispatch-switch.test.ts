// The dispatch-switch decoder on hand-assembled code: each slot is attributed to the call its
// nr reaches, through equality tests, ranges, `test r,r`, and a lea/cmp range check that wraps.
import t from 'tap';
import { mapSwitch } from '../../src/views/dispatch.js';

const base = 0xffff_ffff_8100_0000n;
const H = (k: number): bigint => base + 0x10000n * BigInt(k + 1);
const [H0, H1, H2, HR, NI] = [H(0), H(1), H(2), H(3), H(4)];

function code(): Buffer {
  const b: number[] = [];
  const jmp = (target: bigint): void => {
    const next = base + BigInt(b.length + 5);
    const rel = Buffer.alloc(4);
    rel.writeInt32LE(Number(target - next));
    b.push(0xe9, ...rel);
  };
  b.push(0x83, 0xfe, 0x02); //        0: cmp esi, 2
  b.push(0x74, 0x10); //              3: je L2 (21)
  b.push(0x77, 0x13); //              5: ja Lrange (26)
  b.push(0x85, 0xf6); //              7: test esi, esi
  b.push(0x74, 0x05); //              9: je L0 (16)
  jmp(H1); //                        11: nr 1
  jmp(H0); //                        16: L0, nr 0
  jmp(H2); //                        21: L2, nr 2
  b.push(0x8d, 0x46, 0xf0); //       26: Lrange: lea eax, [rsi-0x10]
  b.push(0x83, 0xf8, 0x03); //       29: cmp eax, 3
  b.push(0x77, 0x05); //             32: ja Ldef (39)
  jmp(HR); //                        34: nr 16..19
  jmp(NI); //                        39: Ldef
  return Buffer.from(b);
}

t.test('every nr reaches the right target', async (t) => {
  const m = mapSwitch(code(), base);
  t.same(m.errors, []);
  const at = (nr: number): bigint | undefined =>
    [...m.ranges].sort((x, y) => (x.hi - x.lo) - (y.hi - y.lo)).find((r) => r.lo <= nr && nr <= r.hi)?.target;
  t.equal(at(0), H0);
  t.equal(at(1), H1);
  t.equal(at(2), H2);
  for (const nr of [3, 9, 15, 20, 1000, 0xffff_ffff]) t.equal(at(nr), NI, `nr ${nr}: default (the lea wraps below 16)`);
  for (const nr of [16, 17, 18, 19]) t.equal(at(nr), HR, `nr ${nr}: the range case`);
});

t.test('a rewritten rel32 moves exactly its slot', async (t) => {
  const c = code();
  const evil = base - 0x1000_0000n; // somewhere no kernel symbol is
  c.writeInt32LE(Number(evil - (base + 16n)), 12); // the jmp at 11 (nr 1)
  const m = mapSwitch(c, base);
  t.ok(m.ranges.some((r) => r.lo === 1 && r.hi === 1 && r.target === evil), 'nr 1 now reaches the new target');
  t.ok(m.ranges.some((r) => r.lo === 0 && r.hi === 0 && r.target === H0), 'nr 0 unchanged');
});

t.test('hostile bytes: undecodable or endless code ends with errors, not a hang', async (t) => {
  t.ok(mapSwitch(Buffer.from([0x83, 0xfe, 0x02, 0x74]), base).errors.length > 0, 'truncated branch');
  t.ok(mapSwitch(Buffer.from([0xeb, 0xfe]), base).ranges.length === 0, 'jmp to itself: no handler');
  const loop = Buffer.from([0x83, 0xfe, 0x02, 0x77, 0xfb]); // cmp; ja back to the cmp
  t.same(mapSwitch(loop, base).ranges, [], 'a loop is cut by the visited set');
});
