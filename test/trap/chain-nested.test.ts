// The whole write-trap chain in a real nested guest: test/trap/chain/run-chain.sh
// boots the patched KVM under TCG with AMD SVM, and inside it the supervisor
// guards a lab guest run by QEMU under that KVM; a rootkit module in the lab
// guest tries to hook sys_call_table with the trap in #GP mode, then in drop
// mode. Each of its TAP checks becomes an assertion here.
import t from 'tap';
import { join } from 'node:path';
import { packageRoot } from '../../src/native/binding.js';
import { runTapScript } from './tap-script.js';

t.setTimeout(1_800_000); // a cold cache builds the patched modules first (minutes on 2 cores)
const r = await runTapScript(join(packageRoot(), 'test/trap/chain/run-chain.sh'));
for (const c of r.comments.filter((l) => /insmod in L2|whole chain|L1 ran|initramfs/.test(l))) t.comment(c);
t.ok(r.checks.length > 40, `run-chain.sh ran its checks (stderr tail: ${r.stderrTail})`);
t.equal(r.plan ?? -1, r.checks.length, 'every planned check reported');
for (const mode of ['gp', 'drop']) {
  t.ok(r.checks.some((c) => c.ok && new RegExp(`^${mode}: the trap re-armed on the restored guest`).test(c.description)), `${mode}: the chain reached the re-arm after the image restore`);
}
for (const c of r.checks) t.ok(c.ok, `chain: ${c.description}`);
t.equal(r.code, 0, 'run-chain.sh exits 0');
