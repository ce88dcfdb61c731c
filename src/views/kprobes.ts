// kprobes, from outside: every probe in kprobe_table (KPROBE_TABLE_SIZE
// hlists), the address it probes and every handler that runs for it, each with
// the code that owns it. Several probes on one address hang under an aggregate
// probe (pre_handler aggr_pre_handler, the probes on its `list`); a kretprobe's
// pre_handler is the kernel's pre_handler_kretprobe and its own handlers live
// in the struct kretprobe around the kprobe.
import type { HandlerOwner, KprobeHandler, KprobeInfo, KprobeView, ModuleInfo, ViewError } from './types.js';
import { hex, perProfile, viewError, type KernelContext } from './kernel-context.js';
import { ownerOf } from './syscall-tables.js';
import { siteName } from './ftrace.js';

/** KPROBE_HASH_BITS has been 6 since kprobes began. */
const KPROBE_TABLE_SIZE = 64;
/** Most probes walked over the whole table (aggregated children included). */
export const MAX_KPROBES = 8192;
const MAX_SYMBOL_NAME = 128;

interface Layout {
  size: number;
  hlist: number;
  list: number;
  addr: number;
  symbolName: number;
  preHandler: number;
  postHandler: number;
  flags: number;
  retKp: number;
  retHandler: number;
  retEntry: number;
}

function layout(ctx: KernelContext): Layout {
  const p = ctx.profile;
  const o = (m: string): number => p.offsetof('kprobe', m);
  return {
    size: p.sizeof('kprobe'),
    hlist: o('hlist'),
    list: o('list'),
    addr: o('addr'),
    symbolName: o('symbol_name'),
    preHandler: o('pre_handler'),
    postHandler: o('post_handler'),
    flags: o('flags'),
    retKp: p.offsetof('kretprobe', 'kp'),
    retHandler: p.offsetof('kretprobe', 'handler'),
    retEntry: p.offsetof('kretprobe', 'entry_handler'),
  };
}
const layoutOf = perProfile(layout);

/** The owner that says the most: unknown code over a module over the kernel. */
function worstOwner(hs: readonly KprobeHandler[]): HandlerOwner {
  return hs.find((h) => h.owner.kind === 'unknown')?.owner ?? hs.find((h) => h.owner.kind === 'module')?.owner ??
    hs[0]?.owner ?? { kind: 'kernel', symbol: '(no handler)' };
}

function cString(ctx: KernelContext, va: bigint): string | null {
  if (va === 0n || !ctx.isKernelPointer(va, 1n)) return null;
  const b = ctx.space.tryRead(va, MAX_SYMBOL_NAME) ?? ctx.space.tryRead(va, 1 + Number(0xfffn - (va & 0xfffn)));
  if (!b) return null;
  const nul = b.indexOf(0);
  const s = b.toString('latin1', 0, nul < 0 ? b.length : nul);
  return /^[\x21-\x7e]{1,127}$/.test(s) ? s : null;
}

