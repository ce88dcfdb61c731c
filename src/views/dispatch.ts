// The syscall dispatch switches (x64_sys_call, ia32_sys_call, x32_sys_call: 6.9+ and the
// stable backports, e.g. Debian's 6.1.85+; not Debian's 5.10). These kernels no longer call through
// sys_call_table: each is `switch (nr) { case N: return handler_N(regs); ... }`, compiled
// (no jump tables under retpolines) into a tree of compares and branches ending in a direct
// call or jump to each handler. We decode it with iced-x86 and follow every path with the
// interval of `nr` values that reach it, so every call/jmp rel32 is attributed to the slots it
// serves: slot N must reach N's handler. A rewritten rel32 shows as the slot, its new target and
// that target's owner.
import type { ConditionCode, OpKind, Register } from 'iced-x86';
import { icedX86 } from '../util/deferred-modules.js';
import type { DispatchSlot, DispatchView, ModuleInfo, SyscallTableView, ViewError } from './types.js';
import { hex, viewError, type KernelContext } from './kernel-context.js';
import { abiNumbering, ownerOf } from './syscall-tables.js';

const SWITCHES = [
  { name: 'x64_sys_call', table: 'sys_call_table', abi: null },
  { name: 'ia32_sys_call', table: 'ia32_sys_call_table', abi: 'ia32' },
  { name: 'x32_sys_call', table: 'x32_sys_call_table', abi: 'x32' },
] as const;
const MAX_FUNCTION = 64 << 10;
const MAX_STEPS = 200_000;
const NR_LIMIT = 0x1_0000_0000; // nr is an unsigned int

/** Which 32-bit register holds nr + offset along one path (nr arrives in esi: the second argument). */
interface PathState { ip: bigint; lo: number; hi: number; reg: Register; offset: number; cmp: Flags }
/** The flags of the last compare of nr's register against an immediate (branches keep them). */
type Flags = { imm: number; offset: number } | null;

/** Decoded once per kernel text: a clean switch decodes the same every scan unless its bytes change. */
const cache = new WeakMap<object, Map<string, { bytes: Buffer; result: SwitchMap; slots?: { count: number; targets: (bigint | null)[] } }>>();

/**
 * The last scan's switches per context (one boot), each with what it was built from: a switch whose
 * body decoded to the same map, checked against the same table view, with every slot in kernel text,
 * is that scan's view again (the same object, so a detector may reuse its answer for it).
 */
const lastViews = new WeakMap<KernelContext, { readonly parts: ReadonlyMap<string, { readonly map: object; readonly table: SyscallTableView | undefined; readonly view: DispatchView }>; readonly out: readonly DispatchView[] }>();

export interface SwitchMap {
  /** [lo, hi] ranges of nr and the address each reaches. */
  readonly ranges: { lo: number; hi: number; target: bigint }[];
  readonly errors: string[];
}

/**
 * The iced-x86 enum values the decode tests, read once: its enums are frozen objects of thousands
 * of keys, and reading them per instruction (then per branch) cost more than the decoding itself.
 */
function readCodes() {
  const { Mnemonic: M, FlowControl: F, OpKind: K, Register: R, ConditionCode: C } = icedX86();
  return {
    M: { Add: M.Add, Bt: M.Bt, Cdqe: M.Cdqe, Cmp: M.Cmp, Endbr64: M.Endbr64, INVALID: M.INVALID, Int3: M.Int3, Lea: M.Lea, Mov: M.Mov, Nop: M.Nop, Pop: M.Pop, Push: M.Push, Sub: M.Sub, Test: M.Test, Ud2: M.Ud2 },
    F: { Call: F.Call, ConditionalBranch: F.ConditionalBranch, Return: F.Return, UnconditionalBranch: F.UnconditionalBranch },
    K: { NearBranch64: K.NearBranch64, Register: K.Register },
    immediates: new Set<OpKind>([K.Immediate8, K.Immediate8to32, K.Immediate8to64, K.Immediate32, K.Immediate32to64, K.Immediate16, K.Immediate64]),
    R: { ESI: R.ESI, None: R.None },
    C: { a: C.a, ae: C.ae, b: C.b, be: C.be, e: C.e, g: C.g, ge: C.ge, l: C.l, le: C.le, ne: C.ne },
  };
}
let codeValues: ReturnType<typeof readCodes> | undefined;
const codes = (): ReturnType<typeof readCodes> => (codeValues ??= readCodes());

