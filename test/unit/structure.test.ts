// The layout's rules, checked on the sources (docs/ARCHITECTURE.md):
//   - each stage folder imports only the stages before it on the data path (cores never an adapter);
//   - SQLite tables are created only in src/store/ (one migration list);
//   - product code never imports the lab;
//   - no import cycles;
//   - adapters are constructed only in src/supervisor/ and src/cli/ (the composition roots).
import t from 'tap';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { packageRoot } from '../../src/native/binding.js';

const root = packageRoot();
const src = join(root, 'src');

function walk(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? walk(p) : p.endsWith('.ts') ? [p] : [];
  });
}

interface Import { readonly target: string; readonly typeOnly: boolean; readonly line: number }

/** Relative imports of a file (multi-line ones too), resolved to repository paths (.ts). */
function importsOf(file: string): Import[] {
  const text = readFileSync(file, 'utf8');
  const out: Import[] = [];
  const re = /^[ \t]*(?:import|export)[ \t]+(type[ \t]+)?(?:[^;'"]*?[ \t\n]from[ \t]+)?'(\.[^']+)'/gm;
  for (let m = re.exec(text); m; m = re.exec(text)) {
    const spec = m[2] as string;
    out.push({
      target: relative(root, resolve(dirname(file), spec.replace(/\.js$/, '.ts'))),
      typeOnly: m[1] !== undefined,
      line: text.slice(0, m.index).split('\n').length,
    });
  }
  return out;
}

const files = walk(src);

// What each stage may import (besides itself and util). Adapters and the composition roots are not listed: they may use any stage.
const ALLOWED: Record<string, readonly string[]> = {
  native: [],
  memory: ['native'],
  translate: ['memory', 'native'],
  profile: ['memory', 'translate', 'native'],
  views: ['profile', 'translate', 'memory', 'native'],
  events: [],
  policy: ['events'],
  detectors: ['views', 'policy', 'events'],
};

t.test('each stage imports only the stages before it; cores never import an adapter', async (t) => {
  const bad: string[] = [];
  for (const f of files) {
    const rel = relative(root, f);
    const folder = relative(src, f).split('/')[0] as string;
    const allowed = ALLOWED[folder];
    if (!allowed) continue;
    for (const im of importsOf(f)) {
      if (!im.target.startsWith('src/')) { bad.push(`${rel}:${im.line} imports ${im.target} (outside src/)`); continue; }
      const to = im.target.split('/')[1] as string;
      if (to === folder || to === 'util' || allowed.includes(to)) continue;
      bad.push(`${rel}:${im.line} (${folder}) imports ${im.target}`);
    }
  }
  t.same(bad, [], 'no stage imports past its place on the data path');
});

t.test('SQLite tables are created only in src/store/', async (t) => {
  const bad = files.filter((f) => !relative(src, f).startsWith('store/') && /CREATE\s+(TABLE|INDEX)/i.test(readFileSync(f, 'utf8')));
  t.same(bad.map((f) => relative(root, f)), []);
});

t.test('product code never imports the lab', async (t) => {
  const bad = files.flatMap((f) => importsOf(f).filter((im) => im.target.startsWith('lab/')).map((im) => `${relative(root, f)}:${im.line} imports ${im.target}`));
  t.same(bad, []);
});

t.test('no import cycles in src/', async (t) => {
  const graph = new Map(files.map((f) => [relative(root, f), importsOf(f).filter((im) => !im.typeOnly).map((im) => im.target)]));
  const state = new Map<string, 'open' | 'done'>();
  const cycles: string[] = [];
  const visit = (n: string, path: string[]): void => {
    if (state.get(n) === 'done') return;
    if (state.get(n) === 'open') { cycles.push([...path.slice(path.indexOf(n)), n].join(' -> ')); return; }
    state.set(n, 'open');
    for (const m of graph.get(n) ?? []) if (graph.has(m)) visit(m, [...path, n]);
    state.set(n, 'done');
  };
  for (const n of graph.keys()) visit(n, []);
  t.same(cycles, [], 'runtime imports form no cycle');
});

t.test('adapters are constructed only by the composition roots (src/supervisor/, src/cli/)', async (t) => {
  const ADAPTERS = /\bnew\s+(EventStore|Telemetry|QemuVm|QemuGuestController|IntrospectorScanner|SyscallTableTrap|OtaAgent|SqliteLadderStateStore|SqliteBaselineStore)\s*\(|\b(startWebServer|startHostMetrics|FilePolicyStore\.open)\s*\(/;
  const bad: string[] = [];
  for (const f of files) {
    const rel = relative(src, f);
    if (rel.startsWith('supervisor/') || rel.startsWith('cli/')) continue;
    readFileSync(f, 'utf8').split('\n').forEach((l, i) => {
      if (/^\s*(\/\/|\*)/.test(l)) return;
      const m = ADAPTERS.exec(l);
      // An adapter's own file may hold its factory.
      if (m && !(m[2] && l.includes('export'))) bad.push(`src/${rel}:${i + 1}: ${l.trim().slice(0, 100)}`);
    });
  }
  t.same(bad, []);
});
