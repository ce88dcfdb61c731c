// The introspection engine's entry point: attach to a guest's RAM (live) or a
// raw dump, discover the kernel once, then produce KernelSnapshots on demand.
// Discovery (kallsyms + BTF) is the expensive part and is cached; a scan only
// walks the kernel's structures.
import { openGuestMemory, type GuestMemory, type MachineLayout } from '../memory/guest-memory.js';
import { discoverKernel, registersFromHmp, type DiscoveredKernel, type DiscoveryOptions, type LiveRegisters } from './discovery.js';
import { KernelContext, DEFAULT_LIMITS, type ScanLimits } from './kernel-context.js';
import { readTaskList } from './task-list.js';
import { readPidIdr } from './pid-idr.js';
import { readRunQueues } from './run-queues.js';
import { readModuleList } from './modules.js';
import { readSyscallTables } from './syscall-tables.js';
import { readIntegrity } from './integrity.js';
import { readDispatch, type SwitchDecode } from './dispatch.js';
import { readBpf } from './bpf.js';
import { readFtrace } from './ftrace.js';
import { readKprobes } from './kprobes.js';
import { readTracepoints } from './tracepoints.js';
import { readModuleArea } from './module-area.js';
import { readTextDiff, textCopyOf, type CleanHashes } from './text-diff.js';
import type { KernelSnapshot } from './types.js';
import type { SymbolTable } from '../profile/symbols.js';
import type { StructLayouts } from '../profile/layouts.js';
import type { ProfileCache } from '../profile/profile-cache.js';

export interface ScanOptions {
  /** Hash kernel text and rodata (default true; ~10-40 ms). */
  readonly hashImage?: boolean;
  /** Decode the syscall dispatch switches call by call (default true); the body hashes are taken either way. */
  readonly dispatchSwitches?: boolean;
  /** How a switch body is decoded (default: in this process); one that answers later leaves the switch out until then. */
  readonly switchDecoder?: SwitchDecode;
  /** Hash the image incrementally, every page at least once per this many ms (see readIntegrity). */
  readonly imageCoverageMs?: number;
  /** With imageCoverageMs: rehash every page this scan. */
  readonly fullImage?: boolean;
  /** The clock for imageCoverageMs (tests). */
  readonly nowMs?: number;
  /** Read the loaded eBPF programs (default true). */
  readonly bpf?: boolean;
  /** Walk ftrace's per-function records for the enabled call sites (default true); the ops are read either way. */
  readonly ftraceRecords?: boolean;
  /** Read every tracepoint and its probes (default true). */
  readonly tracepoints?: boolean;
  /** Walk the module area's page tables for unowned code and carved modules (default true; see readModuleArea). */
  readonly moduleArea?: boolean;
  /** The baseline's hashes: the text-diff view's clean copy is retaken when the kernel is back to them. */
  readonly clean?: CleanHashes;
}

/** Something that can answer HMP commands (QmpClient does). */
export interface HmpSource {
  hmp(command: string): Promise<string>;
}

export interface AttachOptions {
  readonly machine?: MachineLayout;
  readonly limits?: ScanLimits;
  readonly symbols?: SymbolTable;
  readonly layouts?: StructLayouts;
  /** Live guests: CR3/CR4 come from here (`info registers`). */
  readonly qmp?: HmpSource;
  readonly registers?: LiveRegisters;
  /** Kernel builds shared with other guests (default: the process-wide cache; null: none). */
  readonly profiles?: ProfileCache | null;
}

export class Introspector {
  readonly context: KernelContext;

  private constructor(readonly memory: GuestMemory, readonly kernel: DiscoveredKernel, limits: ScanLimits) {
    this.context = new KernelContext(kernel.space, kernel.profile, limits);
  }

  /** Maps `ramPath` (a RAM file or raw dump) and discovers its kernel. */
  static async attach(ramPath: string, opts: AttachOptions = {}): Promise<Introspector> {
    const memory = openGuestMemory(ramPath, opts.machine ?? 'q35');
    try {
      const registers = opts.registers ?? (opts.qmp ? registersFromHmp(await opts.qmp.hmp('info registers')) : undefined);
      const d: DiscoveryOptions = {
        ...(registers ? { registers } : {}),
        ...(opts.symbols ? { symbols: opts.symbols } : {}),
        ...(opts.layouts ? { layouts: opts.layouts } : {}),
        ...(opts.profiles !== undefined ? { profiles: opts.profiles } : {}),
      };
      const kernel = discoverKernel(memory, d);
      try {
        return new Introspector(memory, kernel, opts.limits ?? DEFAULT_LIMITS);
      } catch (e) {
        kernel.lease?.release();
        throw e;
      }
    } catch (e) {
      memory.close();
      throw e;
    }
  }

  /** One full scan. Never throws for what the guest wrote: malformed structures become view errors. */
  scan(opts: ScanOptions = {}): KernelSnapshot {
    const ctx = this.context;
    ctx.space.clearCache(); // the guest moves on between scans
    const modules = readModuleList(ctx);
    const owners = [...modules.modules, ...modules.kobjects];
    const syscallTables = readSyscallTables(ctx, owners);
    const integrity = readIntegrity(ctx, {
      hashImage: opts.hashImage ?? true,
      ...(opts.imageCoverageMs !== undefined ? { imageCoverageMs: opts.imageCoverageMs, fullImage: opts.fullImage === true, textCopy: textCopyOf(this.kernel.identity), ...(opts.nowMs !== undefined ? { nowMs: opts.nowMs } : {}) } : {}),
    });
    const textDiff = readTextDiff(ctx, this.kernel.identity, owners, integrity, { hashImage: opts.hashImage ?? true, incremental: opts.imageCoverageMs !== undefined, ...(opts.clean ? { clean: opts.clean } : {}) });
    return {
      takenAtMs: Date.now(),
      kernel: this.kernel.identity,
      tasks: readTaskList(ctx),
      pidIdr: readPidIdr(ctx),
      runQueues: readRunQueues(ctx),
      modules,
      syscallTables,
      ...(opts.dispatchSwitches === false ? {} : { dispatch: readDispatch(ctx, owners, syscallTables, opts.switchDecoder) }),
      ...(opts.moduleArea === false ? {} : { moduleArea: readModuleArea(ctx, modules) }),
      integrity,
      ...(textDiff ? { textDiff } : {}),
      ...(opts.bpf === false ? {} : { bpf: readBpf(ctx) }),
      ftrace: readFtrace(ctx, owners, { records: opts.ftraceRecords !== false }),
      kprobes: readKprobes(ctx, owners),
      ...(opts.tracepoints === false ? {} : { tracepoints: readTracepoints(ctx, owners) }),
    };
  }

  /** Unmaps the guest's memory and gives back its hold on the shared kernel profile. Idempotent. */
  close(): void {
    this.memory.close();
    this.kernel.lease?.release();
  }
}
