// What each rung of a policy's ladders needs from a guest, checked before the
// policy runs: a rung that could only fail when its fault comes (restart a
// critical process that has no start command) is said now, not at 3 a.m.
import { FAULT_KINDS, type Policy } from './types.js';

/** What a guest can do, as far as the ladders care. */
export interface GuestCapabilities {
  readonly name: string;
  /** Critical processes, and whether each has a start command. */
  readonly critical: readonly { readonly name: string; readonly canStart: boolean }[];
  /** Kernel introspection on (the kernel-side faults can be seen at all). */
  readonly introspection: boolean;
}

/** Every problem, one line each naming the guest, the fault, the rung and what is missing. */
export function policyProblems(policy: Policy, guests: readonly GuestCapabilities[]): string[] {
  const problems: string[] = [];
  const ladder = policy.faults['critical-process-missing'].ladder;
  for (const g of guests) {
    const noStart = g.critical.filter((c) => !c.canStart).map((c) => c.name);
    ladder.forEach((r, i) => {
      if (r.action === 'restart-process' && noStart.length > 0) {
        problems.push(`guest ${g.name}: critical-process-missing rung ${i} (restart-process) needs a start command for ${noStart.join(', ')}`);
      }
      if (r.action === 'kill-process') problems.push(`guest ${g.name}: critical-process-missing rung ${i} (kill-process) has no process to kill: the process is missing`);
    });
  }
  for (const kind of FAULT_KINDS.filter((k) => k !== 'critical-process-missing' && k !== 'hidden-process')) {
    policy.faults[kind].ladder.forEach((r, i) => {
      if (r.action === 'restart-process' || r.action === 'kill-process') problems.push(`${kind} rung ${i} (${r.action}) names no process to act on: use reboot-os, restart-vm or restore-image`);
    });
  }
  return problems;
}
