// Kernel views: typed, immutable snapshots of what the guest kernel knows,
// rebuilt from guest memory by the introspection engine (src/views/) and
// consumed by the detectors (src/detectors/). This file is the contract
// between the two stages: extend it, do not break it.

/** A structure the walk could not read or trust; the view keeps going where it can. */
export interface ViewError {
  /** Which walk and where, e.g. "tasks: task_struct@0xffff8880..." */
  readonly where: string;
  readonly message: string;
}

export interface TaskInfo {
  /** Kernel virtual address of the task_struct. */
  readonly address: bigint;
  readonly pid: number;
  readonly tgid: number;
  readonly ppid: number;
  readonly comm: string;
  /** task_struct.__state */
  readonly state: number;
  readonly uid: number;
  /** task_struct.mm; 0n for kernel threads. */
  readonly mm: bigint;
  /** mm->pgd (kernel virtual); 0n when mm is 0n. */
  readonly pgd: bigint;
  readonly startTimeNs: bigint;
  readonly kernelThread: boolean;
}

/** Processes (thread-group leaders) on init_task.tasks; threads under each. */
export interface TaskListView {
  readonly tasks: readonly TaskInfo[];
  readonly threads: readonly TaskInfo[];
  readonly errors: readonly ViewError[];
}

/** The init pid namespace's IDR: every pid the kernel can still find by number. */
export interface PidIdrView {
  readonly entries: readonly { readonly pid: number; readonly task: bigint }[];
  readonly errors: readonly ViewError[];
}

export interface CpuRunQueue {
  readonly cpu: number;
  /** rq->curr */
  readonly current: bigint;
  /** rq->idle: the CPU's idle task (pid 0, never on the task list); absent when unknown. */
  readonly idle?: bigint;
  /** task_struct addresses queued on the CFS tree and the RT/DL queues. */
  readonly queued: readonly bigint[];
}

export interface RunQueueView {
  readonly cpus: readonly CpuRunQueue[];
  readonly errors: readonly ViewError[];
}

export interface ModuleInfo {
  readonly name: string;
  /** struct module address. */
  readonly address: bigint;
  readonly coreBase: bigint;
  readonly coreSize: number;
  /** enum module_state (0 live, 1 coming, 2 going, 3 unformed), where the view read it (carved modules). */
  readonly state?: number;
}

export interface ModuleListView {
  /** On the kernel's `modules` list (what lsmod shows). */
  readonly modules: readonly ModuleInfo[];
  /** Under /sys/module's kset that are modules (have a struct module). */
  readonly kobjects: readonly ModuleInfo[];
  readonly errors: readonly ViewError[];
}

export type HandlerOwner =
  | { readonly kind: 'kernel'; readonly symbol: string }
  | { readonly kind: 'module'; readonly module: string; readonly symbol: string | null }
  | { readonly kind: 'unknown' };

export interface SyscallEntry {
  readonly nr: number;
  readonly target: bigint;
  readonly owner: HandlerOwner;
  /** The handler this slot should hold (e.g. __x64_sys_read), when known. */
  readonly expected: string | null;
}

export interface SyscallTableView {
  readonly table: 'sys_call_table' | 'ia32_sys_call_table' | 'x32_sys_call_table';
  readonly address: bigint;
  readonly entries: readonly SyscallEntry[];
  readonly errors: readonly ViewError[];
}

/** One case of a syscall dispatch switch: the function slot `nr` reaches. */
export interface DispatchSlot {
  readonly nr: number;
  readonly target: bigint;
  readonly owner: HandlerOwner;
  /** The handler this slot should reach (the numbering's, as for the table), when known. */
  readonly expected: string | null;
}

/** A dispatch switch (x64_sys_call and friends, 6.9+ and stable backports), decoded call by call. */
export interface DispatchView {
  readonly name: 'x64_sys_call' | 'ia32_sys_call' | 'x32_sys_call';
  readonly address: bigint;
  readonly slots: readonly DispatchSlot[];
  readonly errors: readonly ViewError[];
}

