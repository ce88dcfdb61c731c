// Loaded eBPF programs: the BPF IDR (prog_idr, an XArray of struct bpf_prog *) holds every
// program that has an id, whoever loaded it and however it is attached. Per program: its type,
// expected attach type, name, attach point where the kernel keeps one (aux->attach_func_name
// for fentry/fexit/fmod_ret/LSM; the kprobe or trace event a perf-event program hangs off), the helper
// functions its verified instructions call and the JIT image. Every walk is bounded; whatever
// the guest wrote becomes a view error, never an exception.
import type { BpfProgramInfo, BpfView, ViewError } from './types.js';
import { hex, perProfile, viewError, type KernelContext } from './kernel-context.js';
import { BtfLayouts } from '../profile/layouts.js';

const MAX_DEPTH = 12;
/** Most programs read per scan (a busy host has hundreds; ids are 31-bit). */
export const MAX_BPF_PROGRAMS = 4096;
/** Most instructions scanned per program (the verifier's own limit is 1M; real programs are far smaller). */
export const MAX_BPF_INSNS = 1 << 16;
/** Most instructions scanned per scan, over all programs. */
const INSN_BUDGET = 1 << 20;
const MAX_HELPERS = 64;
const BPF_OBJ_NAME_LEN = 16;
const KPROBE_TABLE_SIZE = 64;
const MAX_KPROBES = 4096;
const MAX_PROG_ARRAY = 256;
/** Most trace events walked (a distribution kernel registers 2000-3000). */
const MAX_TRACE_EVENTS = 16384;

/** enum bpf_prog_type of the UAPI (stable: values are only ever appended), for profiles without BTF enums. */
const PROG_TYPES = ['UNSPEC', 'SOCKET_FILTER', 'KPROBE', 'SCHED_CLS', 'SCHED_ACT', 'TRACEPOINT', 'XDP', 'PERF_EVENT',
  'CGROUP_SKB', 'CGROUP_SOCK', 'LWT_IN', 'LWT_OUT', 'LWT_XMIT', 'SOCK_OPS', 'SK_SKB', 'CGROUP_DEVICE', 'SK_MSG',
  'RAW_TRACEPOINT', 'CGROUP_SOCK_ADDR', 'LWT_SEG6LOCAL', 'LIRC_MODE2', 'SK_REUSEPORT', 'FLOW_DISSECTOR', 'CGROUP_SYSCTL',
  'RAW_TRACEPOINT_WRITABLE', 'CGROUP_SOCKOPT', 'TRACING', 'STRUCT_OPS', 'EXT', 'LSM', 'SK_LOOKUP', 'SYSCALL', 'NETFILTER']
  .map((n) => `BPF_PROG_TYPE_${n}`);
/** enum bpf_attach_type of the UAPI, likewise. */
const ATTACH_TYPES = ['CGROUP_INET_INGRESS', 'CGROUP_INET_EGRESS', 'CGROUP_INET_SOCK_CREATE', 'CGROUP_SOCK_OPS',
  'SK_SKB_STREAM_PARSER', 'SK_SKB_STREAM_VERDICT', 'CGROUP_DEVICE', 'SK_MSG_VERDICT', 'CGROUP_INET4_BIND',
  'CGROUP_INET6_BIND', 'CGROUP_INET4_CONNECT', 'CGROUP_INET6_CONNECT', 'CGROUP_INET4_POST_BIND', 'CGROUP_INET6_POST_BIND',
  'CGROUP_UDP4_SENDMSG', 'CGROUP_UDP6_SENDMSG', 'LIRC_MODE2', 'FLOW_DISSECTOR', 'CGROUP_SYSCTL', 'CGROUP_UDP4_RECVMSG',
  'CGROUP_UDP6_RECVMSG', 'CGROUP_GETSOCKOPT', 'CGROUP_SETSOCKOPT', 'TRACE_RAW_TP', 'TRACE_FENTRY', 'TRACE_FEXIT',
  'MODIFY_RETURN', 'LSM_MAC', 'TRACE_ITER', 'CGROUP_INET4_GETPEERNAME', 'CGROUP_INET6_GETPEERNAME',
  'CGROUP_INET4_GETSOCKNAME', 'CGROUP_INET6_GETSOCKNAME', 'XDP_DEVMAP', 'CGROUP_INET_SOCK_RELEASE', 'XDP_CPUMAP',
  'SK_LOOKUP', 'XDP', 'SK_SKB_VERDICT', 'SK_REUSEPORT_SELECT', 'SK_REUSEPORT_SELECT_OR_MIGRATE', 'PERF_EVENT',
  'TRACE_KPROBE_MULTI', 'LSM_CGROUP', 'STRUCT_OPS', 'NETFILTER', 'TCX_INGRESS', 'TCX_EGRESS', 'TRACE_UPROBE_MULTI']
  .map((n) => `BPF_${n}`);
