// The KVM write trap's figures, from the nested-guest scripts that also test it
// (test/trap/run-nested.sh, test/trap/chain/run-chain.sh): exits and time per
// refused / allowed / unprotected write inside the nested guest, build and boot
// times, and the whole chain's attack-to-event and restore times.
import { join } from 'node:path';
import { packageRoot } from '../src/native/binding.js';
import { runTapScript } from '../test/trap/tap-script.js';

const FIGURES: readonly [script: string, keep: RegExp][] = [
  ['test/trap/run-nested.sh', /^(measure |build: |total )/],
  ['test/trap/chain/run-chain.sh', /insmod in L2|whole chain|restore-image done in|ms after insmod|after the restore/],
];

export async function bench(): Promise<void> {
  for (const [script, keep] of FIGURES) {
    const t0 = Date.now();
    const r = await runTapScript(join(packageRoot(), script));
    const failed = r.checks.filter((c) => !c.ok);
    console.log(`${script}: ${r.checks.length - failed.length}/${r.checks.length} checks passed, ${((Date.now() - t0) / 1000).toFixed(0)} s`);
    for (const l of r.comments.filter((c) => keep.test(c))) console.log(`  ${l}`);
    for (const c of r.checks.filter((x) => keep.test(x.description))) console.log(`  ${c.description}`);
    if (r.code !== 0) throw new Error(`${script} exited ${String(r.code)}: ${failed.map((c) => c.description).join('; ').slice(0, 500)}`);
  }
}
