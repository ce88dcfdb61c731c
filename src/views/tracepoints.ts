// Tracepoints, from outside: every struct tracepoint the kernel and its modules
// define (the kernel's __tracepoints_ptrs section, each module's
// tracepoints_ptrs), and for each one with probes its funcs array (struct
// tracepoint_func: func, data, prio; NULL-terminated) with the code that owns
// each probe. The kernel's own users are told apart by what their data points
// at: a tracefs trace event's probe is its class's `probe` with the event's
// trace_event_file as data, perf's is the class's `perf_probe` with the
// trace_event_call, a BPF raw tracepoint's is the kernel's __bpf_trace_<name>
// with the bpf_prog (or, 6.10+, its bpf_raw_tp_link). The static call every
// call site goes through (5.10+) must reach the iterator or the one probe.
import type { HandlerOwner, ModuleInfo, TracepointInfo, TracepointProbe, TracepointView, ViewError } from './types.js';
import { hex, perProfile, viewError, type KernelContext } from './kernel-context.js';
import { ownerOf } from './syscall-tables.js';
import { readCString } from './bpf.js';

/** Most tracepoints walked (the kernel defines ~2,000; each module adds its own). */
export const MAX_TRACEPOINTS = 32768;
/** Most probes read from one tracepoint's funcs array. */
export const MAX_PROBES_PER_TRACEPOINT = 64;
/** Most probes kept over all tracepoints. */
export const MAX_PROBES = 8192;
/** Most modules whose tracepoints are walked, and entries of the tracepoint module list. */
const MAX_TP_MODULES = 4096;
/** Most trace events on ftrace_events (checked only for probes outside kernel text). */
const MAX_TRACE_EVENTS = 1 << 16;

interface Layout {
  size: number;
  name: number;
  keyEnabled: number;
  staticCallKey: number;
  iterator: number;
  funcs: number;
  callFunc: number | null;
  tpfSize: number;
  tpfFunc: number;
  tpfData: number;
  tpfPrio: number;
  modPtrs: number | null;
  modNum: number | null;
  tpModList: number | null;
  tpModMod: number | null;
  event: EventLayout | null;
  bpf: BpfLayout | null;
}

interface EventLayout {
  fileCall: number;
  callClass: number;
  callTp: number;
  callList: number;
  classProbe: number;
  classPerfProbe: number | null;
}

interface BpfLayout {
  progAux: number;
  auxProg: number;
  auxId: number;
  auxName: number;
  linkProg: number | null;
}

function layout(ctx: KernelContext): Layout {
  const p = ctx.profile;
  const has = (s: string, m: string): boolean => p.layouts.has(s, m);
  const opt = (s: string, m: string): number | null => (has(s, m) ? p.offsetof(s, m) : null);
  let event: EventLayout | null = null;
  // Trace events (CONFIG_EVENT_TRACING) and perf's class probe (CONFIG_PERF_EVENTS) may be built out.
  if (has('trace_event_file', 'event_call') && has('trace_event_class', 'probe') && has('trace_event_call', 'tp')) {
    event = {
      fileCall: p.offsetof('trace_event_file', 'event_call'),
      callClass: p.offsetof('trace_event_call', 'class'),
      callTp: p.offsetof('trace_event_call', 'tp'),
      callList: p.offsetof('trace_event_call', 'list'),
      classProbe: p.offsetof('trace_event_class', 'probe'),
      classPerfProbe: opt('trace_event_class', 'perf_probe'),
    };
  }
  let bpf: BpfLayout | null = null;
  if (has('bpf_prog', 'aux') && has('bpf_prog_aux', 'prog') && has('bpf_prog_aux', 'id')) {
    bpf = {
      progAux: p.offsetof('bpf_prog', 'aux'),
      auxProg: p.offsetof('bpf_prog_aux', 'prog'),
      auxId: p.offsetof('bpf_prog_aux', 'id'),
      auxName: p.offsetof('bpf_prog_aux', 'name'),
      // 6.10+: the probe's data is the bpf_raw_tp_link around the program (it carries the cookie).
      linkProg: has('bpf_raw_tp_link', 'link.prog') ? p.offsetof('bpf_raw_tp_link', 'link.prog') : null,
    };
  }
  return {
    size: p.sizeof('tracepoint'),
    name: p.offsetof('tracepoint', 'name'),
    keyEnabled: p.offsetof('tracepoint', 'key.enabled'),
    staticCallKey: p.offsetof('tracepoint', 'static_call_key'),
    iterator: p.offsetof('tracepoint', 'iterator'),
    funcs: p.offsetof('tracepoint', 'funcs'),
    callFunc: opt('static_call_key', 'func'),
    tpfSize: p.sizeof('tracepoint_func'),
    tpfFunc: p.offsetof('tracepoint_func', 'func'),
    tpfData: p.offsetof('tracepoint_func', 'data'),
    tpfPrio: p.offsetof('tracepoint_func', 'prio'),
    modPtrs: opt('module', 'tracepoints_ptrs'),
    modNum: opt('module', 'num_tracepoints'),
    tpModList: opt('tp_module', 'list'),
    tpModMod: opt('tp_module', 'mod'),
    event,
    bpf,
  };
}
const layoutOf = perProfile(layout);

