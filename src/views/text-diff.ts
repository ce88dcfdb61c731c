// Kernel text diffs, explained. The first scan that hashes the image keeps a clean copy of the
// text (and of the syscall dispatch switches' bodies), shared by every guest of the same build
// and KASLR slide in this process. Later scans compare with it page by page (the patch sites the
// kernel itself flips, jump labels and static calls, masked as for the hashes) and turn every
// changed run of bytes into the instruction(s) it changed: the function and offset (kallsyms),
// the old and new bytes, the new instruction decoded, and for a jmp/call where it goes and who
// owns that memory. Whether a change is legitimate instrumentation (ftrace, kprobes, BPF
// dispatchers) or a hook is the detector's call (src/detectors/text-integrity.ts); the copy is
// only used when its hashes are those of the stored baseline, so a copy taken from an already
// patched kernel explains nothing.
import { createHash } from 'node:crypto';
import type { Formatter } from 'iced-x86';
import { icedX86 } from '../util/deferred-modules.js';
import type { HandlerOwner, KernelIdentity, KernelIntegrityView, ModuleInfo, TextBranch, TextDiffView, TextSite, TextSiteGroup, ViewError } from './types.js';
import { hex, viewError, type KernelContext } from './kernel-context.js';
import { maskPatchSites, pagedTextHashes, patchSites, PAGED_HASH_PREFIX, startsWith, type PatchSite } from './integrity.js';
import { ownerOf } from './syscall-tables.js';
import { FTRACE_SELF } from './ftrace-labels.js';
import { TextCopy } from './text-copy.js';

const PAGE = 4096;
const HASH_LEN = 32;
const MAX_TEXT = 64 << 20;
/** Sites listed per scan (the rest are counted: truncated). */
const MAX_SITES = 64;
/** Sites kept per page: a page rewritten wholesale is one long run, not thousands of sites. */
const MAX_PAGE_SITES = 512;
/** Instructions decoded from a function's start to find the one a change falls in. */
const MAX_SWEEP = 1 << 16;
const MAX_SHOWN = 32;
const MAX_KPROBES = 4096;
const MAX_GROUP_EXAMPLES = 5;
/**
 * Clean copies kept, one per build and slide (one per guest with KASLR): the first of a build whole
 * (~10-20 MB), the others as their differences from it (text-copy.ts). A guest whose copy was
 * dropped takes it again, so this stays above the guests one supervisor watches.
 */
const MAX_REFERENCES = 256;
const DISPATCHERS = ['x64_sys_call', 'ia32_sys_call', 'x32_sys_call'];
const MAX_FUNCTION = 1 << 20;
const ENDBR64 = Buffer.from([0xf3, 0x0f, 0x1e, 0xfa]);
/** What the kernel seals an endbr64 into at boot when the function is never called indirectly (`osp nopl (%rax)`). */
const ENDBR_POISON = Buffer.from([0x66, 0x0f, 0x1f, 0x00]);


/** A changed instruction before owners are resolved (owners depend on the module list of each scan). */
interface RawSite {
  readonly address: bigint;
  readonly function: string | null;
  readonly offset: number;
  readonly old: string;
  readonly new: string;
  readonly oldInstruction: string;
  readonly instruction: string;
  readonly atEntry: boolean;
  readonly branch: { readonly kind: 'call' | 'jmp'; readonly target: bigint } | null;
  readonly oldBranch: { readonly kind: 'call' | 'jmp'; readonly target: bigint } | null;
  readonly int3: boolean;
  /** A 5-byte call or NOP at the fentry site: what ftrace writes there. */
  readonly fentry: 'call' | 'nop' | null;
}

/** Fentry sites of one page counted per state and destination. */
interface PageGroup { readonly key: string; readonly state: 'call' | 'nop'; readonly site: RawSite; count: number; readonly examples: string[] }

interface PageResult {
  /** The page's raw bytes and masked hash this result is for (whole scans compare the first, incremental ones the second). */
  readonly raw: Buffer;
  readonly hash: Buffer;
  /** Changed instructions other than fentry sites. */
  readonly sites: readonly RawSite[];
  readonly groups: readonly PageGroup[];
  readonly truncated: boolean;
}