/** Program types whose expected attach type means something when it is 0 (BPF_CGROUP_INET_INGRESS). */
const ATTACH_ZERO_MEANS = new Set(['BPF_PROG_TYPE_CGROUP_SKB', 'BPF_PROG_TYPE_CGROUP_SOCK', 'BPF_PROG_TYPE_CGROUP_SOCK_ADDR']);

interface BpfLayout {
  idrRt: number;
  idrBase: number;
  xaHead: number;
  nodeShift: number;
  nodeSlots: number;
  type: number;
  attachType: number;
  len: number;
  jitedLen: number;
  tag: number;
  bpfFunc: number;
  aux: number;
  insnsi: number;
  /** Bit offsets (from the start of struct bpf_prog) of the jited and kprobe_override bitfields, when BTF says. */
  jitedBit: number | null;
  overrideBit: number | null;
  auxId: number;
  auxName: number;
  auxProg: number;
  auxAttachFunc: number | null;
  progTypes: Map<number, string> | null;
  attachTypes: Map<number, string> | null;
}

function layout(ctx: KernelContext): BpfLayout {
  const p = ctx.profile;
  const btf = p.layouts instanceof BtfLayouts ? p.layouts.btf : null;
  const bit = (m: string): number | null => {
    if (!btf) return null;
    try {
      const loc = btf.member('bpf_prog', m);
      return loc.bitSize === 1 ? loc.bitOffset : null;
    } catch { return null; }
  };
  return {
    idrRt: p.offsetof('idr', 'idr_rt'),
    idrBase: p.offsetof('idr', 'idr_base'),
    xaHead: p.offsetof('xarray', 'xa_head'),
    nodeShift: p.offsetof('xa_node', 'shift'),
    nodeSlots: p.offsetof('xa_node', 'slots'),
    type: p.offsetof('bpf_prog', 'type'),
    attachType: p.offsetof('bpf_prog', 'expected_attach_type'),
    len: p.offsetof('bpf_prog', 'len'),
    jitedLen: p.offsetof('bpf_prog', 'jited_len'),
    tag: p.offsetof('bpf_prog', 'tag'),
    bpfFunc: p.offsetof('bpf_prog', 'bpf_func'),
    aux: p.offsetof('bpf_prog', 'aux'),
    insnsi: p.offsetof('bpf_prog', 'insnsi'),
    jitedBit: bit('jited'),
    overrideBit: bit('kprobe_override'),
    auxId: p.offsetof('bpf_prog_aux', 'id'),
    auxName: p.offsetof('bpf_prog_aux', 'name'),
    auxProg: p.offsetof('bpf_prog_aux', 'prog'),
    // 5.5+ (fentry/fexit/LSM); absent before.
    auxAttachFunc: p.layouts.has('bpf_prog_aux', 'attach_func_name') ? p.offsetof('bpf_prog_aux', 'attach_func_name') : null,
    progTypes: btf ? btf.enumerators('bpf_prog_type') : null,
    attachTypes: btf ? btf.enumerators('bpf_attach_type') : null,
  };
}

const layoutOf = perProfile(layout);

/** A NUL-terminated printable string at `va` (at most `max` bytes), or null. */
export function readCString(ctx: KernelContext, va: bigint, max: number): string | null {
  if (!ctx.isKernelPointer(va, 1n)) return null;
  // Read up to the end of the page first: the string may end before an unmapped page.
  const inPage = Number(0x1000n - (va & 0xfffn));
  let buf = ctx.space.tryRead(va, Math.min(max, inPage));
  if (!buf) return null;
  let nul = buf.indexOf(0);
  if (nul < 0 && buf.length < max) {
    const rest = ctx.space.tryRead(va + BigInt(buf.length), max - buf.length);
    if (rest) { buf = Buffer.concat([buf, rest]); nul = buf.indexOf(0); }
  }
  if (nul < 0) return null;
  const s = buf.toString('latin1', 0, nul);
  return /^[\x21-\x7e]{1,}$/.test(s) ? s : null;
}

