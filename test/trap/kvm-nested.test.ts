// The KVM write trap in a real nested guest: test/trap/run-nested.sh builds the
// patched kvm modules against the lab kernel's Debian version, boots that kernel
// under TCG with AMD SVM (-cpu EPYC), and runs trap_test with npt=1 and npt=0.
// Each of its TAP checks becomes an assertion here.
import t from 'tap';
import { join } from 'node:path';
import { packageRoot } from '../../src/native/binding.js';
import { runTapScript } from './tap-script.js';

t.setTimeout(1_800_000); // a cold cache unpacks linux-source and builds the patched modules first
const r = await runTapScript(join(packageRoot(), 'test/trap/run-nested.sh'));
for (const c of r.comments.filter((l) => /per write|exits|µs|ns|took|boot/.test(l))) t.comment(c);
t.ok(r.checks.length > 0, `run-nested.sh ran checks (stderr tail: ${r.stderrTail})`);
t.equal(r.plan ?? -1, r.checks.length, 'every planned check reported');
for (const c of r.checks) t.ok(c.ok, `nested: ${c.description}`);
t.equal(r.code, 0, 'run-nested.sh exits 0');