interface Reference {
  /** First page of text (page-aligned _stext) and the clean bytes from there to the end of _etext's page. */
  readonly start: bigint;
  readonly copy: TextCopy;
  readonly textStart: bigint;
  readonly textEnd: bigint;
  readonly pageHashes: Buffer;
  readonly textHash: string;
  readonly pagedHash: string;
  readonly sites: readonly PatchSite[];
  /** Explained pages by index, for the page's current key. */
  readonly pages: Map<number, PageResult>;
}

interface DispatcherReference {
  readonly address: bigint;
  readonly bytes: Buffer;
  readonly hash: string;
  last: { bytes: Buffer; sites: readonly RawSite[] } | null;
}

/** Hashes of the known-clean kernel (the stored baseline's): a copy with other hashes is taken again when the kernel has them. */
export interface CleanHashes {
  readonly textHash: string | null;
  readonly dispatchers: { readonly [name: string]: string };
}

const references = new Map<string, Reference>();
/** The whole copy each build's other copies are kept against (held by those copies; dropped with the last of them). */
const bases = new Map<string, WeakRef<Buffer>>();
const dispatcherRefs = new Map<string, Map<string, DispatcherReference>>();

/** The clean copy of the text kept for this kernel build and slide, if one was taken (for the image hashes: integrity.ts). */
export function textCopyOf(identity: KernelIdentity): { readonly start: bigint; readonly copy: TextCopy } | null {
  const ref = references.get(keyOf(identity));
  return ref ? { start: ref.start, copy: ref.copy } : null;
}

/** Drops the clean copies this process keeps (tests of the no-copy path). */
export function forgetTextReferences(): void {
  references.clear();
  dispatcherRefs.clear();
  bases.clear();
}

const buildOf = (id: KernelIdentity): string => `${id.release} ${id.banner}`;
const keyOf = (id: KernelIdentity): string => `${buildOf(id)}@${hex(id.kaslrSlide)}`;

function remember<V>(m: Map<string, V>, key: string, v: V): void {
  m.delete(key);
  if (m.size >= MAX_REFERENCES) {
    const oldest = m.keys().next().value;
    if (oldest !== undefined) m.delete(oldest);
  }
  m.set(key, v);
}

function captureText(ctx: KernelContext, build: string, errors: ViewError[]): Reference | null {
  const s = ctx.profile.symbols;
  const a = s.address('_stext');
  const b = s.address('_etext');
  if (a === undefined || b === undefined || b <= a || b - a > BigInt(MAX_TEXT)) return null;
  const start = a & ~BigInt(PAGE - 1);
  const pages = Number((b - start + BigInt(PAGE - 1)) / BigInt(PAGE));
  // Every byte is written below (or the copy is dropped): no zero fill of ~10-20 MB first.
  const raw = Buffer.allocUnsafe(pages * PAGE);
  try {
    for (let i = 0; i < pages; i += 512) {
      const n = Math.min(512, pages - i);
      ctx.space.read(start + BigInt(i * PAGE), n * PAGE).copy(raw, i * PAGE);
    }
  } catch (e) {
    errors.push(viewError('text-diff: clean copy', e));
    return null;
  }
  const sites = patchSites(ctx, errors);
  const masked = Buffer.allocUnsafe(raw.length);
  raw.copy(masked);
  maskPatchSites(ctx, masked, start, sites);
  const pageHashes = Buffer.alloc(pages * HASH_LEN);
  for (let i = 0; i < pages; i++) createHash('sha256').update(masked.subarray(i * PAGE, (i + 1) * PAGE)).digest().copy(pageHashes, i * HASH_LEN);
  const copy = TextCopy.of(raw, bases.get(build)?.deref() ?? null);
  if (copy.baseBuffer === raw) bases.set(build, new WeakRef(raw));
  return {
    start, copy, textStart: a, textEnd: b, pageHashes, sites, pages: new Map(),
    textHash: createHash('sha256').update(masked.subarray(Number(a - start), Number(b - start))).digest('hex'),
    pagedHash: PAGED_HASH_PREFIX + createHash('sha256').update(pageHashes).digest('hex'),
  };
}