/**
 * The tracepoints one tracepoint_ptr_t array names. x86-64 has had PREL32 relocations since 4.19
 * (CONFIG_HAVE_ARCH_PREL32_RELOCATIONS is always set there): each entry is a 32-bit offset from
 * the entry itself.
 */
function tracepointsAt(ctx: KernelContext, start: bigint, count: number, where: string, errors: ViewError[]): bigint[] {
  if (count === 0) return [];
  const b = ctx.space.tryRead(start, count * 4);
  if (!b) { errors.push({ where: `${where} at ${hex(start)}`, message: `${count} entries not mapped` }); return []; }
  const out: bigint[] = [];
  for (let i = 0; i < count; i++) {
    const tp = BigInt.asUintN(64, start + BigInt(i * 4) + BigInt(b.readInt32LE(i * 4)));
    if (!ctx.isKernelPointer(tp)) { errors.push({ where: `${where}[${i}]`, message: `${hex(tp)} is not a kernel pointer` }); continue; }
    out.push(tp);
  }
  return out;
}

/** Modules to walk: the module list and kobjects, and the tracepoint subsystem's own list (a module off the others stays there). */
function tracepointModules(ctx: KernelContext, L: Layout, modules: readonly ModuleInfo[], errors: ViewError[]): { name: string; address: bigint }[] {
  const out = new Map<bigint, string>();
  for (const m of modules) if (!out.has(m.address) && out.size < MAX_TP_MODULES) out.set(m.address, m.name);
  const head = ctx.profile.optionalSymbol('tracepoint_module_list');
  if (head !== undefined && L.tpModList !== null && L.tpModMod !== null) {
    const w = ctx.space.walkList(head, L.tpModList, MAX_TP_MODULES, L.tpModMod, 8);
    if (w.error) errors.push({ where: `tracepoints: tracepoint_module_list at ${hex(head)}`, message: w.error });
    for (let i = 0; i < w.nodes.length && 8 * (i + 1) <= w.data.length; i++) {
      const mod = w.data.readBigUInt64LE(8 * i);
      if (!ctx.isKernelPointer(mod)) { errors.push({ where: `tracepoints: tp_module ${hex(w.nodes[i] as bigint)}`, message: `mod ${hex(mod)} is not a kernel pointer` }); continue; }
      if (!out.has(mod) && out.size < MAX_TP_MODULES) {
        const n = ctx.space.tryRead(mod + BigInt(ctx.profile.offsetof('module', 'name')), 56);
        const nul = n ? n.indexOf(0) : -1;
        const name = n && nul > 0 ? n.toString('latin1', 0, nul) : null;
        out.set(mod, name !== null && /^[\x21-\x7e]+$/.test(name) ? name : hex(mod));
      }
    }
  }
  return [...out].map(([address, name]) => ({ address, name }));
}

