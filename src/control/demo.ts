// The demo's attacks on a lab guest (it carries the attack modules under
// /lib/introvisor/), as the shell line each plays inside the guest. Played
// through the agent (exec), only on guests whose images are the lab's.

export const ATTACKS = ['kill-critical', 'hook-syscall', 'hide-process', 'hide-module'] as const;
export type Attack = (typeof ATTACKS)[number];
export const LAB_ATTACK_MODULES = '/lib/introvisor';

/** The shell line that plays an attack in the guest; critical: the guest's critical process names. */
export function attackCommand(attack: Attack, critical: readonly string[], modules: string = LAB_ATTACK_MODULES): string {
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
