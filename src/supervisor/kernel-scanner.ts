// Kernel snapshots of one guest through the introspection engine
// (src/views/scan.ts). Discovery is redone whenever the guest's kernel may
// have changed under us (reboot, reset, image restore: a new boot generation).
//
// What a scan reads, and how often (the cost of a guest-scan is what bounds how
// many guests one box watches at 10 Hz):
//  - every scan: task list, pid IDR, run queues, module list + kobjects, syscall
//    tables, dispatcher hashes, IDT, LSTAR, the pages holding the syscall tables;
//  - kernel text and rodata: a rotating share of the 4 KiB page hashes, every page
//    at least once per imageCoverageMs (DEFAULT_IMAGE_COVERAGE_MS), all of them at
//    a boot's first scan and when a baseline may be taken (fullImage);
//  - the optional views (OptionalViewName in src/views/scan.ts: the expensive walks
//    and carvings): each at least once per its interval in DEFAULT_VIEW_INTERVALS_MS,
//    at a boot's first scan, and at once when asked (KernelScanOptions.views). A
//    change such a view shows is seen within its interval plus one scan period.
import { Introspector, type HmpSource, type OptionalViewName } from '../views/scan.js';
import type { KernelSnapshot } from '../views/types.js';

export interface KernelScanOptions {
  /** Rehash all of kernel text and rodata this scan (a baseline may be taken from it), not only the rotating share. */
  readonly fullImage?: boolean;
  /** Read these optional views this scan whether due or not (e.g. when cheaper views disagree). */
  readonly views?: readonly OptionalViewName[];
}

/** Every page of kernel text and rodata is rehashed at least once per this interval (plus one scan). */
export const DEFAULT_IMAGE_COVERAGE_MS = 30_000;

/**
 * How often each optional view is read, in ms (every scan: 0). The bound on seeing a change in
 * that view is its interval plus one scan period; a view costing C ms adds C / interval to the
 * supervisor's CPU per second per guest instead of C per scan.
 */
export const DEFAULT_VIEW_INTERVALS_MS: Readonly<Record<OptionalViewName, number>> = {
  moduleArea: 2_000,
  ftrace: 1_000,
  kprobes: 1_000,
  bpf: 1_000,
};

/** Which optional views are due: never read in this boot, or their interval has passed since the last read. */
export class ViewCadence {
  private readonly lastMs = new Map<OptionalViewName, number>();

  constructor(private readonly intervalsMs: Readonly<Record<OptionalViewName, number>> = DEFAULT_VIEW_INTERVALS_MS) {}

  /** The views to read at nowMs (plus `force`); they count as read from then. */
  due(nowMs: number, force: readonly OptionalViewName[] = []): Set<OptionalViewName> {
    const out = new Set<OptionalViewName>(force);
    for (const [name, every] of Object.entries(this.intervalsMs) as [OptionalViewName, number][]) {
      const last = this.lastMs.get(name);
      if (last === undefined || nowMs - last >= every || nowMs < last) out.add(name);
    }
    for (const name of out) this.lastMs.set(name, nowMs);
    return out;
  }

  /** A new boot (or a rediscovery): every view is due at the next scan. */
  reset(): void { this.lastMs.clear(); }
}

export interface KernelScanner {
  /** A snapshot of the running kernel; throws when the kernel cannot be found (e.g. mid-boot). */
  scan(bootGeneration: number, opts?: KernelScanOptions): Promise<KernelSnapshot>;
  /** Guest-virtual to guest-physical through the last scan's kernel page tables (null: unmapped or no kernel yet). */
  translate?(va: bigint): bigint | null;
  close(): void;
}

export class IntrospectorScanner implements KernelScanner {
  private intro: Introspector | undefined;
  private generation = -1;
  private readonly cadence: ViewCadence;

  constructor(
    private readonly ramPath: string,
    private readonly hmp: HmpSource,
    private readonly hashImage = true,
    private readonly imageCoverageMs = DEFAULT_IMAGE_COVERAGE_MS,
    viewIntervalsMs: Readonly<Record<OptionalViewName, number>> = DEFAULT_VIEW_INTERVALS_MS,
  ) {
    this.cadence = new ViewCadence(viewIntervalsMs);
  }

  async scan(bootGeneration: number, opts: KernelScanOptions = {}): Promise<KernelSnapshot> {
    if (!this.intro || bootGeneration !== this.generation) {
      this.close();
      this.intro = await Introspector.attach(this.ramPath, { qmp: this.hmp });
      this.generation = bootGeneration;
      this.cadence.reset();
    }
    try {
      // Text and rodata incrementally: per-page hashes, a rotating share per scan (src/views/integrity.ts).
      // The switches are not decoded live yet: inside the nested test guest the decoder's process died
      // (SIGSEGV/SIGTRAP) in 4 of 7 runs after an image restore, 0 of 2 without it. A patched switch is
      // still seen live through its body hash (kernel-integrity-changed); inspect and dumps decode it.
      const snap = this.intro.scan({
        hashImage: this.hashImage, dispatchSwitches: false, imageCoverageMs: this.imageCoverageMs, fullImage: opts.fullImage === true,
        // A scan a baseline may be taken from reads every view.
        optional: this.cadence.due(Date.now(), opts.fullImage ? Object.keys(DEFAULT_VIEW_INTERVALS_MS) as OptionalViewName[] : opts.views),
      });
      // No task list at all: the kernel we discovered is not the one running (it rebooted by itself).
      if (snap.tasks.tasks.length === 0) this.close();
      return snap;
    } catch (e) {
      // A scan that throws (rather than reporting view errors) means the mapping or kernel changed: rediscover next time.
      this.close();
      throw e;
    }
  }

  translate(va: bigint): bigint | null {
    return this.intro ? this.intro.context.space.translate(va) : null;
  }

  close(): void {
    this.intro?.close();
    this.intro = undefined;
  }
}
