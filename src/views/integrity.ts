// Kernel integrity: hashes of kernel text and read-only data, of the syscall
// dispatchers (on 6.1.85+ dispatch goes through x64_sys_call's switch, not the
// table), and the IDT's handler addresses.
import { createHash } from 'node:crypto';
import type { KernelIntegrityView, ViewError } from './types.js';
import { hex, viewError, type KernelContext } from './kernel-context.js';

const MAX_REGION = 64 << 20;
const MAX_FUNCTION = 1 << 20;
const DISPATCHERS = ['x64_sys_call', 'ia32_sys_call', 'x32_sys_call'];

// The last bytes hashed per function: an unchanged body (the usual case) costs a memcmp, not a sha256.
const lastBodies = new WeakMap<object, Map<string, { bytes: Buffer; hash: string }>>();

function hashFunction(ctx: KernelContext, name: string, bytes: Buffer): string {
  let m = lastBodies.get(ctx.profile);
  if (!m) { m = new Map(); lastBodies.set(ctx.profile, m); }
  const last = m.get(name);
  if (last && last.bytes.equals(bytes)) return last.hash;
  const hash = createHash('sha256').update(bytes).digest('hex');
  m.set(name, { bytes, hash });
  return hash;
}

export interface IntegrityOptions {
  /** Hash all of kernel text and rodata (~20 MB; tens of ms). Off for the fast periodic check. */
  readonly hashImage: boolean;
  /** MSR_LSTAR if the caller could read it (QMP cannot). */
  readonly lstar?: bigint | null;
}

function hashRegion(ctx: KernelContext, from: string, to: string, errors: ViewError[]): string | null {
  const s = ctx.profile.symbols;
  const a = s.address(from);
  const b = s.address(to);
  if (a === undefined || b === undefined || b <= a || b - a > BigInt(MAX_REGION)) {
    errors.push({ where: `integrity: ${from}..${to}`, message: 'symbols missing or range implausible' });
    return null;
  }
  const h = createHash('sha256');
  // 2 MiB pieces: bounded copies, and a hole is named precisely.
  for (let at = a; at < b; at += 0x20_0000n) {
    const len = Number(b - at < 0x20_0000n ? b - at : 0x20_0000n);
    try {
      h.update(ctx.space.read(at, len));
    } catch (e) {
      errors.push(viewError(`integrity: ${from}..${to}`, e));
      return null;
    }
  }
  return h.digest('hex');
}

export function readIntegrity(ctx: KernelContext, opts: IntegrityOptions): KernelIntegrityView {
  const errors: ViewError[] = [];
  const s = ctx.profile.symbols;
  const textHash = opts.hashImage ? hashRegion(ctx, '_stext', '_etext', errors) : null;
  const rodataHash = opts.hashImage ? hashRegion(ctx, '__start_rodata', '__end_rodata', errors) : null;
  const dispatchers: { name: string; hash: string }[] = [];
  for (const name of DISPATCHERS) {
    const a = s.address(name);
    const len = s.extent(name);
    if (a === undefined) continue;
    if (len === undefined || len <= 0 || len > MAX_FUNCTION) { errors.push({ where: `integrity: ${name}`, message: `size ${String(len)} implausible` }); continue; }
    try {
      dispatchers.push({ name, hash: hashFunction(ctx, name, ctx.space.read(a, len)) });
    } catch (e) {
      errors.push(viewError(`integrity: ${name} at ${hex(a)}`, e));
    }
  }
  const idt: bigint[] = [];
  const idtTable = s.address('idt_table');
  if (idtTable === undefined) errors.push({ where: 'integrity: idt', message: 'no idt_table symbol' });
  else {
    try {
      const raw = ctx.space.read(idtTable, 256 * 16);
      for (let v = 0; v < 256; v++) {
        const g = raw.subarray(v * 16, v * 16 + 16);
        // struct gate_struct: offset_low u16, segment u16, bits u16, offset_middle u16, offset_high u32, reserved u32
        idt.push(BigInt(g.readUInt16LE(0)) | (BigInt(g.readUInt16LE(6)) << 16n) | (BigInt(g.readUInt32LE(8)) << 32n));
      }
    } catch (e) {
      errors.push(viewError(`integrity: idt_table at ${hex(idtTable)}`, e));
    }
  }
  return { textHash, rodataHash, dispatchers, idt, lstar: opts.lstar ?? null, errors };
}
