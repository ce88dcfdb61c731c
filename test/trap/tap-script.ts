// Runs a test script that prints TAP ("ok N - ..." / "not ok N - ..." and a plan "1..N")
// and hands back its checks, so a tap file can assert each one.
import { spawn } from 'node:child_process';

export interface ScriptChecks {
  code: number | null;
  stdout: string;
  stderrTail: string;
  checks: { ok: boolean; description: string }[];
  plan: number | null;
  comments: string[];
}

export function runTapScript(script: string, args: string[] = []): Promise<ScriptChecks> {
  return new Promise((resolve) => {
    const child = spawn('bash', [script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { stderr = (stderr + d.toString()).slice(-20_000); });
    child.on('close', (code) => {
      const checks = [...stdout.matchAll(/^(not )?ok (\d+) - (.*)$/gm)].map((m) => ({ ok: m[1] === undefined, description: m[3] as string }));
      const plan = /^1\.\.(\d+)$/m.exec(stdout);
      const comments = [...stdout.matchAll(/^# (.*)$/gm)].map((m) => m[1] as string);
      resolve({ code, stdout, stderrTail: stderr.slice(-500), checks, plan: plan ? Number(plan[1]) : null, comments });
    });
  });
}
