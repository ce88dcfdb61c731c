import { spawn } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';

/** The absolute path of a program on PATH, or undefined. */
export function findOnPath(program: string): string | undefined {
  if (program.includes('/')) {
    try { accessSync(program, constants.X_OK); return program; } catch { return undefined; }
  }
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (!dir) continue;
    const p = join(dir, program);
    try { accessSync(p, constants.X_OK); return p; } catch { /* next */ }
  }
  return undefined;
}

export interface RunResult { code: number | null; stdout: string; stderr: string }

/** Runs a short host command to completion; rejects with its stderr on failure. */
export function run(program: string, args: string[], timeoutMs = 60_000): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(program, args, { stdio: ['ignore', 'pipe', 'pipe'], timeout: timeoutMs });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => { if (stdout.length < 1 << 20) stdout += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { if (stderr.length < 1 << 20) stderr += d.toString(); });
    child.on('error', (e) => reject(new Error(`${program}: ${e.message}`)));
    child.on('close', (code) => {
      if (code === 0) resolve({ code, stdout, stderr });
      else reject(new Error(`${program} ${args.join(' ')} exited ${code}: ${stderr.trim().slice(0, 1000)}`));
    });
  });
}
