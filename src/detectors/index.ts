// All detectors over one scan: a kernel snapshot (null when the introspection
// could not run) and the guest's own report. Pure: the baseline comes in, and
// a baseline to record (first clean scan of a kernel, or a new boot) goes out.
import type { KernelSnapshot } from '../views/types.js';
import type { FaultKind } from '../policy/types.js';
import { baselineOf, kernelKey, sameHashKind, type KernelBaseline } from './baseline.js';
import { detectHiddenProcesses } from './hidden-process.js';
import { detectMissingCritical, type CriticalProcessSpec } from './critical-process.js';
import { detectSyscallChanges } from './syscall-integrity.js';
import { detectDispatchChanges } from './dispatch-integrity.js';
import { detectBpfHooks } from './bpf-hooks.js';
import { detectHiddenModules, detectKernelChanges } from './kernel-integrity.js';
import { detectFtraceHooks } from './ftrace-hooks.js';
import { detectKprobeHooks } from './kprobe-hooks.js';
import { detectTracepointHooks } from './tracepoint-hooks.js';
import { detectUnownedCode } from './unowned-code.js';
import { detectTextChanges } from './text-integrity.js';
import { detectRefusedWrites, type RefusedWriteTally } from './write-trap.js';
import { boundGuestReport } from './guest-report.js';
import type { DetectorResult, GuestReport, Observation } from './types.js';

export interface ScanInput {
  readonly nowMs: number;
  readonly snapshot: KernelSnapshot | null;
  /** Why there is no snapshot (or what went wrong taking it). */
  readonly snapshotError: string | null;
  /** Kernel introspection is switched off for this guest: a missing snapshot is then no fault. */
  readonly introspectionOff?: boolean;
  readonly report: GuestReport;
  /**
   * The report was taken in this cycle (default). A report kept from an earlier cycle still says
   * whether the agent answered, but judges nothing: what depends on it (agent-down, a process
   * missing from the guest's own list, a critical process without a snapshot) is undetermined.
   */
  readonly reportFresh?: boolean;
  /**
   * There is no guest view at all (a dump, or a check from outside only): the memory views alone
   * decide, and nothing waits for an agent (no agent-down, no hidden-process held undetermined).
   */
  readonly memoryOnly?: boolean;
  readonly critical: readonly CriticalProcessSpec[];
  /** The stored baseline for this snapshot's kernel, if any. */
  readonly baseline: KernelBaseline | null;
  /** Writes the KVM write trap refused in this boot of the guest (absent: no trap). */
  readonly refusedWrites?: RefusedWriteTally | null;
}

export interface ScanAnalysis extends DetectorResult {
  /** Store this (first clean scan of this kernel, or the per-boot part after a reboot). */
  readonly baselineToRecord: KernelBaseline | null;
}

const KERNEL_KINDS: readonly FaultKind[] = ['hidden-process', 'syscall-table-changed', 'kernel-integrity-changed', 'hidden-module', 'unowned-kernel-code', 'ftrace-hook', 'kprobe-hook', 'tracepoint-hook', 'bpf-hook'];

/** Hidden processes among the memory views alone; with none, the guest's view decides (undetermined). */
function memoryOnlyHidden(snap: KernelSnapshot): DetectorResult {
  const r = detectHiddenProcesses(snap, null);
  return r.observations.length > 0 || r.undetermined.length > 0 ? r : { observations: [], undetermined: ['hidden-process'] };
}