/** Kernel text and the dispatch switches against their clean copies; the first call per build and slide takes the copies. */
export function readTextDiff(
  ctx: KernelContext, identity: KernelIdentity, modules: readonly ModuleInfo[], integrity: KernelIntegrityView,
  opts: { readonly hashImage: boolean; readonly incremental: boolean; readonly clean?: CleanHashes },
): TextDiffView | undefined {
  const errors: ViewError[] = [];
  const key = keyOf(identity);
  const clean = opts.clean;
  // The dispatchers' bodies are hashed at every scan: their copies need no image hash.
  let dref = dispatcherRefs.get(key);
  if (integrity.errors.length === 0 && integrity.dispatchers.length > 0) {
    for (const name of DISPATCHERS) {
      const now = integrity.dispatchers.find((x) => x.name === name)?.hash;
      const want = clean?.dispatchers[name];
      const have = dref?.get(name);
      // Taken once, or again when the body is back to the known-clean one the copy is not.
      const retake = have !== undefined && want !== undefined && have.hash !== want && now === want;
      if (now === undefined || (have !== undefined && !retake)) continue;
      const a = ctx.profile.symbols.address(name);
      const len = ctx.profile.symbols.extent(name);
      if (a === undefined || len === undefined || len <= 0 || len > MAX_FUNCTION) continue;
      const bytes = ctx.space.tryRead(a, len);
      if (!bytes) continue;
      if (!dref) { dref = new Map(); remember(dispatcherRefs, key, dref); }
      dref.set(name, { address: a, bytes: Buffer.from(bytes), hash: createHash('sha256').update(bytes).digest('hex'), last: null });
    }
  }
  let ref = references.get(key);
  let captured = false;
  // A copy taken while the kernel still patched itself (booting) is replaced once the text is the known-clean one.
  const stale = ref !== undefined && clean?.textHash != null && ref.textHash !== clean.textHash && ref.pagedHash !== clean.textHash && integrity.textHash === clean.textHash;
  if ((!ref || stale) && opts.hashImage && integrity.textHash !== null && integrity.errors.length === 0) {
    const r = captureText(ctx, buildOf(identity), errors);
    if (r) { ref = r; remember(references, key, r); captured = true; }
  } else if (ref) {
    remember(references, key, ref); // in use: the last to be dropped
  }
  if (!ref && !dref) return undefined;
  const resolve = ownerResolver(ctx, modules);
  const dispatchers: { name: string; referenceHash: string; sites: TextSite[] }[] = [];
  for (const [name, d] of dref ?? []) {
    const now = ctx.space.tryRead(d.address, d.bytes.length);
    if (!now || now.equals(d.bytes)) continue;
    if (!d.last || !d.last.bytes.equals(now)) {
      const cur = Buffer.from(now);
      const sites = explainRuns(ctx, runsOf(d.bytes, cur, d.address), (at, len) => slice(d.bytes, d.address, at, len), (at, len) => slice(cur, d.address, at, len), d.address,
        (at) => { const i = Number(at - d.address); return d.bytes[i] !== cur[i]; });
      d.last = { bytes: cur, sites };
    }
    dispatchers.push({ name, referenceHash: d.hash, sites: d.last.sites.map(resolve) });
  }
  const kprobeAddresses = readKprobeAddresses(ctx, errors);
  if (!ref || !opts.hashImage) {
    return { reference: null, pagesChanged: 0, sites: [], fentryGroups: [], truncated: false, kprobeAddresses, dispatchers, errors };
  }
  // The integrity view's hash equal to the copy's: nothing changed, nothing to compare.
  const same = integrity.textHash === (opts.incremental ? ref.pagedHash : ref.textHash);
  const { changed, truncated: cut } = same ? { changed: [], truncated: false } : changedPages(ctx, ref, opts.incremental, errors);
  const sites: TextSite[] = [];
  const groups = new Map<string, { state: 'call' | 'nop'; branch: TextBranch | null; count: number; examples: string[] }>();
  let truncated = cut;
  // Per page, not per site: a tracer on every function changes tens of thousands of fentry sites.
  for (const p of changed) {
    if (p.truncated) truncated = true;
    for (const pg of p.groups) {
      let g = groups.get(pg.key);
      if (!g) { g = { state: pg.state, branch: pg.state === 'call' ? resolve(pg.site).branch : null, count: 0, examples: [] }; groups.set(pg.key, g); }
      g.count += pg.count;
      for (const e of pg.examples) if (g.examples.length < MAX_GROUP_EXAMPLES) g.examples.push(e);
    }
    for (const r of p.sites) {
      if (sites.length >= MAX_SITES) { truncated = true; break; }
      sites.push(resolve(r));
    }
  }
  const fentryGroups: TextSiteGroup[] = [...groups.values()];
  return {
    reference: { textHash: ref.textHash, pagedHash: ref.pagedHash },
    pagesChanged: changed.filter((p) => p.sites.length > 0 || p.groups.length > 0).length,
    sites, fentryGroups, truncated, kprobeAddresses, dispatchers, errors,
    ...(captured ? { entries: entryBranches(ctx, ref, resolve) } : {}),
  };
}

