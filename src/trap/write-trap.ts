// The KVM write trap (kernel-patches/) as seen from the
// supervisor: attach to one QEMU's VM, protect guest-physical ranges, drain
// the log of refused writes. The native part (native/src/write_trap.cc) does
// the syscalls; this file decodes and checks what the kernel hands back.
import { Ajv } from 'ajv';
import { loadNative, type NativeWriteTrap } from '../native/binding.js';
import { formatAjvErrors } from '../events/schemas.js';
import { errorMessage } from '../util/errors.js';

/** sizeof(struct introvisor_trap_record) (kernel-patches/uapi/introvisor_trap.h). */
export const TRAP_RECORD_BYTES = 112;
export const TRAP_INSN_BYTES = 16;
export const TRAP_DATA_BYTES = 32;
export const TRAP_MAX_RANGES = 64;
export const TRAP_MAX_RANGE_LEN = 16 * 1024 * 1024;

export type TrapAction = 'drop' | 'gp';
export const TRAP_ACTION_CODE: Readonly<Record<TrapAction, number>> = { drop: 1, gp: 2 };
const ACTION_NAME: Readonly<Record<number, TrapAction>> = { 1: 'drop', 2: 'gp' };

/** Which KVM path met the write (INTROVISOR_TRAP_SRC_*). */
export type TrapSource = 'emulated' | 'cmpxchg' | 'write-std' | 'unemulated';
const SOURCE_NAME: Readonly<Record<number, TrapSource>> = { 1: 'emulated', 2: 'cmpxchg', 3: 'write-std', 4: 'unemulated' };

const FLAG_DATA_TRUNCATED = 1;
const FLAG_INSN_UNDECODED = 2;

/** One refused write, decoded from a struct introvisor_trap_record. */
export interface TrapRecord {
  readonly seq: bigint;
  /** CLOCK_REALTIME of the host when KVM refused the write. */
  readonly timeNs: bigint;
  readonly gpa: bigint;
  readonly rip: bigint;
  /** Start of the protected range that was hit. */
  readonly rangeGpa: bigint;
  readonly vcpu: number;
  /** Bytes the instruction tried to store; 0 when unknown (unemulated instructions). */
  readonly length: number;
  readonly action: TrapAction;
  readonly source: TrapSource;
  /** Records lost just before this one (the ring was full): the kernel's lost_before, or the gap in seq when that is larger. */
  readonly lostBefore: number;
  /** Instruction bytes (empty for write-std). */
  readonly instruction: Buffer;
  /** First bytes it tried to write (at most 32). */
  readonly data: Buffer;
  readonly dataTruncated: boolean;
  readonly instructionUndecoded: boolean;
}

// The fixed-width fields as read, checked before they become a TrapRecord.
interface RawFields { action: number; source: number; insnLen: number; dataLen: number; flags: number; len: number }
const rawSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['action', 'source', 'insnLen', 'dataLen', 'flags', 'len'],
  properties: {
    action: { enum: [1, 2] },
    source: { enum: [1, 2, 3, 4] },
    insnLen: { type: 'integer', minimum: 0, maximum: TRAP_INSN_BYTES },
    dataLen: { type: 'integer', minimum: 0, maximum: TRAP_DATA_BYTES },
    flags: { type: 'integer', minimum: 0, maximum: FLAG_DATA_TRUNCATED | FLAG_INSN_UNDECODED },
    len: { type: 'integer', minimum: 0 },
  },
} as const;
const checkRaw = new Ajv({ allErrors: true, strict: true }).compile<RawFields>(rawSchema);

export interface ParsedRecords {
  readonly records: TrapRecord[];
  /** Records that could not be trusted, each naming its index/offset and field. */
  readonly problems: string[];
  /** Records the kernel lost (ring full): the sum of lostBefore plus gaps in seq not covered by it. */
  readonly lost: number;
  /** seq of the last record read (for gap detection across reads), or the one passed in. */
  readonly lastSeq: bigint;
}

/**
 * Decodes a read() of the trap fd. A buffer that is not whole records, or a
 * record with impossible fields, is reported (never guessed at); at most
 * maxRecords are decoded. lastSeq: the seq of the previous read's last record (0n at attach).
 */