export function readTracepoints(ctx: KernelContext, modules: readonly ModuleInfo[]): TracepointView {
  const errors: ViewError[] = [];
  let L: Layout;
  try {
    L = layoutOf(ctx);
  } catch (e) {
    return { count: 0, tracepoints: [], errors: [viewError('tracepoints: profile', e)] };
  }
  const Lt = L;
  const p = ctx.profile;
  // Where each tracepoint comes from: the kernel's section, then every module's array.
  const all: { tp: bigint; module: string | null }[] = [];
  const seen = new Set<bigint>();
  const take = (tps: readonly bigint[], module: string | null): void => {
    for (const tp of tps) {
      if (seen.has(tp)) continue;
      if (all.length >= MAX_TRACEPOINTS) { errors.push({ where: 'tracepoints', message: `more than ${MAX_TRACEPOINTS} tracepoints` }); return; }
      seen.add(tp);
      all.push({ tp, module });
    }
  };
  try {
    const start = p.symbol('__start___tracepoints_ptrs');
    const stop = p.symbol('__stop___tracepoints_ptrs');
    if (stop < start || stop - start > BigInt(MAX_TRACEPOINTS * 4)) throw new Error(`__tracepoints_ptrs spans ${hex(start)}..${hex(stop)}`);
    take(tracepointsAt(ctx, start, Number(stop - start) / 4 | 0, 'tracepoints: __tracepoints_ptrs', errors), null);
  } catch (e) {
    errors.push(viewError('tracepoints: __tracepoints_ptrs', e));
  }
  if (Lt.modPtrs !== null && Lt.modNum !== null) {
    for (const m of tracepointModules(ctx, Lt, modules, errors)) {
      const where = `tracepoints: module ${m.name}`;
      const b = ctx.space.tryRead(m.address + BigInt(Math.min(Lt.modPtrs, Lt.modNum)), Math.abs(Lt.modPtrs - Lt.modNum) + 8);
      if (!b) { errors.push({ where, message: 'tracepoints_ptrs not mapped' }); continue; }
      const base = Math.min(Lt.modPtrs, Lt.modNum);
      const ptrs = b.readBigUInt64LE(Lt.modPtrs - base);
      const num = b.readUInt32LE(Lt.modNum - base);
      if (num === 0) continue;
      if (!ctx.isKernelPointer(ptrs, 4n) || num > MAX_TRACEPOINTS) { errors.push({ where, message: `tracepoints_ptrs ${hex(ptrs)}, num_tracepoints ${num}` }); continue; }
      // What is read is bounded by the walk's total, not by each module's claim.
      const room = MAX_TRACEPOINTS - all.length;
      if (num > room) errors.push({ where: 'tracepoints', message: `more than ${MAX_TRACEPOINTS} tracepoints` });
      if (room <= 0) break;
      take(tracepointsAt(ctx, ptrs, Math.min(num, room), `${where}: tracepoints_ptrs`, errors), m.name);
    }
  }

  // Every tracepoint's header in one gather; funcs arrays and names only where there are probes.
  const addrs = BigUint64Array.from(all.map((x) => x.tp));
  const g = addrs.length > 0 ? ctx.space.readGather(addrs, 0, Lt.size) : { data: Buffer.alloc(0), ok: new Uint8Array(0) };
  const tracepoints: TracepointInfo[] = [];
  let probes = 0;
  let full = false;
  const events = new EventCheck(ctx, Lt, errors);
  for (let i = 0; i < all.length; i++) {
    const { tp, module } = all[i] as { tp: bigint; module: string | null };
    if (g.ok[i] !== 1) { errors.push({ where: `tracepoints: tracepoint ${hex(tp)}${module ? ` (${module})` : ''}`, message: 'not mapped' }); continue; }
    const b = g.data.subarray(i * Lt.size, (i + 1) * Lt.size);
    const enabled = b.readInt32LE(Lt.keyEnabled);
    const funcs = b.readBigUInt64LE(Lt.funcs);
    if (funcs === 0n && enabled === 0) continue;
    const namePtr = b.readBigUInt64LE(Lt.name);
    const name = readCString(ctx, namePtr, 128);
    const where = `tracepoints: ${name ?? hex(tp)}`;
    const list: TracepointProbe[] = [];
    if (funcs !== 0n) {
      if (!ctx.isKernelPointer(funcs)) errors.push({ where, message: `funcs ${hex(funcs)} is not a kernel pointer` });
      else if (probes >= MAX_PROBES) {
        if (!full) errors.push({ where: 'tracepoints', message: `more than ${MAX_PROBES} probes: the rest not read` });
        full = true;
      } else {
        const bound = Math.min(MAX_PROBES_PER_TRACEPOINT, MAX_PROBES - probes);
        const arr = ctx.space.tryRead(funcs, (bound + 1) * Lt.tpfSize) ?? readEach(ctx, funcs, bound + 1, Lt.tpfSize);
        let ended = false;
        for (let k = 0; k * Lt.tpfSize + Lt.tpfSize <= arr.length && k <= bound; k++) {
          const f = arr.readBigUInt64LE(k * Lt.tpfSize + Lt.tpfFunc);
          if (f === 0n) { ended = true; break; }
          if (k === bound) break;
          const data = arr.readBigUInt64LE(k * Lt.tpfSize + Lt.tpfData);
          const owner = ownerOf(ctx, f, modules);
          list.push({ func: f, data, prio: arr.readInt32LE(k * Lt.tpfSize + Lt.tpfPrio), owner, via: events.via(tp, f, data, owner) });
        }
        if (!ended) errors.push({ where, message: arr.length === 0 ? `funcs ${hex(funcs)} not mapped` : `funcs ${hex(funcs)}: no NULL entry within ${list.length} probes` });
        probes += list.length;
      }
    }
    const key = b.readBigUInt64LE(Lt.staticCallKey);
    let call: bigint | null = null;
    if (key !== 0n && Lt.callFunc !== null) {
      const c = ctx.isKernelPointer(key) ? ctx.space.tryRead(key + BigInt(Lt.callFunc), 8) : null;
      if (!c) errors.push({ where, message: `static_call_key ${hex(key)} not readable` });
      else call = c.readBigUInt64LE(0);
    }
    const iterator = b.readBigUInt64LE(Lt.iterator);
    tracepoints.push({
      address: tp, name, module, enabled: enabled !== 0, iterator, probes: list,
      ...(call !== null ? { call, callOwner: ownerOf(ctx, call, modules) } : {}),
    });
  }
  return { count: all.length, tracepoints, errors };
}