/** The clean copy's bytes at guest address `at`, as slice() cuts them. */
const copySlice = (ref: Reference, at: bigint, len: number): Buffer | null => (at < ref.start ? null : ref.copy.bytes(Number(at - ref.start), len));

const slice = (buf: Buffer, base: bigint, at: bigint, len: number): Buffer | null => {
  if (at < base) return null;
  const o = Number(at - base);
  return o + len <= buf.length ? buf.subarray(o, o + len) : o < buf.length ? buf.subarray(o) : null;
};

/** The explained pages that differ from the clean copy (cached per page while its bytes stay the same). */
function changedPages(ctx: KernelContext, ref: Reference, incremental: boolean, errors: ViewError[]): { changed: PageResult[]; truncated: boolean } {
  const pages = ref.pageHashes.length / HASH_LEN;
  const out: PageResult[] = [];
  const paged = incremental ? pagedTextHashes(ctx) : null;
  if (paged && paged.start === ref.start && paged.pages === pages) {
    // The integrity view's page hashes (a rotating share rehashed per scan): only differing pages are read.
    for (let i = 0; i < pages; i++) {
      const at = i * HASH_LEN;
      if (paged.hashes.compare(ref.pageHashes, at, at + HASH_LEN, at, at + HASH_LEN) === 0) continue;
      const k = paged.hashes.subarray(at, at + HASH_LEN);
      const hit = ref.pages.get(i);
      if (hit && hit.hash.equals(k)) { out.push(hit); continue; }
      const r = explainPage(ctx, ref, i, errors);
      if (r) out.push(r);
    }
    return { changed: out, truncated: false };
  }
  // A whole scan: every page's raw bytes against the copy's.
  for (let i = 0; i < pages; i += 512) {
    const n = Math.min(512, pages - i);
    let cur: Buffer;
    try { cur = ctx.space.read(ref.start + BigInt(i * PAGE), n * PAGE); } catch (e) { errors.push(viewError('text-diff: text', e)); return { changed: out, truncated: true }; }
    for (let k = 0; k < n; k++) {
      const o = (i + k) * PAGE;
      if (ref.copy.bytes(o, PAGE)?.equals(cur.subarray(k * PAGE, (k + 1) * PAGE)) === true) { ref.pages.delete(i + k); continue; }
      const bytes = cur.subarray(k * PAGE, (k + 1) * PAGE);
      const hit = ref.pages.get(i + k);
      if (hit && hit.raw.equals(bytes)) { out.push(hit); continue; }
      const r = explainPage(ctx, ref, i + k, errors);
      if (r) out.push(r);
    }
  }
  return { changed: out, truncated: false };
}

