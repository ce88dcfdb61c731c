// What `introvisor inspect DUMP` loads before it needs it: the command module pulls in neither
// Ajv nor iced-x86 (they come at their first use, through require), and the deferred loaders give
// the same working modules an import would.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { ajvClass, icedX86 } from '../../src/util/deferred-modules.js';

const here = fileURLToPath(new URL('.', import.meta.url));

t.test('importing the inspect command loads neither Ajv nor iced-x86', async (t) => {
  // A fresh process: this one has loaded them already (the import below).
  const script = `
    import { createRequire } from 'node:module';
    await import(${JSON.stringify(new URL('../../src/cli/commands/inspect.js', import.meta.url).href)});
    const loaded = Object.keys(createRequire(import.meta.url).cache).filter((k) => /node_modules\\/(ajv|iced-x86)\\//.test(k));
    console.log(JSON.stringify(loaded));`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { cwd: here, encoding: 'utf8', timeout: 60_000 });
  t.equal(r.status, 0, r.stderr);
  t.same(JSON.parse(r.stdout.trim()), [], 'no Ajv or iced-x86 file in the require cache');
});

t.test('the deferred loaders give working modules, the same as an import', async (t) => {
  const Ajv = ajvClass();
  const v = new Ajv().compile({ type: 'object', required: ['a'] });
  t.equal(v({ a: 1 }), true);
  t.equal(v({}), false);
  t.equal(ajvClass(), Ajv, 'loaded once');
  const iced = icedX86();
  t.equal(iced, icedX86(), 'loaded once');
  t.equal(iced.Decoder, (await import('iced-x86')).Decoder, 'one instance with an ESM import of it (one WebAssembly instance)');
  const d = new iced.Decoder(64, Buffer.from([0x83, 0xfe, 0x02]), iced.DecoderOptions.None);
  const ins = d.decode();
  t.equal(ins.mnemonic, iced.Mnemonic.Cmp);
  ins.free();
  d.free();
});
