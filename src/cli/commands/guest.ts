// `introvisor guest <name> [view | operation]`: a supervised guest, asked of the
// running supervisor over its control socket (root only).
import { controlRequest } from '../../control/client.js';
import { controlSocketPath, type ControlRequest } from '../../control/protocol.js';
import type { ModuleRow, ProcessView, SyscallRow } from '../../control/views.js';
import { ACTION_KINDS, type ActionKind } from '../../policy/types.js';
import { defaultSupervisorRunRoot } from '../../vm/guest-layout.js';
import { parseArgs, intFlag, UsageError } from '../args.js';
import { ProgressPrinter, progressLine, type Progress } from '../../util/progress.js';

export const usage = 'guest [<name> [ps|modules|syscalls|findings|trap|exec -- CMD...|baseline accept|release|action <kind> [--target T]|pause|resume]] [--json] [--socket PATH]   a supervised guest, through the supervisor';

/** The socket of the running supervisor: --socket, else the one in the default run directory. */
export const socketOf = (flag: string | true | undefined): string => (typeof flag === 'string' ? flag : controlSocketPath(defaultSupervisorRunRoot()));

const time = (ms: unknown): string => (typeof ms === 'number' ? new Date(ms).toISOString() : 'never');

export function printProcesses(v: ProcessView): string {
  const out = [`processes at ${time(v.atMs)}: OUT = kernel task list (from memory), IN = the guest's own ps (agent); ! = seen on one side only`];
  if (v.outsideError) out.push(`  outside: ${v.outsideError}`);
  if (v.insideError) out.push(`  inside: ${v.insideError}`);
  out.push(`  ${'PID'.padStart(7)} ${'PPID'.padStart(7)} OUT IN  COMM`);
  for (const r of v.rows) out.push(`${r.mismatch ? '!' : ' '} ${String(r.pid).padStart(7)} ${String(r.ppid ?? '-').padStart(7)} ${(r.outside ?? '-').padEnd(3)} ${(r.inside ?? '-').padEnd(3)} ${r.comm}${r.kernelThread ? ' [kthread]' : ''}${r.mismatch ? (r.outside === null ? '   NOT ON THE KERNEL TASK LIST' : '   NOT SEEN BY THE GUEST') : ''}`);
  return out.join('\n');
}

function printModules(v: { atMs: number | null; error: string | null; rows: ModuleRow[] }): string {
  const out = [`modules at ${time(v.atMs)}: LIST = the kernel's module list (lsmod), SYSFS = /sys/module kobjects; ! = on one only`];
  if (v.error) out.push(`  error: ${v.error}`);
  out.push(`  ${'NAME'.padEnd(28)} LIST SYSFS ${'BASE'.padEnd(18)}      SIZE`);
  for (const r of v.rows) out.push(`${r.mismatch ? '!' : ' '} ${r.name.padEnd(28)} ${(r.onList ? 'yes' : 'NO').padEnd(4)} ${(r.inSysfs ? 'yes' : 'NO').padEnd(5)} ${r.coreBase.padEnd(18)} ${String(r.coreSize).padStart(9)}`);
  return out.join('\n');
}

function printSyscalls(v: { atMs: number | null; error: string | null; tables: { table: string; address: string; entries: number; suspicious: number; rows: SyscallRow[]; errors: string[] }[] }): string {
  const out = [`syscall tables at ${time(v.atMs)}`];
  if (v.error) out.push(`  error: ${v.error}`);
  for (const t of v.tables) {
    out.push(`  ${t.table} at ${t.address}: ${t.entries} entries, ${t.suspicious} not holding their own handler`);
    for (const r of t.rows) out.push(`  ! ${String(r.nr).padStart(4)} ${r.target} ${r.owner} (expected ${r.expected ?? '?'})`);
    for (const e of t.errors) out.push(`    error: ${e}`);
  }
  return out.join('\n');
}

function printFindings(v: { atMs: number | null; findings: { kind: string; severity: string; summary: string; firstSeenMs: number; evidence: unknown }[] }): string {
  const out = [`open findings at ${time(v.atMs)}: ${v.findings.length}`];
  for (const f of v.findings) out.push(`  ${f.severity.padEnd(8)} ${f.kind}: ${f.summary} (since ${time(f.firstSeenMs)})`, `           evidence ${JSON.stringify(f.evidence).slice(0, 400)}`);
  return out.join('\n');
}

interface Summary { name: string; watching: boolean; scans: number; lastScanAtMs: number | null; lastScanMs: number | null; agent: string | null; kernel: string | null; snapshotError: string | null; openFindings: number; held: { reason: string } | null; pending: { action: string } | null; progress: Progress | null; ladders: { fault: string; phase: string; rung: number; attempt: number }[]; trap: { status: string; detail: string | null } }