/** rax/eax/ax -> eax etc.: compares are of the full register's 32-bit view (built at first use, with iced-x86). */
let low32: Map<Register, Register> | undefined;
function reg32(r: Register): Register {
  if (!low32) {
    const { Register: R } = icedX86();
    low32 = new Map([
      [R.RAX, R.EAX], [R.RCX, R.ECX], [R.RDX, R.EDX], [R.RBX, R.EBX], [R.RSI, R.ESI], [R.RDI, R.EDI],
      [R.R8, R.R8D], [R.R9, R.R9D], [R.R10, R.R10D], [R.R11, R.R11D],
    ]);
  }
  return low32.get(r) ?? r;
}

/** Follows every path of the switch at `start` (its bytes in `code`) with the nr interval that reaches it. */
export function mapSwitch(code: Buffer, start: bigint): SwitchMap {
  const { Decoder, DecoderOptions, Instruction } = icedX86();
  const { M, F, K, R, immediates } = codes();
  const end = start + BigInt(code.length);
  const ranges: { lo: number; hi: number; target: bigint }[] = [];
  const errors: string[] = [];
  const decoder = new Decoder(64, code, DecoderOptions.None);
  const ins = new Instruction();
  const seen = new Set<string>();
  const stack: PathState[] = [{ ip: start, lo: 0, hi: NR_LIMIT - 1, reg: R.ESI, offset: 0, cmp: null }];
  let total = 0;
  // Where the decoder stands after its last instruction: a path going on from there needs no
  // repositioning (setting the position costs as much as decoding).
  let decoderAt = -1n;
  try {
    while (stack.length > 0) {
      const st = stack.pop() as PathState;
      let cmp = st.cmp;
      let reg = st.reg;
      let offset = st.offset;
      let { lo, hi, ip } = st;
      for (;;) {
        if (++total > MAX_STEPS) { errors.push(`more than ${MAX_STEPS} instructions on all paths`); return { ranges, errors }; }
        const key = `${ip}:${lo}:${hi}:${reg}:${offset}:${cmp?.imm}:${cmp?.offset}`;
        if (seen.has(key)) break;
        seen.add(key);
        if (ip < start || ip >= end) { errors.push(`path leaves the function at ${hex(ip)}`); break; }
        if (ip !== decoderAt) {
          decoder.ip = ip;
          decoder.position = Number(ip - start);
        }
        decoder.decodeOut(ins);
        if (ins.mnemonic === M.INVALID) { errors.push(`undecodable bytes at ${hex(ip)}`); break; }
        const next = ins.nextIP;
        decoderAt = next;
        const fc = ins.flowControl;
        if (fc === F.Return || ins.mnemonic === M.Int3 || ins.mnemonic === M.Ud2) break;
        if (fc === F.Call || fc === F.UnconditionalBranch) {
          if (ins.op0Kind === K.NearBranch64) {
            const target = ins.nearBranchTarget;
            if (target >= start && target < end) {
              if (fc === F.Call) { errors.push(`call into itself at ${hex(ip)}`); break; }
              ip = target; continue;
            }
            ranges.push({ lo, hi, target });
            if (fc === F.Call) { ip = next; continue; }
            break;
          }
          // Through a register or memory (a thunk): not a handler we can attribute.
          errors.push(`indirect ${fc === F.Call ? 'call' : 'jump'} at ${hex(ip)} for nr ${lo}..${hi}`);
          break;
        }
        if (fc === F.ConditionalBranch) {
          const target = ins.nearBranchTarget;
          if (cmp === null) { errors.push(`branch at ${hex(ip)} on flags not from a compare of nr`); break; }
          const split = splitOn(ins.conditionCode, cmp.imm, cmp.offset, lo, hi);
          if (split === null) { errors.push(`condition ${ins.conditionCode} at ${hex(ip)} not understood`); break; }
          for (const [a, b] of split.taken) stack.push({ ip: target, lo: a, hi: b, reg, offset, cmp });
          const [first, ...rest] = split.fall;
          for (const [a, b] of rest) stack.push({ ip: next, lo: a, hi: b, reg, offset, cmp });
          if (!first) break;
          [lo, hi] = first;
          ip = next;
          continue;
        }
        // Data flow of nr: moves and constant adjustments of the register that holds it; a compare sets the flags.
        const m = ins.mnemonic;
        const op0 = ins.op0Kind === K.Register ? reg32(ins.op0Register) : R.None;
        const op1Reg = ins.opCount > 1 && ins.op1Kind === K.Register ? reg32(ins.op1Register) : R.None;
        const imm = ins.opCount > 1 && immediates.has(ins.op1Kind) ? Number(BigInt.asUintN(32, ins.immediate(1))) : null;
        if (m === M.Cmp && op0 === reg && imm !== null) { cmp = { imm, offset }; ip = next; continue; }
        // test r,r: the flags of a compare with 0 (for the conditions a/be/e/ne gcc pairs with it).
        if (m === M.Test && op0 === reg && op1Reg === reg) { cmp = { imm: 0, offset }; ip = next; continue; }
        if (m === M.Mov && op1Reg === reg && op0 !== R.None) { reg = op0; ip = next; cmp = null; continue; }
        if ((m === M.Sub || m === M.Add) && op0 === reg && imm !== null) {
          // A sub's carry and zero flags are those of a compare of the old value with the immediate.
          cmp = m === M.Sub ? { imm, offset } : null;
          offset = (offset + (m === M.Add ? imm : -imm)) % NR_LIMIT;
          ip = next; continue;
        }
        if (m === M.Lea && op0 !== R.None && ins.memoryBase !== R.None && reg32(ins.memoryBase) === reg && ins.memoryIndex === R.None) {
          reg = op0; offset = (offset + Number(BigInt.asIntN(32, ins.memoryDisplacementU64))) % NR_LIMIT; ip = next; cmp = null; continue;
        }
        if (m === M.Nop || m === M.Endbr64 || m === M.Push || m === M.Pop || m === M.Cdqe) { ip = next; continue; }
        // Anything else: if it writes the register holding nr, nr is lost on this path.
        if (op0 === reg && m !== M.Test && m !== M.Cmp) { errors.push(`nr overwritten by ${m} at ${hex(ip)}`); break; }
        if (m === M.Test || m === M.Cmp || m === M.Bt) cmp = null;
        ip = next;
      }
    }
  } finally {
    ins.free();
    decoder.free();
  }
  return { ranges, errors };
}

