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

const MAX_PATCH_SITES = 1 << 20;
const NOP5 = Buffer.from([0x0f, 0x1f, 0x44, 0x00, 0x00]);
const NOP2 = Buffer.from([0x66, 0x90]);
/** What a static call site to a function that returns 0 holds: `xor %eax,%eax` padded with CS prefixes. */
const XOR5RAX = Buffer.from([0x2e, 0x2e, 0x2e, 0x31, 0xc0]);

/** A run of text bytes the kernel itself rewrites at run time, in the state it may legitimately hold. */
interface PatchSite { readonly at: bigint; readonly len: number; readonly ok: (b: Buffer) => boolean }

const rel32 = (b: Buffer, at: bigint, len: number): bigint => at + BigInt(len) + BigInt(b.readInt32LE(1));

/**
 * Sites the kernel patches while it runs: jump labels (static keys flipped by sysctls, cgroup BPF,
 * socket memory accounting, ... as a distro's services start and stop) and static calls. Each is
 * hashed as zeros when it holds one of the states the kernel writes there (a NOP, or a jump or call
 * to where the entry says), and as its raw bytes otherwise, so a foreign patch on a site still
 * changes the hash. Kernels without the tables (or with implausible ones) get no sites.
 */
function patchSites(ctx: KernelContext, errors: ViewError[]): PatchSite[] {
  const s = ctx.profile.symbols;
  const sites: PatchSite[] = [];
  const table = (start: string, stop: string, size: number): { base: bigint; buf: Buffer } | null => {
    const a = s.address(start);
    const b = s.address(stop);
    if (a === undefined || b === undefined) return null;
    if (b < a || (b - a) % BigInt(size) !== 0n || (b - a) / BigInt(size) > BigInt(MAX_PATCH_SITES)) {
      errors.push({ where: `integrity: ${start}..${stop}`, message: 'range implausible' });
      return null;
    }
    try {
      return { base: a, buf: ctx.space.read(a, Number(b - a)) };
    } catch (e) {
      errors.push(viewError(`integrity: ${start}`, e));
      return null;
    }
  };
  // struct jump_entry { s32 code; s32 target; long key; }: offsets relative to the fields themselves.
  const jt = table('__start___jump_table', '__stop___jump_table', 16);
  if (jt) {
    for (let o = 0; o < jt.buf.length; o += 16) {
      const e = jt.base + BigInt(o);
      const code = e + BigInt(jt.buf.readInt32LE(o));
      const target = e + 4n + BigInt(jt.buf.readInt32LE(o + 4));
      sites.push({
        at: code, len: 5,
        ok: (b) => b.equals(NOP5) || (b[0] === 0xe9 && rel32(b, code, 5) === target)
          || b.subarray(0, 2).equals(NOP2) || (b[0] === 0xeb && code + 2n + BigInt(b.readInt8(1)) === target),
      });
    }
  }
  // struct static_call_site { s32 addr; s32 key; }: a call (for tail calls a jump or ret), a NOP, or
  // the 5-byte `xor %eax,%eax` of a call to return-0 (perf's guest callbacks flip these when kvm loads).
  const sc = table('__start_static_call_sites', '__stop_static_call_sites', 8);
  if (sc) {
    for (let o = 0; o < sc.buf.length; o += 8) {
      const at = sc.base + BigInt(o) + BigInt(sc.buf.readInt32LE(o));
      sites.push({ at, len: 5, ok: (b) => b.equals(NOP5) || b.equals(XOR5RAX) || b[0] === 0xe8 || b[0] === 0xe9 || b[0] === 0xc3 });
    }
  }
  // The static call trampolines: a jump to the current function, or a return.
  const ta = s.address('__static_call_text_start');
  const tb = s.address('__static_call_text_end');
  if (ta !== undefined && tb !== undefined && tb > ta && tb - ta <= 0x10_0000n) {
    sites.push({ at: ta, len: Number(tb - ta), ok: () => true });
  }
  return sites.sort((x, y) => (x.at < y.at ? -1 : x.at > y.at ? 1 : 0));
}

function hashRegion(ctx: KernelContext, from: string, to: string, errors: ViewError[], sites: readonly PatchSite[] = []): string | null {
  const s = ctx.profile.symbols;
  const a = s.address(from);
  const b = s.address(to);
  if (a === undefined || b === undefined || b <= a || b - a > BigInt(MAX_REGION)) {
    errors.push({ where: `integrity: ${from}..${to}`, message: 'symbols missing or range implausible' });
    return null;
  }
  const h = createHash('sha256');
  let next = 0;
  // 2 MiB pieces: bounded copies, and a hole is named precisely.
  for (let at = a; at < b; at += 0x20_0000n) {
    const len = Number(b - at < 0x20_0000n ? b - at : 0x20_0000n);
    try {
      const piece = Buffer.from(ctx.space.read(at, len));
      const end = at + BigInt(len);
      while (next < sites.length && (sites[next] as PatchSite).at + BigInt((sites[next] as PatchSite).len) <= at) next++;
      for (let i = next; i < sites.length; i++) {
        const site = sites[i] as PatchSite;
        if (site.at >= end) break;
        const lo = site.at > at ? Number(site.at - at) : 0;
        const hi = Math.min(len, Number(site.at + BigInt(site.len) - at));
        // A site across a piece boundary is judged on its own bytes.
        const inside = site.at >= at && site.at + 5n <= end;
        const head = inside ? piece.subarray(lo, lo + 5) : ctx.space.read(site.at, 5);
        if (hi > lo && site.ok(head)) piece.fill(0, lo, hi);
      }
      h.update(piece);
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
  const textHash = opts.hashImage ? hashRegion(ctx, '_stext', '_etext', errors, patchSites(ctx, errors)) : null;
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
