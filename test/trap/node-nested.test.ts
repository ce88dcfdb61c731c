// The write trap through introvisor's native binding and SyscallTableTrap in a
// real nested guest with the patched KVM (and again with the stock KVM):
// test/trap/node/run-nested-node.sh; each of its TAP checks is an assertion.
import t from 'tap';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { packageRoot } from '../../src/native/binding.js';

t.setTimeout(1_800_000); // a cold cache builds the patched modules first (minutes on 2 cores)
const script = join(packageRoot(), 'test/trap/node/run-nested-node.sh');
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
for (const m of output.stdout.matchAll(/^# (.*(?:took|initramfs|kernel).*)$/gm)) t.comment(m[1] as string);
t.ok(checks.length > 20, `run-nested-node.sh ran its checks (stderr tail: ${output.stderr.slice(-500)})`);
t.equal(plan ? Number(plan[1]) : -1, checks.length, 'every planned check reported');
t.ok(checks.some((m) => /patched: guard: one refused-write event naming sys_call_table\[62\]/.test(m[3] as string)), 'the patched run reached the watchdog guard');
t.ok(checks.some((m) => /stock: "trap unavailable" logged once/.test(m[3] as string)), 'the stock run reached the unavailable check');
for (const m of checks) t.ok(m[1] === undefined, `nested node: ${m[3] as string}`);
t.equal(output.code, 0, 'run-nested-node.sh exits 0');