type Interval = [number, number];

/**
 * The nr intervals that take and fall through a branch on `reg ? imm` where reg = (nr + offset)
 * mod 2^32 (unsigned; signed conditions are read the same, nr being small). The interval is cut
 * where reg wraps, so each piece compares monotonically.
 */
function splitOn(cc: ConditionCode, imm: number, offset: number, lo: number, hi: number): { taken: Interval[]; fall: Interval[] } | null {
  const C = codes().C;
  const off = ((offset % NR_LIMIT) + NR_LIMIT) % NR_LIMIT;
  // nr in [lo, wrapAt-1] gives reg = nr + off; nr >= wrapAt gives reg = nr + off - 2^32.
  const wrapAt = NR_LIMIT - off;
  const pieces: { a: number; b: number; shift: number }[] = [];
  if (lo < wrapAt) pieces.push({ a: lo, b: Math.min(hi, wrapAt - 1), shift: off });
  if (hi >= wrapAt) pieces.push({ a: Math.max(lo, wrapAt), b: hi, shift: off - NR_LIMIT });
  const taken: Interval[] = [];
  const fall: Interval[] = [];
  const add = (into: Interval[], a: number, b: number): void => { if (a <= b) into.push([a, b]); };
  for (const { a, b, shift } of pieces) {
    const k = imm - shift; // reg ? imm  <=>  nr ? k on this piece
    switch (cc) {
      case C.a: case C.g: add(taken, Math.max(a, k + 1), b); add(fall, a, Math.min(b, k)); break;
      case C.ae: case C.ge: add(taken, Math.max(a, k), b); add(fall, a, Math.min(b, k - 1)); break;
      case C.b: case C.l: add(taken, a, Math.min(b, k - 1)); add(fall, Math.max(a, k), b); break;
      case C.be: case C.le: add(taken, a, Math.min(b, k)); add(fall, Math.max(a, k + 1), b); break;
      case C.e: case C.ne: {
        const eq: Interval[] = [];
        const neq: Interval[] = [];
        if (k >= a && k <= b) eq.push([k, k]);
        add(neq, a, Math.min(b, k - 1));
        add(neq, Math.max(a, k + 1), b);
        taken.push(...(cc === C.e ? eq : neq));
        fall.push(...(cc === C.e ? neq : eq));
        break;
      }
      default: return null;
    }
  }
  return { taken, fall };
}

/**
 * Decodes one switch body (`code`, at `start`): its map, or null while the decoding runs elsewhere
 * (e.g. a child process: the switch is then left out of this scan and a later one has it).
 */
export type SwitchDecode = (name: string, code: Buffer, start: bigint) => SwitchMap | null;