export interface KernelIntegrityView {
  /** sha256 hex of kernel text (_stext.._etext) and read-only data (__start_rodata..__end_rodata). */
  readonly textHash: string | null;
  readonly rodataHash: string | null;
  /** sha256 hex of each dispatcher's body: x64_sys_call, ia32_sys_call. */
  readonly dispatchers: readonly { readonly name: string; readonly hash: string }[];
  /** Interrupt gate handler addresses, by vector. */
  readonly idt: readonly bigint[];
  /** MSR_LSTAR (the syscall entry point) when the hypervisor can read it. */
  readonly lstar: bigint | null;
  readonly errors: readonly ViewError[];
}

export interface KernelIdentity {
  readonly banner: string;
  readonly release: string;
  readonly kaslrSlide: bigint;
  readonly pagingLevels: 4 | 5;
}

/** A contiguous run of executable kernel memory and who owns it, as far as the views can tell. */
export interface CodeRegion {
  readonly start: bigint;
  /** Bytes. */
  readonly size: number;
  /**
   * module: a struct module's core/init text; kernel: the image's text; ftrace-trampoline, kprobe-slots,
   * bpf-jit: memory those subsystems allocated and the views found through their own structures;
   * unknown: nobody the views know.
   */
  readonly owner: 'kernel' | 'module' | 'ftrace-trampoline' | 'kprobe-slots' | 'bpf-jit' | 'unknown';
  /** The owner's name when it has one (module name, BPF program name). */
  readonly name: string | null;
}

/** The module area (and other vmalloc'd executable memory) carved through the page tables. */
export interface ModuleAreaView {
  /** Every executable mapping found in the module range, merged into runs, each with its owner. */
  readonly regions: readonly CodeRegion[];
  /** struct module candidates found by carving that are neither on the list nor kobjects. */
  readonly hiddenModules: readonly ModuleInfo[];
  readonly errors: readonly ViewError[];
  /** The virtual range walked. */
  readonly range?: { readonly start: bigint; readonly end: bigint };
  /** Code pointers the walk met on its way (ftrace ops handlers), for telling what points into a region. */
  readonly references?: readonly { readonly from: string; readonly target: bigint }[];
}

/** One registered ftrace ops (ftrace_ops_list). */
export interface FtraceOps {
  readonly address: bigint;
  /** ops->func: the handler every traced call reaches. */
  readonly func: bigint;
  readonly funcOwner: HandlerOwner;
  /** ops->trampoline and its size (0n / 0 without one). */
  readonly trampoline: bigint;
  readonly trampolineSize: number;
  readonly flags: number;
  /** The functions the ops' filter hash names (kallsyms names; hex when unnamed), bounded. */
  readonly filter: readonly string[];
  /** True when the filter hash is empty: the ops traces every function (a global tracer). */
  readonly tracesAll: boolean;
  /** Entries in the filter hash (filter keeps at most a bounded number of names). */
  readonly filterCount?: number;
  /** Direct calls (register_ftrace_direct: BPF trampolines and the like): traced site -> target and its owner. */
  readonly direct?: readonly FtraceDirect[];
  /**
   * The code a kernel handler runs on its user's behalf: an fprobe's entry/exit handlers (func is fprobe_handler),
   * a livepatch's replacement functions (func is klp_ftrace_handler), each with its owner.
   */
  readonly handlers?: readonly FtraceHandler[];
}

export interface FtraceHandler {
  readonly role: 'fprobe-entry' | 'fprobe-exit' | 'livepatch';
  readonly address: bigint;
  readonly owner: HandlerOwner;
}

/** A direct call ftrace makes from a traced site (ftrace_func_entry.direct). */
export interface FtraceDirect {
  readonly site: string;
  readonly target: bigint;
  readonly owner: HandlerOwner;
}

export interface FtraceView {
  readonly ops: readonly FtraceOps[];
  /** Function entry sites ftrace currently calls out of (dyn_ftrace records with a live call), bounded. */
  readonly enabledSites: readonly bigint[];
  /** How many sites are enabled in all (enabledSites lists a bounded number); absent when the records were not walked. */
  readonly enabledCount?: number;
  /** dyn_ftrace records walked (every traceable function entry); absent when not walked. */
  readonly records?: number;
  /**
   * Enabled sites (of enabledSites) that no registered ops' filter selects: ftrace calls out of them for an
   * ops that is no longer on the list. Absent when it cannot be judged (an ops traces every function, a filter
   * was not read whole, or the records were not walked).
   */
  readonly unclaimedSites?: readonly string[];
  readonly errors: readonly ViewError[];
}