export function analyzeScan(input: ScanInput): ScanAnalysis {
  const observations: Observation[] = [];
  const undetermined: FaultKind[] = [];
  // Loops, not push(...spread): a spread passes every element on the stack, and the guest sets the count.
  const take = (r: DetectorResult): void => {
    for (const o of r.observations) observations.push(o);
    for (const k of r.undetermined) undetermined.push(k);
  };
  const report = boundGuestReport(input.report);
  const memoryOnly = input.memoryOnly === true;
  const fresh = !memoryOnly && input.reportFresh !== false;
  if (memoryOnly) {
    // no agent to judge
  } else if (!fresh) {
    undetermined.push('agent-down');
  } else if (report.agent === 'down') {
    observations.push({
      kind: 'agent-down',
      key: 'agent-down',
      summary: `the guest agent does not answer: ${report.error}`,
      target: null,
      evidence: { error: report.error },
    });
  } else if (report.malformed) {
    observations.push({
      kind: 'guest-report-malformed',
      key: 'guest-report',
      summary: `guest report malformed: ${report.malformed.reasons.join('; ')}`,
      target: null,
      evidence: { reasons: [...report.malformed.reasons], complete: report.malformed.complete, processesKept: report.processes.length },
    });
  }
  // A cut process list is no view to compare against: what it lacks was dropped here, not hidden by the guest.
  const psView: GuestReport | null = report.agent === 'ok' && report.malformed?.complete === false ? null : report;
  const snap = input.snapshot;
  take(detectMissingCritical(input.critical, snap, fresh ? psView : null));
  // The trap's log does not depend on the snapshot: a refused write counts even when introspection failed.
  take(detectRefusedWrites(input.refusedWrites ?? null));
  if (!snap) {
    // Fail closed: a guest whose agent answers but whose kernel cannot be read is a fault, not a clean scan.
    if (!input.introspectionOff && (input.report.agent === 'ok' || memoryOnly)) {
      observations.push({
        kind: 'introspection-failed',
        key: 'introspection-failed',
        summary: `the guest kernel cannot be read from outside: ${input.snapshotError ?? 'no snapshot'}`,
        target: null,
        evidence: { error: input.snapshotError ?? 'no snapshot' },
      });
    }
    for (const k of KERNEL_KINDS) undetermined.push(k);
    return { observations, undetermined, baselineToRecord: null };
  }
  const baseline = input.baseline && input.baseline.kernelKey === kernelKey(snap) ? input.baseline : null;
  const hidden = fresh ? detectHiddenProcesses(snap, psView) : memoryOnly ? detectHiddenProcesses(snap, null) : memoryOnlyHidden(snap);
  const sys = detectSyscallChanges(snap, baseline);
  const kern = detectKernelChanges(snap, baseline);
  const mods = detectHiddenModules(snap);
  // Today's hook surfaces: code nobody owns, ftrace ops, kprobes, tracepoint probes, eBPF programs; text patches explained.
  const hooks = [detectUnownedCode(snap), detectBpfHooks(snap), detectFtraceHooks(snap), detectKprobeHooks(snap), detectTracepointHooks(snap), detectTextChanges(snap, baseline)];
  for (const r of [hidden, sys, kern, mods, detectDispatchChanges(snap), ...hooks]) take(r);

  // Only a scan with no kernel-side fault and readable views may become the baseline, and only once
  // the guest answers its agent: a kernel still booting patches its own text (alternatives, static
  // keys such as sched_clock's) for seconds after it can be read, so an earlier scan would make every
  // later one look tampered with.
  let baselineToRecord: KernelBaseline | null = null;
  const clean = (report.agent === 'ok' || memoryOnly) &&
    sys.observations.length === 0 && kern.observations.length === 0 && mods.observations.length === 0 &&
    hooks.every((h) => h.observations.length === 0) &&
    sys.undetermined.length === 0 && mods.undetermined.length === 0 && snap.integrity.errors.length === 0;
  if (clean) {
    // The whole baseline is built only when it is kept (not at every clean scan).
    const text = snap.integrity.textHash;
    if (!baseline) baselineToRecord = baselineOf(snap, input.nowMs);
    else if (baseline.boot.slide !== `0x${snap.kernel.kaslrSlide.toString(16)}` || baseline.boot.textHash === null ||
      (text !== null && !sameHashKind(baseline.boot.textHash, text))) baselineToRecord = { ...baseline, boot: baselineOf(snap, input.nowMs).boot };
  }
  return { observations, undetermined, baselineToRecord };
}
