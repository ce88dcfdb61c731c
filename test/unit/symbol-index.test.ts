// The symbol name index (an open-addressed table of typed arrays): the same answers as a Map of
// the names with kallsyms' rule (a global definition wins over a static one of the same name,
// else the first listed), for many names, duplicates and names never listed.
import t from 'tap';
import { NameIndex, SymbolTable } from '../../src/profile/symbols.js';

/** The rule the index implements, as a Map (what buildIndex did before). */
function reference(names: readonly string[], types: string): Map<string, number> {
  const isGlobal = (c: string | undefined): boolean => c !== undefined && c >= 'A' && c <= 'Z';
  const m = new Map<string, number>();
  names.forEach((n, i) => {
    const prev = m.get(n);
    if (prev === undefined || (isGlobal(types[i]) && !isGlobal(types[prev]))) m.set(n, i);
  });
  return m;
}

t.test('duplicates: a global wins over statics, else the first', async (t) => {
  const names = ['a', 'dup', 'dup', 'dup', 'stat', 'stat', 'late', 'late', 'late', ''];
  const types = 'ttTTtdtTTt';
  const idx = new NameIndex(names, types);
  t.equal(idx.get('dup'), 2, 'the first global of three');
  t.equal(idx.get('stat'), 4, 'statics only: the first');
  t.equal(idx.get('late'), 7, 'a global after a static');
  t.equal(idx.get('a'), 0);
  t.equal(idx.get(''), 9, 'an empty name is a name like another');
  t.equal(idx.get('absent'), undefined);
  t.equal(idx.has('dup'), true);
  t.equal(idx.has('dupe'), false);
});

t.test('many names (collisions in the table): every answer as the Map gives it', async (t) => {
  // ~60k names, a quarter of them repeated with other types, plus near-misses that are absent.
  const names: string[] = [];
  let types = '';
  let seed = 12345;
  const rnd = (): number => { seed = (Math.imul(seed, 1103515245) + 12345) >>> 0; return seed; };
  for (let i = 0; i < 48_000; i++) {
    names.push(`sym_${(rnd() % 40_000).toString(36)}_${i % 7}`);
    types += 'tTdDbBrR'[rnd() % 8];
  }
  for (let i = 0; i < 12_000; i++) { names.push(names[rnd() % 48_000] as string); types += 'tT'[rnd() % 2]; }
  const idx = new NameIndex(names, types);
  const ref = reference(names, types);
  let wrong = 0;
  for (const [n, i] of ref) if (idx.get(n) !== i) wrong++;
  t.equal(wrong, 0, `${ref.size} distinct names answered as the Map does`);
  let found = 0;
  for (let i = 0; i < 5000; i++) if (idx.get(`sym_${i.toString(36)}_9`) !== undefined || idx.get(`x${i}`) !== undefined) found++;
  t.equal(found, 0, 'names never listed are absent');
});

t.test('SymbolTable answers through it; tables sharing names share it', async (t) => {
  const names = ['_text', 'f', 'f', 'g'];
  const a = new SymbolTable(names, 'TtTt', BigUint64Array.from([0x1000n, 0x1010n, 0x1020n, 0x1030n]));
  t.equal(a.address('f'), 0x1020n, 'the global f');
  t.equal(a.type('f'), 'T');
  t.equal(a.has('g'), true);
  t.equal(a.address('h'), undefined);
  t.throws(() => a.require('h'), /kernel symbol h not found/);
  // Another table of the same names (another image of the build), addresses in another order.
  const b = new SymbolTable(names, 'TtTt', BigUint64Array.from([0x2030n, 0x2020n, 0x2010n, 0x2000n]));
  t.equal(b.address('f'), 0x2010n);
  t.same(b.lookup(0x2011n), { name: 'f', address: 0x2010n, offset: 1n }, 'its own address order');
  t.equal(b.extent('g'), 0x10);
  // Same names array, other types: its own index (the global is another entry).
  const c = new SymbolTable(names, 'TTtt', BigUint64Array.from([0x1000n, 0x1010n, 0x1020n, 0x1030n]));
  t.equal(c.address('f'), 0x1010n);
});