/** One registered kprobe (kprobe_table). */
export interface KprobeInfo {
  readonly address: bigint;
  /** The probed address and its symbol (+offset). */
  readonly addr: bigint;
  readonly symbol: string | null;
  readonly preHandler: bigint;
  readonly postHandler: bigint;
  readonly handlerOwner: HandlerOwner;
  readonly flags: number;
  /** kprobe.symbol_name: what the registrant asked for, when it gave a name. */
  readonly symbolName?: string | null;
  /** Every handler that runs for this probe (pre, post, and a kretprobe's return/entry handlers), each with its owner. */
  readonly handlers?: readonly KprobeHandler[];
  /** The aggregate kprobe this one hangs under (several probes on one address), when it does. */
  readonly aggregate?: bigint;
}

export interface KprobeHandler {
  readonly role: 'pre' | 'post' | 'return' | 'entry';
  readonly address: bigint;
  readonly owner: HandlerOwner;
}

export interface KprobeView {
  readonly probes: readonly KprobeInfo[];
  readonly errors: readonly ViewError[];
}

/** One probe on a tracepoint (an entry of its funcs array). */
export interface TracepointProbe {
  readonly func: bigint;
  readonly data: bigint;
  readonly prio: number;
  readonly owner: HandlerOwner;
  /**
   * Which of the kernel's own users registered it, proven by its data: a tracefs trace event (the class's
   * probe, data its trace_event_file), perf (the class's perf_probe, data its trace_event_call), a BPF raw
   * tracepoint (__bpf_trace_<name>; the program behind its data, id null when there is none); null otherwise.
   */
  readonly via: { readonly kind: 'trace-event' | 'perf' } | { readonly kind: 'bpf'; readonly id: number | null; readonly name: string | null } | null;
}

/** One tracepoint with probes or with its static key on (the others are counted, not listed). */
export interface TracepointInfo {
  readonly address: bigint;
  readonly name: string | null;
  /** The module that defines it; null for the kernel's own. */
  readonly module: string | null;
  /** tracepoint.key: the call sites call out. */
  readonly enabled: boolean;
  /** tracepoint.iterator (__traceiter_<name>): what the static call reaches with several probes. */
  readonly iterator: bigint;
  /** Where the tracepoint's static call goes now (static_call_key.func), and its owner; absent without a static call. */
  readonly call?: bigint;
  readonly callOwner?: HandlerOwner;
  /** The funcs array, in call order, bounded. */
  readonly probes: readonly TracepointProbe[];
}

export interface TracepointView {
  /** Tracepoints walked (the kernel's and every module's). */
  readonly count: number;
  readonly tracepoints: readonly TracepointInfo[];
  readonly errors: readonly ViewError[];
}

/** One loaded eBPF program (prog_idr). */
export interface BpfProgramInfo {
  readonly id: number;
  readonly address: bigint;
  /** enum bpf_prog_type, as a name when the kernel's BTF says it (e.g. BPF_PROG_TYPE_KPROBE). */
  readonly type: string;
  readonly attachType: string | null;
  readonly name: string;
  /** Where it attaches (a kernel function for fentry/kprobe-like programs), when readable. */
  readonly attachTo: string | null;
  /** Helper functions its instructions call, by kernel symbol (bpf_probe_write_user, bpf_override_return, ...), bounded. */
  readonly helpers: readonly string[];
  /** prog->kprobe_override: the program may override the probed function's return value. */
  readonly kprobeOverride: boolean;
  /** The JIT image, when jited. */
  readonly jited: { readonly start: bigint; readonly size: number } | null;
  /** prog->tag (hex): the kernel's hash of the instructions, as bpftool and Volatility show it. */
  readonly tag?: string;
}

export interface BpfView {
  readonly programs: readonly BpfProgramInfo[];
  readonly errors: readonly ViewError[];
}