/** Masks the run-time patch sites in a window around page `i` of both copies and explains what still differs. */
function explainPage(ctx: KernelContext, ref: Reference, i: number, errors: ViewError[]): PageResult | null {
  const pageAt = ref.start + BigInt(i * PAGE);
  // 16 bytes either side: a patch site across the page's edge is judged on its own bytes in both copies.
  const from = pageAt - 16n < ref.start ? ref.start : pageAt - 16n;
  const to = pageAt + BigInt(PAGE + 16) > ref.start + BigInt(ref.copy.length) ? ref.start + BigInt(ref.copy.length) : pageAt + BigInt(PAGE + 16);
  const len = Number(to - from);
  const nowRaw = ctx.space.tryRead(from, len);
  if (!nowRaw) { errors.push({ where: `text-diff: page ${hex(pageAt)}`, message: 'not mapped' }); return null; }
  const now = Buffer.from(nowRaw);
  const oldM = Buffer.from(ref.copy.bytes(Number(from - ref.start), len) ?? Buffer.alloc(0));
  const nowM = Buffer.from(now);
  maskPatchSites(ctx, oldM, from, ref.sites);
  maskPatchSites(ctx, nowM, from, ref.sites);
  // Runs inside this page only (the window's edges belong to the neighbours).
  const lo = Number(pageAt - from);
  const differs = (at: bigint): boolean => { const k = Number(at - from); return k < 0 || k >= len || oldM[k] !== nowM[k]; };
  const runs = runsOf(oldM.subarray(lo, lo + PAGE), nowM.subarray(lo, lo + PAGE), pageAt);
  const all = explainRuns(ctx, runs.slice(0, MAX_PAGE_SITES), (at, n) => copySlice(ref, at, n), (at, n) => slice(now, from, at, n), ref.textStart, differs);
  const sites: RawSite[] = [];
  const groups = new Map<string, PageGroup>();
  for (const r of all) {
    // An instruction across the page's start that also changed before it is the previous page's.
    if (r.address < pageAt) {
      let before = false;
      for (let a = r.address; a < pageAt && !before; a++) before = differs(a);
      if (before) continue;
    }
    if (r.fentry === null) { sites.push(r); continue; }
    const key = r.fentry === 'nop' ? 'nop' : `call ${hex(r.branch?.target ?? 0n)}`;
    let g = groups.get(key);
    if (!g) { g = { key, state: r.fentry, site: r, count: 0, examples: [] }; groups.set(key, g); }
    g.count++;
    if (g.examples.length < MAX_GROUP_EXAMPLES && r.function !== null) g.examples.push(r.function);
  }
  const r: PageResult = {
    raw: Buffer.from(now.subarray(lo, lo + PAGE)),
    hash: createHash('sha256').update(nowM.subarray(lo, lo + PAGE)).digest(),
    sites, groups: [...groups.values()], truncated: runs.length > MAX_PAGE_SITES || all.length >= MAX_PAGE_SITES,
  };
  ref.pages.set(i, r);
  return r;
}

/** Runs [start, end) of differing bytes; runs closer than 8 bytes are one (one patched instruction). */
function runsOf(a: Buffer, b: Buffer, base: bigint): [bigint, bigint][] {
  const runs: [bigint, bigint][] = [];
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n) {
    if (a[i] === b[i]) { i++; continue; }
    let j = i + 1;
    let last = i;
    while (j < n && j - last < 8) { if (a[j] !== b[j]) last = j; j++; }
    runs.push([base + BigInt(i), base + BigInt(last + 1)]);
    i = last + 1;
  }
  return runs;
}

let formatter: Formatter | null = null;
function fmt(): Formatter {
  if (!formatter) { const { Formatter, FormatterSyntax } = icedX86(); formatter = new Formatter(FormatterSyntax.Gas); formatter.uppercaseHex = false; }
  return formatter;
}

interface Decoded { readonly len: number; readonly text: string; readonly branch: RawSite['branch']; readonly int3: boolean; readonly nop: boolean }