export function parseTrapRecords(buf: Buffer, lastSeq = 0n, maxRecords = 65536): ParsedRecords {
  const records: TrapRecord[] = [];
  const problems: string[] = [];
  let lost = 0;
  let prev = lastSeq;
  if (buf.length % TRAP_RECORD_BYTES !== 0) {
    problems.push(`trap log: ${buf.length} bytes is not a whole number of ${TRAP_RECORD_BYTES}-byte records; the trailing ${buf.length % TRAP_RECORD_BYTES} bytes are ignored`);
  }
  const n = Math.min(Math.floor(buf.length / TRAP_RECORD_BYTES), maxRecords);
  if (n < Math.floor(buf.length / TRAP_RECORD_BYTES)) problems.push(`trap log: only the first ${maxRecords} records are decoded`);
  for (let i = 0; i < n; i++) {
    const o = i * TRAP_RECORD_BYTES;
    const where = `trap record ${i} (offset ${o})`;
    const seq = buf.readBigUInt64LE(o);
    const raw: RawFields = {
      len: buf.readUInt32LE(o + 44),
      action: buf.readUInt16LE(o + 48),
      source: buf.readUInt16LE(o + 50),
      insnLen: buf.readUInt8(o + 56),
      dataLen: buf.readUInt8(o + 57),
      flags: buf.readUInt8(o + 58),
    };
    const lostBefore = buf.readUInt32LE(o + 52);
    if (!checkRaw(raw)) {
      problems.push(`${where}: ${formatAjvErrors(checkRaw.errors)}`);
      continue;
    }
    if (seq <= prev) {
      problems.push(`${where}: seq ${seq} does not follow ${prev}`);
      continue;
    }
    // seq counts every refused write, so a gap is records the ring lost; lostBefore says the same when the kernel knows.
    const gap = Number(seq - prev - 1n);
    lost += Math.max(gap, lostBefore);
    prev = seq;
    records.push({
      seq,
      timeNs: buf.readBigUInt64LE(o + 8),
      gpa: buf.readBigUInt64LE(o + 16),
      rip: buf.readBigUInt64LE(o + 24),
      rangeGpa: buf.readBigUInt64LE(o + 32),
      vcpu: buf.readUInt32LE(o + 40),
      length: raw.len,
      action: ACTION_NAME[raw.action] as TrapAction,
      source: SOURCE_NAME[raw.source] as TrapSource,
      lostBefore: Math.max(gap, lostBefore),
      instruction: Buffer.from(buf.subarray(o + 64, o + 64 + raw.insnLen)),
      data: Buffer.from(buf.subarray(o + 80, o + 80 + raw.dataLen)),
      dataTruncated: (raw.flags & FLAG_DATA_TRUNCATED) !== 0,
      instructionUndecoded: (raw.flags & FLAG_INSN_UNDECODED) !== 0,
    });
  }
  return { records, problems, lost, lastSeq: prev };
}

/** Encodes a record the way the kernel does (tests and fixtures). */
export function encodeTrapRecord(r: Partial<TrapRecord> & { seq: bigint; gpa: bigint }): Buffer {
  const b = Buffer.alloc(TRAP_RECORD_BYTES);
  b.writeBigUInt64LE(r.seq, 0);
  b.writeBigUInt64LE(r.timeNs ?? 0n, 8);
  b.writeBigUInt64LE(r.gpa, 16);
  b.writeBigUInt64LE(r.rip ?? 0n, 24);
  b.writeBigUInt64LE(r.rangeGpa ?? r.gpa, 32);
  b.writeUInt32LE(r.vcpu ?? 0, 40);
  b.writeUInt32LE(r.length ?? 8, 44);
  b.writeUInt16LE(TRAP_ACTION_CODE[r.action ?? 'gp'], 48);
  b.writeUInt16LE(Number(Object.entries(SOURCE_NAME).find(([, v]) => v === (r.source ?? 'emulated'))?.[0] ?? 1), 50);
  b.writeUInt32LE(r.lostBefore ?? 0, 52);
  const insn = r.instruction ?? Buffer.alloc(0);
  const data = r.data ?? Buffer.alloc(0);
  b.writeUInt8(Math.min(insn.length, TRAP_INSN_BYTES), 56);
  b.writeUInt8(Math.min(data.length, TRAP_DATA_BYTES), 57);
  b.writeUInt8((r.dataTruncated ? FLAG_DATA_TRUNCATED : 0) | (r.instructionUndecoded ? FLAG_INSN_UNDECODED : 0), 58);
  insn.copy(b, 64, 0, TRAP_INSN_BYTES);
  data.copy(b, 80, 0, TRAP_DATA_BYTES);
  return b;
}

export interface TrapRange { readonly gpa: bigint; readonly len: number; readonly action: TrapAction }

export interface TrapStats {
  readonly refused: bigint;
  readonly logged: bigint;
  readonly lost: bigint;
  readonly queued: number;
  readonly ringRecords: number;
  readonly ranges: number;
  readonly apiVersion: number;
}

/** What attaching failed on, as the native side names it. */
export interface TrapAttachError { readonly code: string; readonly step: string; readonly message: string }

