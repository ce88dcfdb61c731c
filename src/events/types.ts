// The events the supervisor records: the contract between the watchdog
// (producer: src/supervisor, src/policy, src/recovery, the write-trap reader)
// and the record/report side (src/store, src/telemetry, src/web).
// Every field is plain JSON: addresses are "0x..." hex strings because JSON
// has no 64-bit integers. Extend additively; consumers drop unknown kinds.

export const EVENT_KINDS = [
  'scan',
  'finding',
  'ladder-step',
  'action',
  'refused-write',
  'policy-change',
  'host-metrics',
  'guest-health',
  'device-state',
  'outbox-dropped',
  'operator-action',
] as const;
export type EventKind = (typeof EVENT_KINDS)[number];

/** "0x" followed by 1..16 lowercase hex digits. */
export type HexAddress = string;

/** One introspection pass over one guest. */
export interface ScanPayload {
  readonly guest: string;
  readonly startedAtMs: number;
  readonly durationMs: number;
  /** clean: no fault; faults: at least one finding raised; failed: the scan itself could not complete. */
  readonly outcome: 'clean' | 'faults' | 'failed';
  /** Findings raised by this scan. */
  readonly findings: number;
  readonly error: string | null;
  /** Version of the policy the scan was judged against (null before any policy). */
  readonly policyVersion: number | null;
  /** Free-form counters, e.g. { tasks: 87, modules: 31 }. */
  readonly stats: Readonly<Record<string, number>>;
}

/** A fault seen (raised) or gone (cleared). findingId is stable across scans for the same fault instance. */
export interface FindingPayload {
  readonly guest: string;
  readonly findingId: string;
  /** Fault kind as the detectors name it, e.g. "hidden-process", "critical-process-missing", "syscall-table-changed". */
  readonly fault: string;
  readonly state: 'raised' | 'cleared';
  readonly severity: 'info' | 'warning' | 'critical';
  readonly summary: string;
  /** What the detector saw (pids, names, slots, addresses); JSON only. */
  readonly evidence: Readonly<Record<string, unknown>>;
}

/** The recovery ladder of one fault moved to a step. */
export interface LadderStepPayload {
  readonly guest: string;
  readonly fault: string;
  readonly findingId: string | null;
  /** Index of the step in the ladder, from 0; null when the ladder was reset (fault cleared). */
  readonly step: number | null;
  /** The step's recovery action, e.g. "restart-process", "reboot-os", "restart-vm", "restore-image"; null on reset. */
  readonly action: string | null;
  /** How many times this step has now been tried for this fault. */
  readonly attempt: number;
  readonly reason: string;
}

/** A recovery action that was carried out, with its result. */
export interface ActionPayload {
  readonly guest: string;
  readonly actionId: string;
  /** "start-process", "kill-process", "reboot-os", "start-vm", "stop-vm", "restart-vm", "restore-image", ... */
  readonly action: string;
  readonly fault: string | null;
  /** What the action was aimed at, e.g. a process name; null for whole-VM actions. */
  readonly target: string | null;
  readonly outcome: 'ok' | 'failed';
  readonly error: string | null;
  readonly startedAtMs: number;
  readonly durationMs: number;
}

/** A guest write into the protected syscall table that the KVM write trap refused. */
export interface RefusedWritePayload {
  readonly guest: string;
  /** When the hypervisor refused it (host clock, ms since the epoch). */
  readonly refusedAtMs: number;
  readonly vcpu: number;
  /** Guest-physical address the instruction tried to write. */
  readonly gpa: HexAddress;
  /** Guest-virtual address, when the trap knows it. */
  readonly gva: HexAddress | null;
  /** Bytes the instruction tried to store; 0 when the trap could not tell (an instruction KVM cannot emulate). */
  readonly length: number;
  /** What the guest saw: "gp" (#GP(0), the instruction did not complete) or "drop" (it completed, the bytes were discarded). */
  readonly action: 'gp' | 'drop';
  /** Which KVM path met the write: an emulated store, a locked op, a write-std (SGDT/FXSAVE/task switch), or an unemulatable instruction. */
  readonly source: 'emulated' | 'cmpxchg' | 'write-std' | 'unemulated';
  /** The trap log's sequence number (per attach of the trap to this guest's QEMU). */
  readonly trapSeq: number;
  /** Refused writes the kernel's log ring lost just before this one (it was full); they were refused but not recorded. */
  readonly lostBefore: number;
  /** Instruction pointer of the refused instruction. */
  readonly rip: HexAddress;
  /** Instruction bytes (hex), when captured. */
  readonly instruction: string | null;
  /** The bytes it tried to write (hex, guest byte order). */
  readonly value: string;
  /** Which protected table, e.g. "sys_call_table". */
  readonly table: string;
  /** Syscall slot the write hit, when it maps to one. */
  readonly entry: number | null;
}

