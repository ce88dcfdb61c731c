// `npm run bench [-- NAME...]`: runs every benchmark module in this folder
// (each exports bench(): Promise<void> and prints its own figures).
import { readdirSync } from 'node:fs';
import { dirname, join, basename } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

interface BenchModule { bench(): Promise<void> }

const here = dirname(fileURLToPath(import.meta.url));
const wanted = process.argv.slice(2);
const names = readdirSync(here)
  // run.js itself and the helpers the benchmarks share are not benchmarks.
  .filter((f) => f.endsWith('.js') && !['run.js', 'stats.js', 'supervisor-run.js'].includes(f))
  .map((f) => basename(f, '.js'))
  .filter((n) => wanted.length === 0 || wanted.includes(n))
  .sort();
if (wanted.length > 0 && names.length !== wanted.length) {
  console.error(`bench: unknown benchmark(s): ${wanted.filter((w) => !names.includes(w)).join(', ')}`);
  process.exit(2);
}
for (const name of names) {
  console.log(`\n== bench ${name}  (npm run bench -- ${name})`);
  const mod = (await import(pathToFileURL(join(here, `${name}.js`)).href)) as BenchModule;
  await mod.bench();
}