function attachError(e: unknown): TrapAttachError {
  const o = e as { code?: unknown; step?: unknown };
  return {
    code: typeof o.code === 'string' ? o.code : 'EUNKNOWN',
    step: typeof o.step === 'string' ? o.step : 'unknown',
    message: errorMessage(e),
  };
}

/** Why a kernel, a process or a permission rules the trap out, in words for the log. */
export function unavailableReason(err: TrapAttachError): string {
  if (err.code === 'ENOVMFD') return `${err.message}`;
  if (err.step === 'attach' && (err.code === 'ENOTTY' || err.code === 'EINVAL')) {
    return `the host kernel's KVM has no introvisor write trap (INTROVISOR_TRAP_ATTACH on /dev/kvm: ${err.code}); ${err.message}`;
  }
  if (err.step === 'attach' && err.code === 'EOPNOTSUPP') return `the host KVM lacks write tracking (${err.code}); ${err.message}`;
  if (err.step === 'open-kvm' && err.code === 'ENOENT') return `no /dev/kvm on this host; ${err.message}`;
  if (err.code === 'EPERM' || err.code === 'EACCES') return `not permitted (CAP_SYS_ADMIN and ptrace access to QEMU are needed); ${err.message}`;
  if (err.code === 'EBUSY') return `another process already holds this VM's write trap; ${err.message}`;
  return err.message;
}

/** An attached write trap. Closing it (or exiting) removes every protected range. */
export class WriteTrap {
  private lastSeq = 0n;
  private armed: TrapRange[] = [];

  constructor(private readonly native: NativeWriteTrap, readonly qemuPid: number) {}

  get ranges(): readonly TrapRange[] { return this.armed; }
  get closed(): boolean { return this.native.fd < 0; }

  /** Protects [gpa, gpa+len); throws naming the errno (EEXIST: overlap, ENOSPC: 64 ranges). */
  addRange(r: TrapRange): void {
    if (!Number.isInteger(r.len) || r.len < 1 || r.len > TRAP_MAX_RANGE_LEN) throw new RangeError(`write trap: range length ${r.len} is not 1..16 MiB`);
    this.native.addRange(r.gpa, r.len, TRAP_ACTION_CODE[r.action]);
    this.armed.push(r);
  }

  delRange(r: { gpa: bigint; len: number }): void {
    this.native.delRange(r.gpa, r.len);
    this.armed = this.armed.filter((a) => !(a.gpa === r.gpa && a.len === r.len));
  }

  /** Removes every range this handle added (ranges the kernel no longer knows are skipped). */
  disarm(): string[] {
    const problems: string[] = [];
    for (const r of [...this.armed]) {
      try {
        this.delRange(r);
      } catch (e) {
        problems.push(errorMessage(e));
        this.armed = this.armed.filter((a) => a !== r);
      }
    }
    return problems;
  }

  /** The kernel's view of the ranges in force. */
  list(): TrapRange[] {
    const a = this.native.list();
    const out: TrapRange[] = [];
    for (let i = 0; i + 2 < a.length; i += 3) {
      out.push({ gpa: a[i] as bigint, len: Number(a[i + 1] as bigint), action: ACTION_NAME[Number(a[i + 2] as bigint)] ?? 'gp' });
    }
    return out;
  }

  stats(): TrapStats { return this.native.stats(); }

  /** Reads what is queued, without blocking: at most maxReads reads of 256 records. */
  drain(maxReads = 16): ParsedRecords {
    const records: TrapRecord[] = [];
    const problems: string[] = [];
    let lost = 0;
    for (let i = 0; i < maxReads; i++) {
      const buf = this.native.readRecords(256);
      if (buf.length === 0) break;
      const p = parseTrapRecords(buf, this.lastSeq);
      this.lastSeq = p.lastSeq;
      for (const r of p.records) records.push(r);
      for (const q of p.problems) problems.push(q);
      lost += p.lost;
      if (buf.length < 256 * TRAP_RECORD_BYTES) break;
    }
    return { records, problems, lost, lastSeq: this.lastSeq };
  }

  close(): void {
    this.native.close();
    this.armed = [];
  }
}

export type OpenWriteTrapResult =
  | { readonly ok: WriteTrap }
  | { readonly unavailable: string; readonly error: TrapAttachError };

/** Attaches to QEMU `qemuPid`'s VM; never throws for an attach the host refuses. */
export function openWriteTrap(qemuPid: number, opts: { ringRecords?: number } = {}): OpenWriteTrapResult {
  const { WriteTrap: Native } = loadNative();
  try {
    return { ok: new WriteTrap(new Native(qemuPid, opts.ringRecords ?? 0), qemuPid) };
  } catch (e) {
    const err = attachError(e);
    return { unavailable: unavailableReason(err), error: err };
  }
}