/** A policy update arrived: applied, rejected before applying, or rolled back after it failed to load. */
export interface PolicyChangePayload {
  readonly outcome: 'applied' | 'rejected' | 'rolled-back';
  /** The bundle's version, when it could be read. */
  readonly version: number | null;
  /** The version running before and after this change. */
  readonly previousVersion: number | null;
  readonly activeVersion: number | null;
  /** Where it came from: "ota:<topic>", "file", "cli". */
  readonly source: string;
  readonly keyId: string | null;
  /** Why it was rejected or rolled back; null when applied. */
  readonly reason: string | null;
}

export interface HostMetricsPayload {
  readonly cpuLoadPercent: number;
  readonly load1: number;
  readonly load5: number;
  readonly load15: number;
  readonly memTotalBytes: number;
  readonly memUsedBytes: number;
  readonly memAvailableBytes: number;
  readonly disks: readonly { readonly mount: string; readonly sizeBytes: number; readonly usedBytes: number }[];
  /** null when the host exposes no sensors. */
  readonly temperaturesC: { readonly main: number | null; readonly max: number | null; readonly cores: readonly number[] } | null;
  readonly uptimeS: number;
}

export type GuestHealth = 'healthy' | 'faulty' | 'recovering' | 'down' | 'unknown';

/** The latest health of one guest (published retained). */
export interface GuestHealthPayload {
  readonly guest: string;
  readonly health: GuestHealth;
  readonly openFindings: number;
  readonly lastScanAtMs: number | null;
  /** Where each active ladder stands. */
  readonly ladders: readonly { readonly fault: string; readonly step: number; readonly action: string; readonly attempt: number }[];
  readonly note: string | null;
}

/** The device as a whole (published retained; the broker's Last Will publishes "offline"). */
export interface DeviceStatePayload {
  readonly state: 'online' | 'offline';
  readonly softwareVersion: string;
  readonly startedAtMs: number | null;
  readonly policyVersion: number | null;
}

/**
 * The outbox hit its bound and dropped its oldest undelivered events. An
 * earlier notice that was dropped too is folded in, so the notices a consumer
 * receives add up to every event it will never receive.
 */
export interface OutboxDroppedPayload {
  /** Events dropped (this drop plus any folded-in notices), not counting notices. */
  readonly dropped: number;
  /** Span of the dropped events' seq (not every seq in it was dropped: some may have been delivered before). */
  readonly firstSeq: number;
  readonly lastSeq: number;
  readonly limit: number;
}

/** The requesting process as the kernel recorded it on the control socket (SO_PEERCRED). */
export interface OperatorPeer {
  readonly uid: number;
  readonly pid: number;
}

/** Something an operator asked of the supervisor (control socket, CLI, web page), with its outcome. */
export interface OperatorActionPayload {
  /** The guest it was aimed at; null for device-wide requests. */
  readonly guest: string | null;
  /** Who asked, in words: "local cli uid 0 pid 1234" (control socket), "web token from <address>" (page). */
  readonly who: string;
  /** The control socket's peer as the kernel verified it; null on the page, or where it could not be read. */
  readonly peer: OperatorPeer | null;
  /** The operation, e.g. "action", "release", "baseline-accept", "pause", "resume", "exec". */
  readonly operation: string;
  /** Its argument in words, e.g. the action kind or the command line; null when none. */
  readonly detail: string | null;
  readonly outcome: 'ok' | 'failed' | 'refused';
  readonly error: string | null;
  readonly startedAtMs: number;
  readonly durationMs: number;
}

export interface EventPayloads {
  'scan': ScanPayload;
  'finding': FindingPayload;
  'ladder-step': LadderStepPayload;
  'action': ActionPayload;
  'refused-write': RefusedWritePayload;
  'policy-change': PolicyChangePayload;
  'host-metrics': HostMetricsPayload;
  'guest-health': GuestHealthPayload;
  'device-state': DeviceStatePayload;
  'outbox-dropped': OutboxDroppedPayload;
  'operator-action': OperatorActionPayload;
}

/** What a producer hands to EventSink.record. */
export type EventInput = {
  [K in EventKind]: { readonly kind: K; readonly payload: EventPayloads[K]; /** default: now */ readonly atMs?: number };
}[EventKind];

/**
 * A recorded event, as stored and as published. (stream, seq) is unique and seq
 * only grows within a stream, so a consumer drops duplicates by id and restores
 * order by seq. stream is fixed when the device's store is created.
 */
export type RecordedEvent = {
  [K in EventKind]: {
    readonly v: 1;
    /** "<stream>:<seq>" */
    readonly id: string;
    readonly stream: string;
    readonly seq: number;
    readonly device: string;
    readonly kind: K;
    readonly atMs: number;
    readonly guest: string | null;
    readonly payload: EventPayloads[K];
  };
}[EventKind];

export function eventGuest(input: EventInput): string | null {
  const p = input.payload as { guest?: unknown };
  return typeof p.guest === 'string' ? p.guest : null;
}
