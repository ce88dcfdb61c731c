// One guest's write trap in the watchdog loop: after a clean scan, protect the
// guest-physical pages of the syscall tables introspection found; every scan,
// drain the refused writes into refused-write events and a per-boot tally the
// detectors turn into a `syscall-write-refused` finding. On a host whose KVM
// has no trap it says so once and stays out of the way.
import type { EventInput, RefusedWritePayload } from '../events/types.js';
import type { RefusedWriteTally } from '../detectors/write-trap.js';
import type { SyscallTableView } from '../views/types.js';
import { errorMessage } from '../util/errors.js';
import { openWriteTrap, type OpenWriteTrapResult, type TrapAction, type TrapRecord, type WriteTrap } from './write-trap.js';

const PAGE = 4096n;
/** Refused-write events recorded per scan; the rest are counted in the tally and the log (a looping guest must not flood the store). */
export const MAX_EVENTS_PER_SCAN = 256;

/** One protected guest-physical range and the part of a table it covers. */
export interface PlannedRange {
  readonly table: SyscallTableView['table'];
  readonly tableVa: bigint;
  /** Byte offset of this range's first byte in the table. */
  readonly tableOffset: number;
  readonly gpa: bigint;
  readonly len: number;
}

/**
 * The guest-physical ranges holding each table: the table's pages translated
 * one by one (a table need not be physically contiguous), neighbours merged.
 */
export function planTrapRanges(tables: readonly SyscallTableView[], translate: (va: bigint) => bigint | null): { ranges: PlannedRange[]; problems: string[] } {
  const ranges: PlannedRange[] = [];
  const problems: string[] = [];
  for (const t of tables) {
    const size = BigInt(t.entries.length) * 8n;
    if (size === 0n) continue;
    let va = t.address;
    const end = t.address + size;
    const mine: PlannedRange[] = [];
    let ok = true;
    while (va < end) {
      const chunkEnd = (va / PAGE + 1n) * PAGE < end ? (va / PAGE + 1n) * PAGE : end;
      const pa = translate(va);
      if (pa === null) {
        problems.push(`${t.table}@0x${t.address.toString(16)}: page at 0x${va.toString(16)} is not mapped`);
        ok = false;
        break;
      }
      const last = mine[mine.length - 1];
      const len = Number(chunkEnd - va);
      if (last && last.gpa + BigInt(last.len) === pa) mine[mine.length - 1] = { ...last, len: last.len + len };
      else mine.push({ table: t.table, tableVa: t.address, tableOffset: Number(va - t.address), gpa: pa, len });
      va = chunkEnd;
    }
    if (ok) for (const r of mine) ranges.push(r);
  }
  return { ranges, problems };
}

const samePlan = (a: readonly PlannedRange[], b: readonly PlannedRange[]): boolean =>
  a.length === b.length && a.every((r, i) => r.gpa === (b[i] as PlannedRange).gpa && r.len === (b[i] as PlannedRange).len);

const hex = (v: bigint): string => `0x${v.toString(16)}`;

/** A refused write as the event journal records it; table/entry/gva from the range it hit. */
export function refusedWritePayload(guest: string, r: TrapRecord, plan: readonly PlannedRange[]): RefusedWritePayload {
  const hit = plan.find((p) => r.gpa >= p.gpa && r.gpa < p.gpa + BigInt(p.len)) ?? plan.find((p) => p.gpa === r.rangeGpa);
  const offset = hit ? hit.tableOffset + Number(r.gpa - hit.gpa) : null;
  return {
    guest,
    refusedAtMs: Number(r.timeNs / 1_000_000n),
    vcpu: r.vcpu,
    gpa: hex(r.gpa),
    gva: hit && offset !== null ? hex(hit.tableVa + BigInt(offset)) : null,
    length: Math.min(4096, r.length),
    action: r.action,
    source: r.source,
    trapSeq: Number(r.seq),
    lostBefore: r.lostBefore,
    rip: hex(r.rip),
    instruction: r.instruction.length > 0 ? r.instruction.toString('hex') : null,
    value: r.data.toString('hex'),
    table: hit?.table ?? 'unknown',
    entry: offset !== null && offset >= 0 ? Math.floor(offset / 8) : null,
  };
}