/** Decodes instructions from `at` in `bytes` until `until` is covered (at most 4). */
function decodeSpan(bytes: Buffer, at: bigint, until: bigint): Decoded[] {
  const { Decoder, DecoderOptions, FlowControl, Instruction, Mnemonic, OpKind } = icedX86();
  const out: Decoded[] = [];
  const d = new Decoder(64, bytes, DecoderOptions.None);
  const ins = new Instruction();
  try {
    d.ip = at;
    let ip = at;
    while (out.length < 4 && (out.length === 0 || ip < until) && d.canDecode) {
      d.decodeOut(ins);
      if (ins.mnemonic === Mnemonic.INVALID) { out.push({ len: 1, text: '(bad)', branch: null, int3: false, nop: false }); break; }
      const fc = ins.flowControl;
      const near = ins.op0Kind === OpKind.NearBranch64;
      const branch = near && (fc === FlowControl.Call || fc === FlowControl.UnconditionalBranch)
        ? { kind: fc === FlowControl.Call ? 'call' as const : 'jmp' as const, target: ins.nearBranchTarget } : null;
      out.push({ len: ins.length, text: fmt().format(ins), branch, int3: ins.mnemonic === Mnemonic.Int3, nop: ins.mnemonic === Mnemonic.Nop });
      ip = ins.nextIP;
    }
  } finally {
    ins.free();
    d.free();
  }
  return out;
}

/** The bytes from `at` are NOP instructions ending exactly `len` bytes on. */
function nopsOver(bytes: Buffer, at: bigint, len: number): boolean {
  const d = decodeSpan(bytes, at, at + BigInt(len));
  let n = 0;
  for (const x of d) { if (!x.nop) return false; n += x.len; if (n >= len) break; }
  return n === len;
}

/** Where, by the clean bytes, the instruction holding `at` starts: a linear sweep from its function's start (bounded). */
function instructionStart(ctx: KernelContext, refBytes: (at: bigint, len: number) => Buffer | null, at: bigint, floor: bigint): { start: bigint; fn: string | null; fnAt: bigint | null } {
  const hit = ctx.profile.symbols.lookup(at);
  if (!hit || hit.address < floor || hit.offset > BigInt(MAX_SWEEP)) return { start: at, fn: hit?.name ?? null, fnAt: hit?.address ?? null };
  const code = refBytes(hit.address, Number(hit.offset) + 16);
  if (!code) return { start: at, fn: hit.name, fnAt: hit.address };
  const { Decoder, DecoderOptions, Instruction } = icedX86();
  const d = new Decoder(64, code, DecoderOptions.None);
  const ins = new Instruction();
  let ip = hit.address;
  try {
    d.ip = ip;
    while (d.canDecode) {
      d.decodeOut(ins);
      if (ins.nextIP > at) break;
      ip = ins.nextIP;
    }
  } finally {
    ins.free();
    d.free();
  }
  return { start: ip, fn: hit.name, fnAt: hit.address };
}

/**
 * Each run of changed bytes as the instructions it changed, one site per changed instruction (by
 * the clean copy's boundaries), so a patch next to a legitimate change is judged on its own.
 * `differs(at)` says whether the byte at `at` differs (patch sites masked).
 */
function explainRuns(ctx: KernelContext, runs: readonly [bigint, bigint][], refBytes: (at: bigint, len: number) => Buffer | null,
  nowBytes: (at: bigint, len: number) => Buffer | null, floor: bigint, differs: (at: bigint) => boolean): RawSite[] {
  const out: RawSite[] = [];
  for (const [a, b] of runs) {
    let pos = a;
    while (pos < b && out.length < MAX_PAGE_SITES) {
      const { start, fn, fnAt } = instructionStart(ctx, refBytes, pos, floor);
      const oldB = refBytes(start, 16);
      const nowB = nowBytes(start, 16);
      if (!oldB || !nowB) break;
      const o = decodeSpan(oldB, start, start + 1n)[0];
      const n = decodeSpan(nowB, start, start + 1n)[0];
      if (!o || !n) break;
      const len = Math.min(MAX_SHOWN, Math.max(o.len, n.len, Number(pos - start) + 1));
      const head = fnAt === null ? null : refBytes(fnAt, 4);
      const entry = fnAt !== null && (start === fnAt || (start === fnAt + 4n && head !== null && (head.equals(ENDBR64) || head.equals(ENDBR_POISON))));
      // A site ftrace switches: a 5-byte call or NOP over the function's entry NOP (or over 5 bytes of NOPs:
      // 5.10 keeps ftrace records of overridden weak functions, whose code has no kallsyms name).
      // ftrace's own patchable calls (ftrace_call in its caller, ...) are no fentry sites.
      const over = (entry && o.len === 5) || nopsOver(oldB, start, 5);
      const fentry = over && n.len === 5 && !FTRACE_SELF.has(fn ?? '') ? (n.branch?.kind === 'call' ? 'call' as const : n.nop ? 'nop' as const : null) : null;
      out.push({
        address: start, function: fn, offset: fnAt === null ? 0 : Number(start - fnAt),
        old: oldB.subarray(0, len).toString('hex'), new: nowB.subarray(0, len).toString('hex'),
        oldInstruction: o.text, instruction: n.text, atEntry: entry, branch: n.branch, oldBranch: o.branch, int3: n.int3, fentry,
      });
      // The next changed byte past this instruction, within the run.
      pos = start + BigInt(len);
      while (pos < b && !differs(pos)) pos++;
    }
  }
  return out;
}