export function readKprobes(ctx: KernelContext, modules: readonly ModuleInfo[]): KprobeView {
  const errors: ViewError[] = [];
  let L: Layout;
  try {
    L = layoutOf(ctx);
  } catch (e) {
    return { probes: [], errors: [viewError('kprobes: profile', e)] };
  }
  const Lk = L;
  const probes: KprobeInfo[] = [];
  try {
    const table = ctx.profile.symbol('kprobe_table');
    const extent = ctx.profile.symbols.extent('kprobe_table');
    const slots = Math.min(KPROBE_TABLE_SIZE, extent !== undefined && extent >= 8 ? Math.floor(extent / 8) : KPROBE_TABLE_SIZE);
    const heads = ctx.space.read(table, slots * 8);
    const aggr = ctx.profile.optionalSymbol('aggr_pre_handler');
    const kret = ctx.profile.optionalSymbol('pre_handler_kretprobe');
    const seen = new Set<bigint>();

    const handlersOf = (kp: bigint, b: Buffer): KprobeHandler[] => {
      const hs: KprobeHandler[] = [];
      const add = (role: KprobeHandler['role'], address: bigint): void => { if (address !== 0n) hs.push({ role, address, owner: ownerOf(ctx, address, modules) }); };
      const pre = b.readBigUInt64LE(Lk.preHandler);
      add('pre', pre);
      add('post', b.readBigUInt64LE(Lk.postHandler));
      if (kret !== undefined && pre === kret) {
        // The kretprobe around this kprobe holds the handlers that matter.
        const rp = kp - BigInt(Lk.retKp);
        const r = ctx.space.tryRead(rp, Math.max(Lk.retHandler, Lk.retEntry) + 8);
        if (!r) errors.push({ where: `kprobes: kretprobe ${hex(rp)}`, message: 'not mapped' });
        else { add('return', r.readBigUInt64LE(Lk.retHandler)); add('entry', r.readBigUInt64LE(Lk.retEntry)); }
      }
      return hs;
    };
    const info = (kp: bigint, b: Buffer, probedAt: bigint, aggregate: bigint | null): KprobeInfo => {
      const hs = handlersOf(kp, b);
      return {
        address: kp,
        addr: probedAt,
        symbol: probedAt === 0n ? null : siteName(ctx, probedAt, modules),
        preHandler: b.readBigUInt64LE(Lk.preHandler),
        postHandler: b.readBigUInt64LE(Lk.postHandler),
        handlerOwner: worstOwner(hs),
        flags: b.readUInt32LE(Lk.flags),
        symbolName: cString(ctx, b.readBigUInt64LE(Lk.symbolName)),
        handlers: hs,
        ...(aggregate !== null ? { aggregate } : {}),
      };
    };

    outer: for (let i = 0; i < slots; i++) {
      let node = heads.readBigUInt64LE(i * 8);
      while (node !== 0n) {
        const where = `kprobes: kprobe_table[${i}]`;
        if (!ctx.isKernelPointer(node)) { errors.push({ where, message: `node ${hex(node)} is not a kernel pointer` }); break; }
        if (seen.has(node)) { errors.push({ where, message: 'cycle in the hash chain' }); break; }
        if (seen.size >= MAX_KPROBES) { errors.push({ where: 'kprobes: kprobe_table', message: `more than ${MAX_KPROBES} probes` }); break outer; }
        seen.add(node);
        const kp = node - BigInt(Lk.hlist);
        const b = ctx.space.tryRead(kp, Lk.size);
        if (!b) { errors.push({ where: `${where}: kprobe ${hex(kp)}`, message: 'not mapped' }); break; }
        const addr = b.readBigUInt64LE(Lk.addr);
        if (aggr !== undefined && b.readBigUInt64LE(Lk.preHandler) === aggr) {
          // An aggregate: the real probes are on its list, linked through their own `list`.
          const w = ctx.space.walkList(kp + BigInt(Lk.list), Lk.list, MAX_KPROBES, 0, 0);
          if (w.error) errors.push({ where: `${where}: aggregate kprobe ${hex(kp)}`, message: w.error });
          for (const child of w.nodes) {
            if (seen.has(child + BigInt(Lk.hlist)) || seen.size >= MAX_KPROBES) { errors.push({ where: `${where}: aggregate kprobe ${hex(kp)}`, message: `child ${hex(child)} seen before or too many probes` }); break; }
            seen.add(child + BigInt(Lk.hlist));
            const c = ctx.space.tryRead(child, Lk.size);
            if (!c) { errors.push({ where: `${where}: kprobe ${hex(child)}`, message: 'not mapped' }); continue; }
            // A child's own addr is set at registration; the aggregate's is where the breakpoint sits.
            probes.push(info(child, c, addr, kp));
          }
        } else {
          probes.push(info(kp, b, addr, null));
        }
        node = b.readBigUInt64LE(Lk.hlist); // hlist_node.next
      }
    }
  } catch (e) {
    errors.push(viewError('kprobes: kprobe_table', e));
  }
  return { probes, errors };
}