export type TrapStatus = 'off' | 'waiting' | 'unavailable' | 'attached' | 'armed' | 'error';

export interface TrapScanInput {
  readonly qemuPid: number | undefined;
  readonly bootGeneration: number;
  /** The scan's syscall tables, only from a clean scan (null: do not (re)arm now). */
  readonly tables: readonly SyscallTableView[] | null;
  readonly translate: ((va: bigint) => bigint | null) | null;
}

export interface TrapScanResult {
  readonly status: TrapStatus;
  readonly events: EventInput[];
  /** Refused writes in this boot of the guest; null when none. */
  readonly tally: RefusedWriteTally | null;
  readonly detail: string | null;
}

export interface SyscallTableTrapOptions {
  readonly guest: string;
  /** What the guest sees: 'gp' (#GP(0), the instruction does not complete) or 'drop' (silently discarded). */
  readonly action: TrapAction;
  readonly ringRecords?: number;
  readonly log: (line: string) => void;
  /** Injected in unit tests; default openWriteTrap. */
  readonly open?: (qemuPid: number) => OpenWriteTrapResult;
}

export class SyscallTableTrap {
  private trap: WriteTrap | null = null;
  private triedPid: number | undefined;
  private unavailable: string | null = null;
  private unavailableLogged = false;
  private plan: PlannedRange[] = [];
  private planGeneration = -1;
  private tally: RefusedWriteTally | null = null;
  private status: TrapStatus = 'waiting';
  private detail: string | null = null;

  constructor(private readonly o: SyscallTableTrapOptions) {}

  get state(): { status: TrapStatus; detail: string | null; ranges: readonly PlannedRange[] } {
    return { status: this.status, detail: this.detail, ranges: this.plan };
  }

  update(input: TrapScanInput): TrapScanResult {
    const events: EventInput[] = [];
    if (this.tally && this.tally.bootGeneration !== input.bootGeneration) this.tally = null;

    // A different QEMU (restart, image restore, adopted anew): the old trap's VM is gone.
    if (this.trap && this.trap.qemuPid !== input.qemuPid) {
      for (const e of this.drainInto(input.bootGeneration)) events.push(e);
      this.closeTrap();
    }
    if (input.qemuPid === undefined) return this.result('waiting', null, events);
    if (!this.trap && this.triedPid !== input.qemuPid) {
      this.triedPid = input.qemuPid;
      const r = (this.o.open ?? ((pid) => openWriteTrap(pid, this.o.ringRecords !== undefined ? { ringRecords: this.o.ringRecords } : {})))(input.qemuPid);
      if ('ok' in r) {
        this.trap = r.ok;
        this.unavailable = null;
        this.unavailableLogged = false;
        this.o.log(`write trap attached to QEMU pid ${input.qemuPid}`);
      } else {
        this.unavailable = r.unavailable;
        if (!this.unavailableLogged) this.o.log(`trap unavailable: ${r.unavailable}`);
        this.unavailableLogged = true;
      }
    }
    if (!this.trap) return this.result('unavailable', this.unavailable, events);

    // Records first, mapped onto the plan they hit.
    for (const e of this.drainInto(input.bootGeneration)) events.push(e);

    // The ranges of an earlier boot protect pages the new kernel may use for anything.
    if (this.planGeneration !== input.bootGeneration && this.plan.length > 0) this.disarm('the guest kernel restarted');

    if (input.tables && input.translate) {
      const { ranges, problems } = planTrapRanges(input.tables, input.translate);
      if (problems.length > 0) this.o.log(`write trap: ${problems.join('; ')}`);
      if (ranges.length > 0 && !(samePlan(ranges, this.plan) && this.planGeneration === input.bootGeneration)) {
        this.disarm('syscall tables moved');
        try {
          for (const r of ranges) this.trap.addRange({ gpa: r.gpa, len: r.len, action: this.o.action });
          this.plan = ranges;
          this.planGeneration = input.bootGeneration;
          this.o.log(`write trap armed (${this.o.action}) on ${ranges.map((r) => `${r.table}+0x${r.tableOffset.toString(16)} gpa ${hex(r.gpa)}+0x${r.len.toString(16)}`).join(', ')}`);
        } catch (e) {
          this.trap.disarm();
          this.plan = [];
          return this.result('error', `arming failed: ${errorMessage(e)}`, events, true);
        }
      }
    }
    return this.result(this.plan.length > 0 ? 'armed' : 'attached', null, events);
  }