/**
 * The kernel functions a program's verified instructions call. After the verifier, a helper
 * call's imm is the helper's address minus __bpf_call_base (kfunc calls, src_reg 2, likewise on
 * 5.13+); bpf-to-bpf calls (src_reg 1) are relative jumps and skipped. Unresolvable targets are
 * kept as hex. Exported for the fuzz tests.
 */
export function helperCalls(insns: Buffer, callBase: bigint, resolve: (va: bigint) => string | null): string[] {
  const out = new Set<string>();
  const n = Math.floor(insns.length / 8);
  for (let i = 0; i < n && out.size < MAX_HELPERS; i++) {
    const code = insns[i * 8] as number;
    if (code === 0x18) { i++; continue; } // BPF_LD | BPF_IMM | BPF_DW takes two slots
    if (code !== 0x85) continue; // BPF_JMP | BPF_CALL
    const src = (insns[i * 8 + 1] as number) >> 4;
    if (src !== 0 && src !== 2) continue;
    const target = (callBase + BigInt(insns.readInt32LE(i * 8 + 4))) & 0xffff_ffff_ffff_ffffn;
    out.add(resolve(target) ?? hex(target));
  }
  return [...out].sort();
}

/**
 * Programs attached to kprobes through perf events (kprobe PMU or a tracefs kprobe event): the
 * kprobe's handler is the kprobe event's dispatcher, and that event's trace_event_call keeps the
 * attached programs in its prog_array. Program address -> probed symbol. Best effort: a kernel
 * whose layouts differ contributes errors and no names.
 */
