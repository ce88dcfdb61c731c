// `introvisor demo attack <kind> [guest]`: plays an attack inside a supervised
// lab guest through the supervisor's control socket (exec via the guest agent),
// so the page and `introvisor guest` show finding -> ladder -> healthy. The lab
// guest carries the attack modules under /lib/introvisor/.
import { controlRequest } from '../../control/client.js';
import type { ControlRequest } from '../../control/protocol.js';
import { parseArgs, UsageError } from '../args.js';
import { socketOf } from './guest.js';

export const ATTACKS = ['kill-critical', 'hook-syscall', 'hide-process', 'hide-module'] as const;
export type Attack = (typeof ATTACKS)[number];

export const usage = `demo attack <${ATTACKS.join('|')}> [guest] [--modules DIR] [--socket PATH]   play an attack in a lab guest (default guest: demo)`;

/** The shell line that plays an attack in the guest; critical: the guest's critical process names. */
export function attackCommand(attack: Attack, critical: readonly string[], modules: string): string {
  switch (attack) {
    case 'kill-critical': {
      const name = critical[0];
      if (!name) throw new Error('the guest has no critical process to kill');
      return `kill -9 $(pidof ${name})`;
    }
    // Entries 39 (getpid) and 62 (kill) of sys_call_table pointed into the module.
    case 'hook-syscall': return `insmod ${modules}/iv_syscall_hook.ko nrs=39,62`;
    // A sleeper unlinked from the kernel's task list: ps inside still lists it, the task list does not.
    case 'hide-process': return `sleep 100000 </dev/null >/dev/null 2>&1 & insmod ${modules}/iv_dkom_hide.ko pid=$!`;
    case 'hide-module': return `insmod ${modules}/iv_hide_module.ko`;
  }
}

export async function run(argv: string[]): Promise<number> {
  const args = parseArgs(argv, { boolean: [], valued: ['socket', 'modules'] });
  const [verb, attack, guest = 'demo', ...extra] = args.positional;
  if (verb !== 'attack' || !attack || extra.length > 0) throw new UsageError(`usage: introvisor ${usage}`);
  if (!(ATTACKS as readonly string[]).includes(attack)) throw new UsageError(`unknown attack "${attack}": one of ${ATTACKS.join(', ')}`);
  const socket = socketOf(args.flags.get('socket'));
  const modules = (args.flags.get('modules') as string | undefined) ?? '/lib/introvisor';
  const ask = (req: ControlRequest, timeoutMs?: number): Promise<unknown> => controlRequest(socket, req, timeoutMs);
  const summary = await ask({ op: 'view', guest, view: 'summary' }) as { critical: string[] };
  const line = attackCommand(attack as Attack, summary.critical, modules);
  console.log(`${guest}: ${line}`);
  const r = await ask({ op: 'exec', guest, argv: ['/bin/sh', '-c', line], timeoutSec: 30 }, 45_000) as { exitCode: number | null; stderr: string };
  if (r.exitCode !== 0) {
    console.error(`the attack failed in the guest (exit ${String(r.exitCode)}): ${r.stderr.trim()}`);
    return 1;
  }
  console.log(`played. Watch it: introvisor guest ${guest} findings; introvisor log --guest ${guest} --since 5m`);
  return 0;
}
