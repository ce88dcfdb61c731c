// Every view error of a snapshot, in one list: what `inspect` prints and the
// watchdog counts. One definition, so the two never disagree.
import type { KernelSnapshot, ViewError } from './types.js';

export function snapshotErrors(s: KernelSnapshot): ViewError[] {
  return [
    ...s.tasks.errors, ...s.pidIdr.errors, ...s.runQueues.errors, ...s.modules.errors,
    ...s.syscallTables.flatMap((t) => t.errors), ...(s.dispatch ?? []).flatMap((d) => d.errors), ...s.integrity.errors,
    ...(s.ftrace?.errors ?? []), ...(s.kprobes?.errors ?? []), ...(s.tracepoints?.errors ?? []), ...(s.bpf?.errors ?? []),
    ...(s.moduleArea?.errors ?? []), ...(s.textDiff?.errors ?? []),
  ];
}
