// Kernel snapshots of one guest through the introspection engine
// (src/views/scan.ts). Discovery is redone whenever the guest's kernel may
// have changed under us (reboot, reset, image restore: a new boot generation).
import { Introspector, type HmpSource } from '../views/scan.js';
import type { KernelSnapshot } from '../views/types.js';
import { ChildSwitchDecoder } from './switch-decoder.js';

export interface KernelScanOptions {
  /** Rehash all of kernel text and rodata this scan (a baseline may be taken from it), not only the rotating share. */
  readonly fullImage?: boolean;
}

/** Every page of kernel text and rodata is rehashed at least once per this interval (plus one scan). */
export const DEFAULT_IMAGE_COVERAGE_MS = 30_000;

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

  constructor(
    private readonly ramPath: string,
    private readonly hmp: HmpSource,
    private readonly hashImage = true,
    private readonly imageCoverageMs = DEFAULT_IMAGE_COVERAGE_MS,
    log?: (line: string) => void,
  ) {
    this.switches = new ChildSwitchDecoder(undefined, undefined, log);
  }

  private readonly switches: ChildSwitchDecoder;

  async scan(bootGeneration: number, opts: KernelScanOptions = {}): Promise<KernelSnapshot> {
    if (!this.intro || bootGeneration !== this.generation) {
      this.drop();
      this.intro = await Introspector.attach(this.ramPath, { qmp: this.hmp });
      this.generation = bootGeneration;
    }
    try {
      // Text and rodata incrementally: per-page hashes, a rotating share per scan (src/views/integrity.ts).
      // The dispatch switches are decoded in a child process (switch-decoder.ts): a new body is left
      // out of the scan until the child answers, while its hash is compared every scan.
      const snap = this.intro.scan({ hashImage: this.hashImage, switchDecoder: this.switches.decode, imageCoverageMs: this.imageCoverageMs, fullImage: opts.fullImage === true });
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
  }

  close(): void {
    this.drop();
    this.switches.close();
  }
}