/** Owners of branch targets, resolved once per target per scan. */
function ownerResolver(ctx: KernelContext, modules: readonly ModuleInfo[]): (r: RawSite) => TextSite {
  const cache = new Map<bigint, TextBranch>();
  return (r) => {
    let branch: TextBranch | null = null;
    if (r.branch) {
      branch = cache.get(r.branch.target) ?? null;
      if (!branch) {
        const owner: HandlerOwner = ownerOf(ctx, r.branch.target, modules);
        branch = { kind: r.branch.kind, target: r.branch.target, owner, looksLike: owner.kind === 'unknown' && ftraceTrampolineLike(ctx, r.branch.target) ? 'ftrace-trampoline' : null };
        cache.set(r.branch.target, branch);
      }
      if (branch.kind !== r.branch.kind) branch = { ...branch, kind: r.branch.kind };
    }
    const was = r.oldBranch ? ownerOf(ctx, r.oldBranch.target, modules) : null;
    return {
      address: r.address, function: r.function, offset: r.offset, old: r.old, new: r.new,
      oldInstruction: r.oldInstruction, instruction: r.instruction, atEntry: r.atEntry, branch, int3: r.int3,
      oldTarget: was === null ? null : was.kind === 'kernel' ? was.symbol : was.kind === 'module' ? `module ${was.module}` : null,
    };
  };
}

/** ftrace builds an ops' trampoline by copying ftrace_regs_caller (or ftrace_caller): its first bytes are theirs. */
const TRAMPOLINE_PREFIX = 16;
function ftraceTrampolineLike(ctx: KernelContext, target: bigint): boolean {
  const now = ctx.space.tryRead(target, TRAMPOLINE_PREFIX);
  if (!now) return false;
  for (const name of ['ftrace_regs_caller', 'ftrace_caller']) {
    const a = ctx.profile.symbols.address(name);
    const want = a === undefined ? null : ctx.space.tryRead(a, TRAMPOLINE_PREFIX);
    if (want && want.equals(now)) return true;
  }
  return false;
}

/** The probed addresses of kprobe_table's kprobes (64 hlist buckets), bounded and cycle-checked. */
function readKprobeAddresses(ctx: KernelContext, errors: ViewError[]): bigint[] {
  const table = ctx.profile.symbols.address('kprobe_table');
  const L = ctx.profile.layouts;
  if (table === undefined || !L.has('kprobe', 'addr') || !L.has('kprobe', 'hlist')) return [];
  const addrOff = BigInt(L.offsetof('kprobe', 'addr'));
  const hlistOff = BigInt(L.offsetof('kprobe', 'hlist'));
  const heads = ctx.space.tryRead(table, 64 * 8);
  if (!heads) { errors.push({ where: `text-diff: kprobe_table at ${hex(table)}`, message: 'not mapped' }); return []; }
  const out: bigint[] = [];
  const seen = new Set<bigint>();
  for (let b = 0; b < 64; b++) {
    let node = heads.readBigUInt64LE(b * 8);
    while (node !== 0n) {
      if (!ctx.isKernelPointer(node) || seen.has(node) || seen.size >= MAX_KPROBES) {
        errors.push({ where: `text-diff: kprobe_table[${b}] node ${hex(node)}`, message: seen.has(node) ? 'cycle' : seen.size >= MAX_KPROBES ? `more than ${MAX_KPROBES} kprobes` : 'not a kernel pointer' });
        break;
      }
      seen.add(node);
      const k = node - hlistOff;
      const addr = ctx.space.tryRead(k + addrOff, 8);
      const next = ctx.space.tryRead(node, 8);
      if (!addr || !next) { errors.push({ where: `text-diff: kprobe at ${hex(k)}`, message: 'not mapped' }); break; }
      out.push(addr.readBigUInt64LE(0));
      node = next.readBigUInt64LE(0);
    }
  }
  return out;
}

