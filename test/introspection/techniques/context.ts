// What a technique battery gets from the kernel matrix: the booted lab guest of one kernel line,
// a live introspector on it, the clean baseline, and the ways to judge it live and from a dump.
import type { Test } from 'tap';
import type { LabImages, LabKernelLine } from '../../../lab/lab-images.js';
import type { KernelBaseline } from '../../../src/detectors/baseline.js';
import type { Observation } from '../../../src/detectors/types.js';
import type { Introspector } from '../../../src/views/scan.js';
import type { QemuVm } from '../../../src/vm/qemu-vm.js';

export interface TechniqueContext {
  readonly line: LabKernelLine;
  readonly images: LabImages;
  readonly vm: QemuVm;
  readonly live: Introspector;
  /** The baseline of the clean guest (taken before any attack). */
  readonly baseline: KernelBaseline | null;
  /** A scratch folder, removed after the battery. */
  readonly dir: string;
  /** Runs a command in the guest (busybox sh, root) through the guest agent; its stdout. */
  shell(command: string): Promise<string>;
  /** Observations that persist over n (default 3) consecutive live scans, each with a fresh ps: what the supervisor confirms. */
  persistent(n?: number): Promise<Observation[]>;
  /** Observations of every detector on a raw dump of the guest's RAM taken now (no CR3, no agent), with the clean baseline. */
  checkDump(): Promise<Observation[]>;
}

/** One technique: attack, judge live and from a dump, undo, judge clean again. */
export interface TechniqueBattery {
  readonly name: string;
  /** Kernel lines where the technique exists (all when absent). */
  readonly lines?: readonly LabKernelLine[];
  run(t: Test, ctx: TechniqueContext): Promise<void>;
}