function kprobeAttachments(ctx: KernelContext, errors: ViewError[]): Map<bigint, string> {
  const out = new Map<bigint, string>();
  const p = ctx.profile;
  const table = p.optionalSymbol('kprobe_table');
  const dispatchers = new Set(['kprobe_dispatcher', 'pre_handler_kretprobe'].map((n) => p.optionalSymbol(n)).filter((a): a is bigint => a !== undefined));
  const aggr = p.optionalSymbol('aggr_pre_handler');
  if (table === undefined || dispatchers.size === 0) return out;
  let L: { hlist: number; list: number; addr: number; pre: number; symName: number; tkKp: number; tkEvent: number; call: number; progArray: number; items: number; itemSize: number };
  try {
    L = {
      hlist: p.offsetof('kprobe', 'hlist'),
      list: p.offsetof('kprobe', 'list'),
      addr: p.offsetof('kprobe', 'addr'),
      pre: p.offsetof('kprobe', 'pre_handler'),
      symName: p.offsetof('kprobe', 'symbol_name'),
      tkKp: p.offsetof('trace_kprobe', 'rp') + p.offsetof('kretprobe', 'kp'),
      tkEvent: p.offsetof('trace_kprobe', 'tp') + p.offsetof('trace_probe', 'event'),
      call: p.offsetof('trace_probe_event', 'call'),
      progArray: p.offsetof('trace_event_call', 'prog_array'),
      items: p.offsetof('bpf_prog_array', 'items'),
      itemSize: p.sizeof('bpf_prog_array_item'),
    };
  } catch (e) {
    errors.push(viewError('bpf: kprobe attachments: profile', e));
    return out;
  }
  const u64 = (va: bigint): bigint | null => {
    const b = ctx.space.tryRead(va, 8);
    return b ? b.readBigUInt64LE(0) : null;
  };
  const seen = new Set<bigint>();
  const visit = (kp: bigint, inAggregate: boolean): void => {
    const pre = u64(kp + BigInt(L.pre));
    if (pre === null) return;
    if (pre === aggr) {
      // An aggregate kprobe: the probes sharing the address hang off its list (one level: the
      // kernel never nests aggregates), all within the one kprobe budget.
      if (inAggregate || seen.size >= MAX_KPROBES) return;
      const w = ctx.space.walkList(kp + BigInt(L.list), L.list, MAX_KPROBES - seen.size, 0, 0);
      if (w.error) errors.push({ where: `bpf: kprobe ${hex(kp)} aggregate list`, message: w.error });
      for (const k of w.nodes) if (!seen.has(k) && seen.size < MAX_KPROBES) { seen.add(k); visit(k, true); }
      return;
    }
    if (!dispatchers.has(pre)) return;
    const event = u64(kp - BigInt(L.tkKp) + BigInt(L.tkEvent));
    if (event === null || !ctx.isKernelPointer(event)) return;
    const array = u64(event + BigInt(L.call + L.progArray));
    if (array === null || array === 0n || !ctx.isKernelPointer(array)) return;
    const addr = u64(kp + BigInt(L.addr));
    const symPtr = u64(kp + BigInt(L.symName));
    const hit = addr !== null ? p.symbols.lookup(addr) : null;
    const where = (symPtr !== null && symPtr !== 0n ? readCString(ctx, symPtr, 128) : null)
      ?? (hit ? (hit.offset === 0n ? hit.name : `${hit.name}+${hex(hit.offset)}`) : null);
    if (where === null) return;
    for (let i = 0; i < MAX_PROG_ARRAY; i++) {
      const prog = u64(array + BigInt(L.items + i * L.itemSize));
      if (prog === null || prog === 0n) break;
      // The kernel's placeholder for a detached slot (dummy_bpf_prog) is not a program of the IDR.
      if (!out.has(prog)) out.set(prog, `kprobe:${where}`);
    }
  };
  for (let b = 0; b < KPROBE_TABLE_SIZE; b++) {
    let first = u64(table + BigInt(8 * b));
    if (first === null) { errors.push({ where: `bpf: kprobe_table[${b}]`, message: 'not mapped' }); continue; }
    // hlist: node->next at +0 of the hlist_node.
    for (let n = 0; first !== null && first !== 0n; n++) {
      if (!ctx.isKernelPointer(first)) { errors.push({ where: `bpf: kprobe_table[${b}] node ${hex(first)}`, message: 'not a kernel pointer' }); break; }
      const kp = first - BigInt(L.hlist);
      if (seen.has(kp)) break;
      if (seen.size >= MAX_KPROBES) { errors.push({ where: 'bpf: kprobe_table', message: `more than ${MAX_KPROBES} kprobes` }); return out; }
      seen.add(kp);
      visit(kp, false);
      first = u64(first);
    }
  }
  return out;
}

/**
 * Programs attached to trace events (tracepoints, syscall events, tracefs kprobe events) through
 * perf events: every registered trace_event_call is on the ftrace_events list with its own
 * prog_array. Program address -> "tracepoint:system/name". Best effort, like kprobeAttachments.
 */
function traceEventAttachments(ctx: KernelContext, errors: ViewError[]): Map<bigint, string> {
  const out = new Map<bigint, string>();
  const p = ctx.profile;
  const head = p.optionalSymbol('ftrace_events');
  if (head === undefined) return out;
  let L: { list: number; cls: number; name: number; progArray: number; system: number; items: number; itemSize: number };
  try {
    L = {
      list: p.offsetof('trace_event_call', 'list'),
      cls: p.offsetof('trace_event_call', 'class'),
      name: p.offsetof('trace_event_call', 'name'),
      progArray: p.offsetof('trace_event_call', 'prog_array'),
      system: p.offsetof('trace_event_class', 'system'),
      items: p.offsetof('bpf_prog_array', 'items'),
      itemSize: p.sizeof('bpf_prog_array_item'),
    };
  } catch (e) {
    errors.push(viewError('bpf: trace event attachments: profile', e));
    return out;
  }
  const w = ctx.space.walkList(head, L.list, MAX_TRACE_EVENTS, L.progArray, 8);
  if (w.error) errors.push({ where: `bpf: ftrace_events at ${hex(head)}`, message: w.error });
  const u64 = (va: bigint): bigint | null => {
    const b = ctx.space.tryRead(va, 8);
    return b ? b.readBigUInt64LE(0) : null;
  };
  for (let i = 0; i < w.nodes.length; i++) {
    if (8 * (i + 1) > w.data.length) break;
    const array = w.data.readBigUInt64LE(8 * i);
    if (array === 0n || !ctx.isKernelPointer(array)) continue;
    const call = w.nodes[i] as bigint;
    // The name union holds a string, or (TRACE_EVENT_FL_TRACEPOINT) a struct tracepoint whose first field is the name.
    const np = u64(call + BigInt(L.name));
    let name = np !== null ? readCString(ctx, np, 128) : null;
    if (name === null && np !== null && ctx.isKernelPointer(np)) { const tpName = u64(np); if (tpName !== null) name = readCString(ctx, tpName, 128); }
    const cls = u64(call + BigInt(L.cls));
    const sysPtr = cls !== null && ctx.isKernelPointer(cls) ? u64(cls + BigInt(L.system)) : null;
    const system = sysPtr !== null ? readCString(ctx, sysPtr, 64) : null;
    if (name === null) continue;
    for (let k = 0; k < MAX_PROG_ARRAY; k++) {
      const prog = u64(array + BigInt(L.items + k * L.itemSize));
      if (prog === null || prog === 0n) break;
      if (!out.has(prog)) out.set(prog, `tracepoint:${system ?? '?'}/${name}`);
    }
  }
  return out;
}