/**
 * Without a clean copy to compare with (a dump judged in another process: the copy was just taken
 * from the dump itself), the one change that needs no old bytes: every kallsyms text function's
 * fentry site holding a jmp/call out of kernel text. Taken with the copy, once.
 */
function entryBranches(ctx: KernelContext, ref: Reference, resolve: (r: RawSite) => TextSite): { sites: TextSite[]; fentryGroups: TextSiteGroup[]; truncated: boolean } {
  const s = ctx.profile.symbols;
  const sites: TextSite[] = [];
  const groups = new Map<bigint, { branch: TextBranch | null; count: number; examples: string[] }>();
  let truncated = false;
  // Offsets from the copy's start in numbers, the addresses read in 32-bit halves (little-endian
  // x86-64), the entry bytes compared in place: a BigInt, a Set of BigInts and two Buffer.equals per
  // text symbol (~50k) were most of this.
  const words = new Uint32Array(s.addresses.buffer, s.addresses.byteOffset, 2 * s.size);
  const baseHi = Number(ref.start >> 32n);
  const baseLo = Number(ref.start & 0xffff_ffffn);
  const lo = Number(ref.textStart - ref.start);
  const hi = Number(ref.textEnd - ref.start);
  const seen = new Set<number>();
  for (let i = 0; i < s.size; i++) {
    const t = s.types.charCodeAt(i);
    if (t !== 0x74 && t !== 0x54) continue; // 't', 'T'
    // fn - start, exact wherever it can fall in [lo, hi) (far-off addresses only lose low bits).
    const o = ((words[2 * i + 1] as number) - baseHi) * 0x1_0000_0000 + ((words[2 * i] as number) - baseLo);
    if (o < lo || o >= hi || seen.has(o)) continue;
    seen.add(o);
    const head = ref.copy.bytes(o, 9);
    if (!head || head.length < 9) continue;
    const off = startsWith(head, ENDBR64) || startsWith(head, ENDBR_POISON) ? 4 : 0;
    const op = head[off];
    // Only branches: int3 is also the padding after section-end labels, and without old bytes the two look alike.
    if (op !== 0xe8 && op !== 0xe9) continue;
    const rel = head.readInt32LE(off + 1);
    const to = o + off + 5 + rel;
    if (to >= lo && to < hi) continue;
    const at = (s.addresses[i] as bigint) + BigInt(off);
    const target = at + 5n + BigInt(rel);
    const name = s.names[i] ?? null;
    const rawSite: RawSite = {
      address: at, function: name, offset: off, old: '', new: head.subarray(off, off + 5).toString('hex'),
      oldInstruction: '(no clean copy)', instruction: `${op === 0xe8 ? 'call' : 'jmp'} 0x${target.toString(16)}`,
      atEntry: true, branch: { kind: op === 0xe8 ? 'call' : 'jmp', target }, oldBranch: null, int3: false, fentry: op === 0xe8 ? 'call' : null,
    };
    if (op === 0xe8) {
      let g = groups.get(target);
      if (!g) { g = { branch: resolve(rawSite).branch, count: 0, examples: [] }; groups.set(target, g); }
      g.count++;
      if (g.examples.length < MAX_GROUP_EXAMPLES && name !== null) g.examples.push(name);
      continue;
    }
    if (sites.length >= MAX_SITES) { truncated = true; continue; }
    sites.push(resolve(rawSite));
  }
  return { sites, fentryGroups: [...groups.values()].map((g) => ({ state: 'call' as const, branch: g.branch, count: g.count, examples: g.examples })), truncated };
}
