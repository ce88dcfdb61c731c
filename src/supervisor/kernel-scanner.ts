// Kernel snapshots of one guest through the introspection engine
// (src/views/scan.ts). Discovery is redone whenever the guest's kernel may
// have changed under us (reboot, reset, image restore: a new boot generation).
import { Introspector, type HmpSource } from '../views/scan.js';
import type { BpfView, FtraceView, KernelSnapshot, TracepointView } from '../views/types.js';
import { confirmUnclaimed, withRecordsOf } from '../views/ftrace.js';
import type { CleanHashes } from '../views/text-diff.js';
import { ChildSwitchDecoder } from './switch-decoder.js';

export interface KernelScanOptions {
  /** Rehash all of kernel text and rodata this scan (a baseline may be taken from it), not only the rotating share. */
  readonly fullImage?: boolean;
  /** The baseline's hashes, for the text-diff view's clean copy. */
  readonly clean?: CleanHashes;
}

/** Every page of kernel text and rodata is rehashed at least once per this interval (plus one scan). */
export const DEFAULT_IMAGE_COVERAGE_MS = 30_000;
/** ftrace's per-function records (~40k, ~0.4-0.8 ms) are walked every this many scans; the scans between reuse them. */
export const FTRACE_RECORDS_EVERY = 10;

/** Loaded eBPF programs are reread at most this often (≈16 µs per program); scans in between reuse the last view. */
export const DEFAULT_BPF_EVERY_MS = 1_000;

/** Tracepoints (~800-2,000 headers, a few tenths of a ms) are reread at most this often; scans in between reuse the last view. */
export const DEFAULT_TRACEPOINTS_EVERY_MS = 1_000;

/**
 * The module area (page-table walk + carving, src/views/module-area.ts) is walked at most this often;
 * scans in between carry no moduleArea, so its detectors are undetermined there and confirm over walks.
 */
export const DEFAULT_MODULE_AREA_INTERVAL_MS = 500;

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
  private bpf: { view: BpfView; atMs: number } | undefined;
  private tracepoints: { view: TracepointView; atMs: number } | undefined;
  private scans = 0;
  private lastFtrace: FtraceView | undefined;
  private lastAreaMs = -Infinity;
  private readonly switches: ChildSwitchDecoder;

  /** ramPath: the RAM file, or how to find it now (a libvirt domain's changes with every start). */
  constructor(
    private readonly ramPath: string | (() => Promise<string>),
    private readonly hmp: HmpSource,
    private readonly hashImage = true,
    private readonly imageCoverageMs = DEFAULT_IMAGE_COVERAGE_MS,
    log?: (line: string) => void,
    private readonly bpfEveryMs = DEFAULT_BPF_EVERY_MS,
    private readonly moduleAreaIntervalMs = DEFAULT_MODULE_AREA_INTERVAL_MS,
    private readonly tracepointsEveryMs = DEFAULT_TRACEPOINTS_EVERY_MS,
  ) {
    this.switches = new ChildSwitchDecoder(undefined, undefined, log);
  }

  async scan(bootGeneration: number, opts: KernelScanOptions = {}): Promise<KernelSnapshot> {
    if (!this.intro || bootGeneration !== this.generation) {
      this.drop();
      const ram = typeof this.ramPath === 'string' ? this.ramPath : await this.ramPath();
      this.intro = await Introspector.attach(ram, { qmp: this.hmp });
      this.generation = bootGeneration;
      this.bpf = undefined;
      this.tracepoints = undefined;
      this.lastAreaMs = -Infinity;
    }
    // Views at their own cadence: the eBPF programs and the tracepoints once a second, the module area every 500 ms,
    // ftrace's per-function records every 10th scan (the scans between reuse the last ones).
    const now = Date.now();
    const area = opts.fullImage === true || now - this.lastAreaMs >= this.moduleAreaIntervalMs;
    if (area) this.lastAreaMs = now;
    try {
      // Text and rodata incrementally: per-page hashes, a rotating share per scan (src/views/integrity.ts).
      // The dispatch switches are decoded in a child process (switch-decoder.ts): a new body is left
      // out of the scan until the child answers, while its hash is compared every scan.
      const bpfDue = !this.bpf || now - this.bpf.atMs >= this.bpfEveryMs || opts.fullImage === true;
      const tpDue = !this.tracepoints || now - this.tracepoints.atMs >= this.tracepointsEveryMs || opts.fullImage === true;
      const records = this.lastFtrace === undefined || this.scans++ % FTRACE_RECORDS_EVERY === 0;
      const raw = this.intro.scan({
        hashImage: this.hashImage, switchDecoder: this.switches.decode, imageCoverageMs: this.imageCoverageMs, fullImage: opts.fullImage === true,
        bpf: bpfDue, tracepoints: tpDue, ftraceRecords: records, moduleArea: area, ...(opts.clean ? { clean: opts.clean } : {}),
      });
      if (bpfDue && raw.bpf) this.bpf = { view: raw.bpf, atMs: now };
      if (tpDue && raw.tracepoints) this.tracepoints = { view: raw.tracepoints, atMs: now };
      const withTp = !tpDue && this.tracepoints ? { ...raw, tracepoints: this.tracepoints.view } : raw;
      const withBpf = !bpfDue && this.bpf ? { ...withTp, bpf: this.bpf.view } : withTp;
      const walked = records && withBpf.ftrace ? { ...withBpf, ftrace: confirmUnclaimed(withBpf.ftrace, this.lastFtrace) } : withBpf;
      const snap = records || !withBpf.ftrace || !this.lastFtrace ? walked : { ...withBpf, ftrace: withRecordsOf(withBpf.ftrace, this.lastFtrace) };
      if (records) this.lastFtrace = raw.ftrace;
      // No task list at all: the kernel we discovered is not the one running (it rebooted by itself).
      if (snap.tasks.tasks.length === 0) this.drop();
      return snap;
    } catch (e) {
      // A scan that throws (rather than reporting view errors) means the mapping or kernel changed: rediscover next time.
      this.drop();
      throw e;
    }
  }

  translate(va: bigint): bigint | null {
    return this.intro ? this.intro.context.space.translate(va) : null;
  }

  /** Drops the kernel view (rediscovered on the next scan); decoded switches are kept. */
  private drop(): void {
    this.intro?.close();
    this.intro = undefined;
    this.lastFtrace = undefined;
  }

  close(): void {
    this.drop();
    this.switches.close();
  }
}
