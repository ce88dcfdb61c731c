// The KVM write trap in a real nested guest: test/trap/run-nested.sh builds the
// patched kvm modules against the lab kernel's Debian version, boots that kernel
// under TCG with AMD SVM (-cpu EPYC), and runs trap_test with npt=1 and npt=0.
// Each of its TAP checks becomes an assertion here.
import t from 'tap';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { packageRoot } from '../../src/native/binding.js';

const script = join(packageRoot(), 'test/trap/run-nested.sh');

const output = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
  const child = spawn('bash', [script], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
  child.stderr.on('data', (d: Buffer) => { stderr = (stderr + d.toString()).slice(-20_000); });
  child.on('close', (code) => resolve({ code, stdout, stderr }));
});

const checks = [...output.stdout.matchAll(/^(not )?ok (\d+) - (.*)$/gm)];
const plan = /^1\.\.(\d+)$/m.exec(output.stdout);
for (const m of output.stdout.matchAll(/^# (.*(?:per write|exits|µs|ns|took|boot).*)$/gm)) t.comment(m[1] as string);
t.ok(checks.length > 0, `run-nested.sh ran checks (stderr tail: ${output.stderr.slice(-500)})`);
t.equal(plan ? Number(plan[1]) : -1, checks.length, 'every planned check reported');
for (const m of checks) t.ok(m[1] === undefined, `nested: ${m[3] as string}`);
t.equal(output.code, 0, 'run-nested.sh exits 0');
