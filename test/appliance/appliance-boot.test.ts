// The appliance image boots from its own disk under TCG with AMD SVM, its supervisor starts from
// the service and guards its guest under nested KVM with the write trap, reports to a TLS broker
// on this host, answers on its web port, refuses a rootkit's write to sys_call_table and reports
// it; after a reboot its state is intact and the guest guarded again (test/appliance/run-appliance.sh).
// Each of the script's TAP checks becomes an assertion here.
import t from 'tap';
import { join } from 'node:path';
import { packageRoot } from '../../src/native/binding.js';
import { runTapScript } from '../trap/tap-script.js';

// A cold cache builds the patched modules and the image first (minutes on 2 busy cores); each boot
// of the appliance and its nested guest under TCG takes minutes too.
t.setTimeout(2_400_000);
const r = await runTapScript(join(packageRoot(), 'test/appliance/run-appliance.sh'));
for (const c of r.comments.filter((l) => /build-appliance|boot \d|whole test|SKIP|ladders/.test(l))) t.comment(c);
t.ok(r.checks.length >= 8, `run-appliance.sh ran its checks (stderr tail: ${r.stderrTail})`);
t.equal(r.plan ?? -1, r.checks.length, 'every planned check reported');
t.ok(r.checks.some((c) => c.ok && /refused and reached the broker as a refused-write event/.test(c.description)), 'a refused write reached the broker');
for (const c of r.checks) t.ok(c.ok, `appliance: ${c.description}`);
t.equal(r.code, 0, 'run-appliance.sh exits 0');