export function readBpf(ctx: KernelContext): BpfView {
  const errors: ViewError[] = [];
  let L: BpfLayout;
  let idr: bigint;
  // A kernel built without the bpf() system call has no programs to read.
  if (ctx.profile.optionalSymbol('prog_idr') === undefined && ctx.profile.optionalSymbol('__sys_bpf') === undefined) return { programs: [], errors: [] };
  try {
    idr = ctx.profile.symbol('prog_idr');
    L = layoutOf(ctx);
  } catch (e) {
    return { programs: [], errors: [viewError('bpf: profile', e)] };
  }
  let head: bigint;
  let base: number;
  try {
    head = ctx.space.readU64(idr + BigInt(L.idrRt + L.xaHead));
    base = ctx.space.readU32(idr + BigInt(L.idrBase));
  } catch (e) {
    return { programs: [], errors: [viewError(`bpf: prog_idr at ${hex(idr)}`, e)] };
  }
  const xa = ctx.space.walkXArray(head, L.nodeShift, L.nodeSlots,
    { maxDepth: MAX_DEPTH, maxNodes: Math.min(ctx.limits.maxTreeNodes, 4 * MAX_BPF_PROGRAMS), maxEntries: MAX_BPF_PROGRAMS }, ctx.kernelHalf, 'bpf: prog_idr');
  for (let i = 0; i + 1 < xa.errors.length; i += 2) errors.push({ where: xa.errors[i] as string, message: xa.errors[i + 1] as string });
  if (xa.entries.length >= MAX_BPF_PROGRAMS) errors.push({ where: 'bpf: prog_idr', message: `more than ${MAX_BPF_PROGRAMS} programs` });

  const callBase = ctx.profile.optionalSymbol('__bpf_call_base');
  if (callBase === undefined) errors.push({ where: 'bpf: helpers', message: 'kernel symbol __bpf_call_base not found: helper calls not resolved' });
  const symbols = ctx.profile.symbols;
  const resolve = (va: bigint): string | null => {
    const hit = symbols.lookup(va);
    return hit && hit.offset === 0n ? hit.name : null;
  };
  const typeName = (v: number): string => L.progTypes?.get(v) ?? PROG_TYPES[v] ?? `bpf_prog_type ${v}`;
  const attachName = (v: number): string => L.attachTypes?.get(v) ?? ATTACH_TYPES[v] ?? `bpf_attach_type ${v}`;
  const headerLen = Math.max(L.type + 4, L.attachType + 4, L.len + 4, L.jitedLen + 4, L.tag + 8, L.bpfFunc + 8, L.aux + 8, 4);
  const auxLen = Math.max(L.auxId + 4, L.auxName + BPF_OBJ_NAME_LEN, L.auxProg + 8, (L.auxAttachFunc ?? 0) + 8);
  let budget = INSN_BUDGET;
  let kprobes: Map<bigint, string> | null = null;
  let events: Map<bigint, string> | null = null;
  const programs: BpfProgramInfo[] = [];
  for (let i = 0; i < xa.entries.length; i++) {
    const prog = xa.entries[i] as bigint;
    const index = (xa.indices[i] as number) + base;
    const where = `bpf: prog_idr[${index}] ${hex(prog)}`;
    if (!ctx.isKernelPointer(prog)) { errors.push({ where, message: 'not a kernel pointer' }); continue; }
    const h = ctx.space.tryRead(prog, headerLen);
    if (!h) { errors.push({ where, message: 'struct bpf_prog not mapped' }); continue; }
    const aux = h.readBigUInt64LE(L.aux);
    const a = ctx.isKernelPointer(aux) ? ctx.space.tryRead(aux, auxLen) : null;
    if (!a) { errors.push({ where, message: `aux ${hex(aux)} not readable` }); continue; }
    if (a.readBigUInt64LE(L.auxProg) !== prog) { errors.push({ where, message: `aux ${hex(aux)} does not point back to the program` }); continue; }
    const id = a.readUInt32LE(L.auxId);
    if (id !== index) errors.push({ where, message: `aux->id ${id} differs from its IDR index ${index}` });
    const nameBytes = a.subarray(L.auxName, L.auxName + BPF_OBJ_NAME_LEN);
    const nul = nameBytes.indexOf(0);
    const name = nameBytes.toString('latin1', 0, nul < 0 ? BPF_OBJ_NAME_LEN : nul).replace(/[^\x20-\x7e]/g, '?');
    const typeVal = h.readUInt32LE(L.type);
    const type = typeName(typeVal);
    const attachVal = h.readUInt32LE(L.attachType);
    const attachType = attachVal !== 0 || ATTACH_ZERO_MEANS.has(type) ? attachName(attachVal) : null;
    const bitSet = (bitOff: number | null): boolean => {
      if (bitOff === null) return false;
      const byte = bitOff >> 3;
      return byte < h.length && (((h[byte] as number) >> (bitOff & 7)) & 1) === 1;
    };
    const len = h.readUInt32LE(L.len);
    // Helpers: the verified instructions, bounded per program and per scan.
    let helpers: string[] = [];
    if (callBase !== undefined && len > 0) {
      const n = Math.min(len, MAX_BPF_INSNS, budget);
      if (n < len) errors.push({ where, message: `${len} instructions: only the first ${n} scanned for helper calls` });
      budget -= n;
      const insns = n > 0 ? ctx.space.tryRead(prog + BigInt(L.insnsi), n * 8) : null;
      if (n > 0 && !insns) errors.push({ where, message: `${n} instructions not readable` });
      else if (insns) helpers = helperCalls(insns, callBase, resolve);
    }
    let attachTo: string | null = null;
    if (L.auxAttachFunc !== null) {
      const ptr = a.readBigUInt64LE(L.auxAttachFunc);
      if (ptr !== 0n) attachTo = readCString(ctx, ptr, 128);
    }
    if (attachTo === null && type === 'BPF_PROG_TYPE_KPROBE') {
      kprobes ??= kprobeAttachments(ctx, errors);
      attachTo = kprobes.get(prog) ?? null;
    }
    if (attachTo === null && (type === 'BPF_PROG_TYPE_TRACEPOINT' || type === 'BPF_PROG_TYPE_KPROBE' || type === 'BPF_PROG_TYPE_PERF_EVENT')) {
      events ??= traceEventAttachments(ctx, errors);
      attachTo = events.get(prog) ?? null;
    }
    const bpfFunc = h.readBigUInt64LE(L.bpfFunc);
    const jitedLen = h.readUInt32LE(L.jitedLen);
    const jited = (L.jitedBit === null ? jitedLen > 0 : bitSet(L.jitedBit)) && ctx.isKernelPointer(bpfFunc, 1n)
      ? { start: bpfFunc, size: jitedLen } : null;
    programs.push({
      id, address: prog, type, attachType, name, attachTo, helpers,
      kprobeOverride: bitSet(L.overrideBit) || helpers.includes('bpf_override_return'),
      jited,
      tag: h.toString('hex', L.tag, L.tag + 8),
    });
  }
  return { programs, errors };
}
