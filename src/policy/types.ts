// The recovery policy: per kind of fault an ordered ladder of actions.
// Shared by the ladder engine (src/policy/ladder.ts), the supervisor, and the
// event store / OTA (they read the schema in ./schema.ts).

export const FAULT_KINDS = [
  'critical-process-missing',
  'hidden-process',
  'syscall-table-changed',
  'kernel-integrity-changed',
  'hidden-module',
  'agent-down',
  // The KVM write trap refused a write into a syscall table (src/trap/).
  'syscall-write-refused',
  // The guest answers its agent but its kernel cannot be read from outside: a guest that makes
  // itself unreadable must not look healthy.
  'introspection-failed',
  // The guest agent's report was over a bound (process count, name length) and was cut.
  'guest-report-malformed',
  // Executable kernel memory in the module area that no module the kernel lists owns
  // (a module that erased itself from the list and from /sys/module, or injected code).
  'unowned-kernel-code',
  // An ftrace ops whose handler no known code owns, or that traces functions rootkits hook.
  'ftrace-hook',
  // A kprobe whose handlers no known code owns.
  'kprobe-hook',
  // A tracepoint probe in a module or in code no one owns (not a trace event, perf or a BPF program).
  'tracepoint-hook',
  // A loaded eBPF program that can hide or alter (return-value override, user-memory writes, LSM by an unknown owner).
  'bpf-hook',
] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];

export const ACTION_KINDS = ['restart-process', 'kill-process', 'reboot-os', 'restart-vm', 'restore-image'] as const;
export type ActionKind = (typeof ACTION_KINDS)[number];

/** How much an action destroys; when several ladders want to act, the heaviest goes first. */
export const ACTION_WEIGHT: Readonly<Record<ActionKind, number>> = {
  'kill-process': 1,
  'restart-process': 1,
  'reboot-os': 2,
  'restart-vm': 3,
  'restore-image': 4,
};

export interface Rung {
  action: ActionKind;
  /** How many times this action is tried before the ladder climbs. */
  count: number;
  /** After the action finished: how long a fresh scan may take to show the fault gone. */
  verifyTimeoutSec: number;
  /** Wait before the 2nd attempt of this rung; multiplied by backoffFactor for each further one. */
  backoffSec: number;
  backoffFactor?: number;
  /** Overrides the ladder's resetWindowSec after an action of this rung succeeded. */
  resetWindowSec?: number;
}

export interface FaultPolicy {
  ladder: Rung[];
  /** After a verified success the guest must stay free of this fault this long before the ladder starts over;
   *  a fault that comes back sooner continues the ladder where it was. */
  resetWindowSec: number;
  /** A finding must be seen in this many consecutive scans before it counts (processes that start or exit between views). */
  confirmScans: number;
}

export type HoldMode = 'keep-running' | 'pause' | 'stop';

export interface Policy {
  version: 1;
  /** Cap of recovery actions per guest in any sliding hour; further actions wait. */
  maxActionsPerHour: number;
  onExhausted: { hold: HoldMode; alert: boolean };
  faults: Record<FaultKind, FaultPolicy>;
}

/** A policy file may leave out fault kinds (they keep the defaults). */
export interface PolicyDocument {
  version: 1;
  maxActionsPerHour?: number;
  onExhausted?: { hold?: HoldMode; alert?: boolean };
  faults?: Partial<Record<FaultKind, Partial<FaultPolicy> & { ladder?: Rung[] }>>;
}