  /** Drops the ranges now: call before rebooting/resetting the guest (a new kernel may put anything at those pages). */
  beforeKernelRestart(): void {
    this.disarm('the guest kernel is being restarted');
  }

  close(): void {
    this.closeTrap();
  }

  private disarm(why: string): void {
    if (!this.trap || this.plan.length === 0) return;
    const problems = this.trap.disarm();
    this.o.log(`write trap disarmed: ${why}${problems.length > 0 ? ` (${problems.join('; ')})` : ''}`);
    this.plan = [];
    this.planGeneration = -1;
  }

  private closeTrap(): void {
    this.trap?.close();
    this.trap = null;
    this.plan = [];
    this.planGeneration = -1;
  }

  private drainInto(bootGeneration: number): EventInput[] {
    if (!this.trap) return [];
    let drained;
    try {
      drained = this.trap.drain();
    } catch (e) {
      this.o.log(`write trap: reading the log failed: ${errorMessage(e)}`);
      return [];
    }
    for (const p of drained.problems) this.o.log(`write trap: ${p}`);
    if (drained.records.length === 0 && drained.lost === 0) return [];
    const payloads = drained.records.map((r) => refusedWritePayload(this.o.guest, r, this.plan));
    const t = this.tally && this.tally.bootGeneration === bootGeneration ? this.tally : null;
    const last = payloads[payloads.length - 1];
    const entries = new Set([...(t?.entries ?? []), ...payloads.map((p) => p.entry).filter((x): x is number => x !== null)]);
    this.tally = {
      bootGeneration,
      count: (t?.count ?? 0) + payloads.length,
      lost: (t?.lost ?? 0) + drained.lost,
      firstAtMs: t?.firstAtMs ?? payloads[0]?.refusedAtMs ?? Date.now(),
      lastRip: last?.rip ?? t?.lastRip ?? null,
      lastGpa: last?.gpa ?? t?.lastGpa ?? null,
      tables: [...new Set([...(t?.tables ?? []), ...payloads.map((p) => p.table)])].slice(0, 8),
      entries: [...entries].sort((a, b) => a - b).slice(0, 64),
    };
    for (const p of payloads.slice(0, 8)) {
      this.o.log(`REFUSED write to ${p.table}${p.entry !== null ? `[${p.entry}]` : ''} gpa ${p.gpa} len ${p.length} from rip ${p.rip} value ${p.value}`);
    }
    if (payloads.length > MAX_EVENTS_PER_SCAN || drained.lost > 0) {
      this.o.log(`write trap: ${payloads.length} refused writes this scan (${Math.max(0, payloads.length - MAX_EVENTS_PER_SCAN)} not recorded as events), ${drained.lost} lost by the kernel ring`);
    }
    return payloads.slice(0, MAX_EVENTS_PER_SCAN).map((payload) => ({ kind: 'refused-write' as const, payload, atMs: payload.refusedAtMs }));
  }

  private result(status: TrapStatus, detail: string | null, events: EventInput[], log = false): TrapScanResult {
    if (log && (status !== this.status || detail !== this.detail)) this.o.log(`write trap ${status}: ${detail ?? ''}`);
    this.status = status;
    this.detail = detail;
    return { status, events, tally: this.tally, detail };
  }
}