/** Entry by entry up to the first unreadable one (an array that crosses into an unmapped page). */
function readEach(ctx: KernelContext, va: bigint, n: number, size: number): Buffer {
  const parts: Buffer[] = [];
  for (let k = 0; k < n; k++) {
    const b = ctx.space.tryRead(va + BigInt(k * size), size);
    if (!b) break;
    parts.push(b);
    if (b.readBigUInt64LE(0) === 0n) break;
  }
  return Buffer.concat(parts);
}

/** Which of the kernel's own tracepoint users a probe is, proven by what its data points at. */
class EventCheck {
  private registered: Set<bigint> | null = null;
  constructor(private readonly ctx: KernelContext, private readonly L: Layout, private readonly errors: ViewError[]) {}

  private u64(va: bigint): bigint | null {
    if (!this.ctx.isKernelPointer(va)) return null;
    const b = this.ctx.space.tryRead(va, 8);
    return b ? b.readBigUInt64LE(0) : null;
  }

  /** trace_event_calls on ftrace_events (read once per scan, only when a probe outside kernel text claims one). */
  private onList(call: bigint): boolean {
    const E = this.L.event;
    const head = this.ctx.profile.optionalSymbol('ftrace_events');
    if (!E || head === undefined) return false;
    if (!this.registered) {
      const w = this.ctx.space.walkList(head, E.callList, MAX_TRACE_EVENTS, 0, 0);
      if (w.error) this.errors.push({ where: `tracepoints: ftrace_events at ${hex(head)}`, message: w.error });
      this.registered = new Set(w.nodes);
    }
    return this.registered.has(call);
  }

  /** The call's class probe (perf or tracefs) is `func` and the call is this tracepoint's. */
  private eventCall(tp: bigint, call: bigint, func: bigint, perf: boolean): boolean {
    const E = this.L.event;
    if (!E || !this.ctx.isKernelPointer(call)) return false;
    if (this.u64(call + BigInt(E.callTp)) !== tp) return false;
    const cls = this.u64(call + BigInt(E.callClass));
    if (cls === null || !this.ctx.isKernelPointer(cls)) return false;
    const off = perf ? E.classPerfProbe : E.classProbe;
    return off !== null && this.u64(cls + BigInt(off)) === func;
  }

  via(tp: bigint, func: bigint, data: bigint, owner: HandlerOwner): TracepointProbe['via'] {
    const E = this.L.event;
    if (E && data !== 0n) {
      // Outside kernel text, the event must also be one the kernel registered (not a copy made to look like one).
      const listed = (call: bigint): boolean => owner.kind === 'kernel' || this.onList(call);
      const call = this.u64(data + BigInt(E.fileCall));
      if (call !== null && this.eventCall(tp, call, func, false) && listed(call)) return { kind: 'trace-event' };
      if (this.eventCall(tp, data, func, true) && listed(data)) return { kind: 'perf' };
    }
    if (owner.kind === 'kernel' && owner.symbol.startsWith('__bpf_trace_')) {
      const prog = this.bpfProgram(data);
      return prog ? { kind: 'bpf', ...prog } : { kind: 'bpf', id: null, name: null };
    }
    return null;
  }

  /** The BPF program behind a raw tracepoint probe's data: the prog itself, or a raw_tp link's; its aux must point back. */
  private bpfProgram(data: bigint): { id: number; name: string } | null {
    const B = this.L.bpf;
    if (!B || !this.ctx.isKernelPointer(data)) return null;
    const asProg = (prog: bigint | null): { id: number; name: string } | null => {
      if (prog === null || !this.ctx.isKernelPointer(prog)) return null;
      const aux = this.u64(prog + BigInt(B.progAux));
      if (aux === null || !this.ctx.isKernelPointer(aux) || this.u64(aux + BigInt(B.auxProg)) !== prog) return null;
      const a = this.ctx.space.tryRead(aux + BigInt(B.auxId), 4);
      const id = a ? a.readUInt32LE(0) : 0;
      if (id === 0 || id > 0x7fffffff) return null;
      const n = this.ctx.space.tryRead(aux + BigInt(B.auxName), 16);
      const nul = n ? n.indexOf(0) : -1;
      const name = n ? n.toString('latin1', 0, nul < 0 ? 16 : nul).replace(/[^\x20-\x7e]/g, '?') : '';
      return { id, name };
    };
    return asProg(data) ?? (B.linkProg !== null ? asProg(this.u64(data + BigInt(B.linkProg))) : null);
  }
}