export function printSummary(s: Summary): string {
  return [
    `${s.name}: ${s.watching ? 'watched' : 'WATCHING PAUSED'}, ${s.scans} scans, last ${time(s.lastScanAtMs)}${s.lastScanMs !== null ? ` (${s.lastScanMs} ms)` : ''}`,
    `  kernel ${s.kernel ?? `unread${s.snapshotError ? ` (${s.snapshotError})` : ''}`}; agent ${s.agent ?? '?'}; ${s.openFindings} open finding(s)`,
    `  write trap ${s.trap.status}${s.trap.detail ? `: ${s.trap.detail}` : ''}`,
    ...(s.held ? [`  HELD: ${s.held.reason}`] : []),
    ...(s.pending ? [`  action in progress: ${s.pending.action}`] : []),
    ...(s.progress ? [`  under way: ${progressLine(s.progress, false)}`] : []),
    ...s.ladders.map((l) => `  ladder ${l.fault}: ${l.phase}, rung ${l.rung}, attempt ${l.attempt}`),
  ].join('\n');
}

export async function run(argv: string[]): Promise<number> {
  const dd = argv.indexOf('--');
  const cmd = dd >= 0 ? argv.slice(dd + 1) : [];
  const args = parseArgs(dd >= 0 ? argv.slice(0, dd) : argv, { boolean: ['json'], valued: ['socket', 'target', 'timeout'] });
  const socket = socketOf(args.flags.get('socket'));
  const json = args.flags.has('json');
  const [name, what, ...rest] = args.positional;
  const ask = (req: ControlRequest, timeoutMs?: number): Promise<unknown> => controlRequest(socket, req, timeoutMs);
  const show = (v: unknown, print: (v: never) => string): void => console.log(json ? JSON.stringify(v, null, 2) : print(v as never));

  if (name === undefined) {
    const gs = await ask({ op: 'guests' }) as Summary[];
    show(gs, (v: Summary[]) => v.map(printSummary).join('\n'));
    return 0;
  }
  if (what !== 'exec' && cmd.length > 0) throw new UsageError('"--" and a command go with exec only');
  switch (what) {
    case undefined: show(await ask({ op: 'view', guest: name, view: 'summary' }), printSummary); return 0;
    case 'ps': show(await ask({ op: 'view', guest: name, view: 'ps' }), printProcesses); return 0;
    case 'modules': show(await ask({ op: 'view', guest: name, view: 'modules' }), printModules); return 0;
    case 'syscalls': show(await ask({ op: 'view', guest: name, view: 'syscalls' }), printSyscalls); return 0;
    case 'findings': show(await ask({ op: 'view', guest: name, view: 'findings' }), printFindings); return 0;
    case 'trap': show(await ask({ op: 'view', guest: name, view: 'trap' }), (v: { status: string; detail: string | null }) => `write trap ${v.status}${v.detail ? `: ${v.detail}` : ''}`); return 0;
    case 'exec': {
      if (cmd.length === 0) throw new UsageError('usage: introvisor guest <name> exec -- COMMAND [ARG...]');
      const timeoutSec = intFlag(args, 'timeout', 30, 1, 600);
      const r = await ask({ op: 'exec', guest: name, argv: cmd, timeoutSec }, timeoutSec * 1000 + 10_000) as { exitCode: number | null; signal: number | null; stdout: string; stderr: string; truncated: boolean };
      if (json) console.log(JSON.stringify(r, null, 2));
      else {
        process.stdout.write(r.stdout);
        process.stderr.write(r.stderr);
        if (r.truncated) console.error('(output truncated)');
      }
      return r.exitCode ?? 128 + (r.signal ?? 0);
    }
    case 'baseline':
      if (rest[0] !== 'accept') throw new UsageError('usage: introvisor guest <name> baseline accept');
      show(await ask({ op: 'baseline-accept', guest: name }), (v: { detail: string }) => v.detail);
      return 0;
    case 'release': show(await ask({ op: 'release', guest: name }), (v: { detail: string }) => v.detail); return 0;
    case 'pause': case 'resume':
      show(await ask({ op: what, guest: name }), (v: { watching: boolean }) => `${name}: watching ${v.watching ? 'resumed' : 'paused'}`);
      return 0;
    case 'action': {
      const kind = rest[0];
      if (!kind || !(ACTION_KINDS as readonly string[]).includes(kind)) throw new UsageError(`usage: introvisor guest <name> action <${ACTION_KINDS.join('|')}> [--target T]`);
      const target = args.flags.get('target');
      // Progress on stderr (stdout keeps the result alone, for --json and pipes).
      const bar = new ProgressPrinter(process.stderr);
      let r: unknown;
      try {
        r = await controlRequest(socket, { op: 'action', guest: name, action: kind as ActionKind, ...(typeof target === 'string' ? { target } : {}), progress: true }, 300_000, (p) => bar.update(p));
      } finally {
        bar.done();
      }
      show(r, (v: { action: string; detail: string | null; durationMs: number }) => `${v.action} done in ${v.durationMs} ms: ${v.detail ?? ''}`);
      return 0;
    }
    default: throw new UsageError(`unknown guest subcommand "${what}" (usage: introvisor ${usage})`);
  }
}