/**
 * Every dispatch switch the kernel has, each slot mapped to the function it reaches. Slots are
 * those of the switch's table (its size from the kernel); the narrowest nr range reaching a call
 * wins, so a case beats the default that surrounds it.
 */
export function readDispatch(ctx: KernelContext, modules: readonly ModuleInfo[], tables: readonly SyscallTableView[], decode: SwitchDecode = (_n, code, start) => mapSwitch(code, start)): readonly DispatchView[] {
  const out: DispatchView[] = [];
  const s = ctx.profile.symbols;
  let perProfile = cache.get(ctx.profile);
  if (!perProfile) { perProfile = new Map(); cache.set(ctx.profile, perProfile); }
  const last = lastViews.get(ctx);
  const parts = new Map<string, { map: object; table: SyscallTableView | undefined; view: DispatchView }>();
  for (const { name, table, abi } of SWITCHES) {
    const address = s.address(name);
    if (address === undefined) continue; // before 6.9 and the backports: dispatch is through the table
    const errors: ViewError[] = [];
    const len = s.extent(name);
    if (len === undefined || len <= 0 || len > MAX_FUNCTION) { out.push({ name, address, slots: [], errors: [{ where: `dispatch: ${name}`, message: `size ${String(len)} implausible` }] }); continue; }
    let bytes: Buffer;
    try { bytes = ctx.space.read(address, len); } catch (e) { out.push({ name, address, slots: [], errors: [viewError(`dispatch: ${name} at ${hex(address)}`, e)] }); continue; }
    let map = perProfile.get(name);
    if (!map || !map.bytes.equals(bytes)) {
      const result = decode(name, bytes, address);
      if (result === null) continue;
      map = { bytes, result };
      perProfile.set(name, map);
    }
    for (const e of map.result.errors) errors.push({ where: `dispatch: ${name}`, message: e });
    // Nothing decoded (e.g. the decoder failed): the errors say why, not one per slot.
    if (map.result.ranges.length === 0) { out.push({ name, address, slots: [], errors }); continue; }
    const tv = tables.find((x) => x.table === table && x.entries.length > 0);
    const kept = last?.parts.get(name);
    if (kept && kept.map === map && kept.table === tv) { parts.set(name, kept); out.push(kept.view); continue; }
    const ranges = [...map.result.ranges].sort((x, y) => (x.hi - x.lo) - (y.hi - y.lo));
    // Without its table (6.9+ keep only sys_call_table), the switch sizes itself: one past the
    // highest nr a case (any range but the default, which runs to 2^32-1) names.
    const count = tv ? tv.entries.length : ranges.reduce((n, r) => (r.hi < NR_LIMIT - 1 ? Math.max(n, r.hi + 1) : n), 0);
    if (count === 0 || count > 4096) { errors.push({ where: `dispatch: ${name}`, message: `no cases found (size ${count})` }); out.push({ name, address, slots: [], errors }); continue; }
    // Slot targets depend only on the body: computed once per body and size.
    if (!map.slots || map.slots.count !== count) {
      const targets: (bigint | null)[] = [];
      for (let nr = 0; nr < count; nr++) targets.push(ranges.find((x) => x.lo <= nr && nr <= x.hi)?.target ?? null);
      map.slots = { count, targets };
    }
    // Without its table, a compat switch is checked against the ABI's numbering from the kernel itself.
    const numbering = !tv && abi !== null ? abiNumbering(ctx, abi, map.slots.targets) : null;
    const slots: DispatchSlot[] = [];
    for (let nr = 0; nr < count; nr++) {
      const target = map.slots.targets[nr] ?? null;
      if (target === null) { errors.push({ where: `dispatch: ${name}[${nr}]`, message: 'no path of the switch reaches a handler' }); continue; }
      slots.push({ nr, target, owner: ownerOf(ctx, target, modules), expected: tv?.entries[nr]?.expected ?? numbering?.[nr] ?? null });
    }
    const view: DispatchView = { name, address, slots: Object.freeze(slots), errors: Object.freeze(errors) };
    // Only a switch read whole and resolved into kernel text alone is kept: a module's range is the module list's to say.
    if (errors.length === 0 && slots.every((e) => e.owner.kind === 'kernel')) parts.set(name, { map, table: tv, view });
    out.push(view);
  }
  if (last && out.length === last.out.length && out.every((d, i) => d === last.out[i])) return last.out;
  const frozen = Object.freeze(out);
  lastViews.set(ctx, { parts, out: frozen });
  return frozen;
}
