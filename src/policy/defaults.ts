// The product's default ladders:
//   critical process missing: restart the process x3 -> reboot the OS x3 -> restart the VM -> restore the image
//   hidden process:           reboot the OS x2 -> restart the VM -> restore the image
//   syscall table / kernel integrity changed, hidden module, unowned kernel code, ftrace / kprobe / BPF hook:
//   restore the image at once.
//   write into the syscall table refused by the write trap: the same (a rootkit ran, though its hook did not land).
//   agent down, kernel unreadable, guest report malformed: restart the VM -> restore the image.
import type { FaultKind, Policy, Rung } from './types.js';

/** The guest cannot be seen (from inside or outside) as it should: restart the VM, then restore the image. */
const restartThenRestore = (): Rung[] => [
  { action: 'restart-vm', count: 1, verifyTimeoutSec: 90, backoffSec: 0 },
  { action: 'restore-image', count: 1, verifyTimeoutSec: 90, backoffSec: 0 },
];

/**
 * A hook found on a kernel surface (code, ftrace, kprobes, BPF): nothing short of the known-good
 * image undoes it. Confirmed over two scans: these views follow pointers a running guest may be
 * changing under the read, and one torn read must not cost the guest a restore.
 */
const restoreAfterTwoScans = (): Policy['faults'][FaultKind] => ({
  confirmScans: 2,
  resetWindowSec: 300,
  ladder: [{ action: 'restore-image', count: 1, verifyTimeoutSec: 60, backoffSec: 0 }],
});

export const DEFAULT_POLICY: Policy = {
  version: 1,
  maxActionsPerHour: 12,
  onExhausted: { hold: 'keep-running', alert: true },
  faults: {
    'critical-process-missing': {
      confirmScans: 1,
      resetWindowSec: 300,
      ladder: [
        { action: 'restart-process', count: 3, verifyTimeoutSec: 15, backoffSec: 2, backoffFactor: 2 },
        { action: 'reboot-os', count: 3, verifyTimeoutSec: 60, backoffSec: 5, backoffFactor: 2 },
        { action: 'restart-vm', count: 1, verifyTimeoutSec: 60, backoffSec: 0 },
        { action: 'restore-image', count: 1, verifyTimeoutSec: 60, backoffSec: 0 },
      ],
    },
    'hidden-process': {
      confirmScans: 2,
      resetWindowSec: 300,
      ladder: [
        { action: 'reboot-os', count: 2, verifyTimeoutSec: 60, backoffSec: 5 },
        { action: 'restart-vm', count: 1, verifyTimeoutSec: 60, backoffSec: 0 },
        { action: 'restore-image', count: 1, verifyTimeoutSec: 60, backoffSec: 0 },
      ],
    },
    'syscall-table-changed': {
      confirmScans: 1,
      resetWindowSec: 300,
      ladder: [{ action: 'restore-image', count: 1, verifyTimeoutSec: 60, backoffSec: 0 }],
    },
    'kernel-integrity-changed': {
      confirmScans: 1,
      resetWindowSec: 300,
      ladder: [{ action: 'restore-image', count: 1, verifyTimeoutSec: 60, backoffSec: 0 }],
    },
    'hidden-module': {
      confirmScans: 1,
      resetWindowSec: 300,
      ladder: [{ action: 'restore-image', count: 1, verifyTimeoutSec: 60, backoffSec: 0 }],
    },
    'unowned-kernel-code': restoreAfterTwoScans(),
    'ftrace-hook': restoreAfterTwoScans(),
    'kprobe-hook': restoreAfterTwoScans(),
    'tracepoint-hook': restoreAfterTwoScans(),
    'bpf-hook': restoreAfterTwoScans(),
    'syscall-write-refused': {
      confirmScans: 1,
      resetWindowSec: 300,
      ladder: [{ action: 'restore-image', count: 1, verifyTimeoutSec: 60, backoffSec: 0 }],
    },
    'introspection-failed': {
      // Seen only while the agent answers (a booting or stopped guest is agent-down); a few scans
      // ride out a kernel that is being replaced under the scanner.
      confirmScans: 5,
      resetWindowSec: 300,
      ladder: restartThenRestore(),
    },
    'guest-report-malformed': {
      // Only a guest whose agent lies sends a report no kernel can have: treated like an agent that is down.
      confirmScans: 2,
      resetWindowSec: 300,
      ladder: restartThenRestore(),
    },
    'agent-down': {
      // The agent is how the guest is seen from inside; a guest mid-boot is not down yet.
      confirmScans: 3,
      resetWindowSec: 300,
      ladder: restartThenRestore(),
    },
  },
};