/** Where a rewritten jmp/call in kernel text now goes, and who owns that memory as far as the text-diff view can tell. */
export interface TextBranch {
  readonly kind: 'call' | 'jmp';
  readonly target: bigint;
  readonly owner: HandlerOwner;
  /** Outside kernel text and modules, but its first bytes are a copy of ftrace_caller/ftrace_regs_caller (an ftrace ops' trampoline). */
  readonly looksLike: 'ftrace-trampoline' | null;
}

/** One changed instruction of kernel text, against the clean copy of the text. */
export interface TextSite {
  /** The first byte of the instruction that covers the change (as the clean copy decodes). */
  readonly address: bigint;
  /** The kallsyms symbol holding it and the offset into it. */
  readonly function: string | null;
  readonly offset: number;
  /** Hex bytes over the changed instruction(s), clean copy then now, bounded. */
  readonly old: string;
  readonly new: string;
  /** Decoded (GNU syntax); "(bad)" when the bytes do not decode. */
  readonly oldInstruction: string;
  readonly instruction: string;
  /** At the function's fentry site: its first instruction, or the one after endbr64. */
  readonly atEntry: boolean;
  readonly branch: TextBranch | null;
  /** Where the clean instruction jumped or called, by symbol (kernel) or module, when it was a branch. */
  readonly oldTarget?: string | null;
  /** The new instruction is int3 (a kprobe's breakpoint, or a debugger's). */
  readonly int3: boolean;
}

/** Fentry sites ftrace switches (a 5-byte call to one target, or back to a NOP): counted, not listed one by one. */
export interface TextSiteGroup {
  readonly state: 'call' | 'nop';
  /** The call's target (null for NOPs). */
  readonly branch: TextBranch | null;
  readonly count: number;
  /** A few of the functions, by name. */
  readonly examples: readonly string[];
}

/** Kernel text compared with a clean copy of the same build and slide, changed bytes explained. */
export interface TextDiffView {
  /** The clean copy's hashes (as readIntegrity computes them: a whole-region sha256 and a page-hash digest), or null without a copy. */
  readonly reference: { readonly textHash: string; readonly pagedHash: string } | null;
  /** Pages whose bytes (run-time patch sites masked) differ from the clean copy. */
  readonly pagesChanged: number;
  /** Changed instructions, except the fentry sites counted in fentryGroups; bounded (truncated says so). */
  readonly sites: readonly TextSite[];
  readonly fentryGroups: readonly TextSiteGroup[];
  readonly truncated: boolean;
  /** Addresses of the registered kprobes (kprobe_table), for telling a kprobe's int3/jmp from a patch. */
  readonly kprobeAddresses: readonly bigint[];
  /**
   * Only in the scan that took the copy (so, a dump judged in a process with no earlier copy): the
   * fentry sites of kallsyms functions that jmp/call out of kernel text. Old bytes unknown.
   */
  readonly entries?: { readonly sites: readonly TextSite[]; readonly fentryGroups: readonly TextSiteGroup[]; readonly truncated: boolean };
  /** The dispatch switches whose bodies differ from their clean copies, changed instructions explained. */
  readonly dispatchers: readonly { readonly name: string; readonly referenceHash: string; readonly sites: readonly TextSite[] }[];
  readonly errors: readonly ViewError[];
}

/** One full scan of one guest. */
export interface KernelSnapshot {
  readonly takenAtMs: number;
  readonly kernel: KernelIdentity;
  readonly tasks: TaskListView;
  readonly pidIdr: PidIdrView;
  readonly runQueues: RunQueueView;
  readonly modules: ModuleListView;
  readonly syscallTables: readonly SyscallTableView[];
  /** Dispatch switches, when the kernel has them (absent from snapshots made before they were read). */
  readonly dispatch?: readonly DispatchView[];
  readonly integrity: KernelIntegrityView;
  /** Today's hook surfaces; absent from snapshots made before they were read (or when a scan skips them). */
  readonly moduleArea?: ModuleAreaView;
  readonly ftrace?: FtraceView;
  readonly kprobes?: KprobeView;
  readonly tracepoints?: TracepointView;
  readonly bpf?: BpfView;
  /** Kernel text against its clean copy (scans that hash the image, once a clean copy exists). */
  readonly textDiff?: TextDiffView;
}
