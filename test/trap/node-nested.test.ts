// The write trap through introvisor's native binding and SyscallTableTrap in a
// real nested guest with the patched KVM (and again with the stock KVM):
// test/trap/node/run-nested-node.sh; each of its TAP checks is an assertion.
import t from 'tap';
import { join } from 'node:path';
import { packageRoot } from '../../src/native/binding.js';
import { runTapScript } from './tap-script.js';

t.setTimeout(1_800_000); // a cold cache builds the patched modules first (minutes on 2 cores)
const r = await runTapScript(join(packageRoot(), 'test/trap/node/run-nested-node.sh'));
for (const c of r.comments.filter((l) => /took|initramfs|kernel/.test(l))) t.comment(c);
t.ok(r.checks.length > 20, `run-nested-node.sh ran its checks (stderr tail: ${r.stderrTail})`);
t.equal(r.plan ?? -1, r.checks.length, 'every planned check reported');
t.ok(r.checks.some((c) => /patched: guard: one refused-write event naming sys_call_table\[62\]/.test(c.description)), 'the patched run reached the watchdog guard');
t.ok(r.checks.some((c) => /stock: "trap unavailable" logged once/.test(c.description)), 'the stock run reached the unavailable check');
for (const c of r.checks) t.ok(c.ok, `nested node: ${c.description}`);
t.equal(r.code, 0, 'run-nested-node.sh exits 0');
