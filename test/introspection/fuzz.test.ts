// Hostile guest memory: mutate a real guest's RAM image where the engine looks
// (task list links, module list, pid IDR nodes, run-queue trees, syscall table,
// the BPF IDR, programs and kprobe table, kallsyms, BTF, random bytes) and check
// every discovery and scan ends — with a
// result or a clean error — within a time bound, without crashing or growing
// memory. CI runs IV_FUZZ_SECONDS (default 40); `npm run fuzz` runs longer.
import t from 'tap';
import { closeSync, mkdtempSync, openSync, readSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startLabGuest } from '../../lab/lab-guest.js';
import { loadLabImages } from '../../lab/lab-images.js';
import { Introspector } from '../../src/views/scan.js';
import { readBpf, MAX_BPF_PROGRAMS } from '../../src/views/bpf.js';
import { detectBpfHooks } from '../../src/detectors/bpf-hooks.js';
import { dumpRam } from './ground-truth.js';
import { analyzeScan } from '../../src/detectors/index.js';
import { snapshotErrors } from '../../src/views/snapshot-errors.js';
import { readModuleArea } from '../../src/views/module-area.js';

t.setTimeout(900_000);
const seconds = Number(process.env.IV_FUZZ_SECONDS ?? '40');
const seed = Number(process.env.IV_FUZZ_SEED ?? Date.now() % 1_000_000);
t.comment(`fuzz: ${seconds} s, seed ${seed} (IV_FUZZ_SEED=${seed} replays it)`);

// xorshift32: reproducible from the seed.
let state = seed || 1;
const rnd = (): number => { state ^= state << 13; state >>>= 0; state ^= state >>> 17; state ^= state << 5; state >>>= 0; return state; };
const pick = <T>(xs: readonly T[]): T => xs[rnd() % xs.length] as T;

const dir = mkdtempSync(join(tmpdir(), 'iv-fuzz-'));
const image = join(dir, 'guest.ram');
const bpfLoader = loadLabImages().bpfLoader;
{
  const vm = await startLabGuest('iv-fuzz', { kaslr: true });
  try {
    // Two eBPF programs on a kprobe and one on a trace event, so the BPF IDR, the programs, the
    // kprobe table and the trace event list have something to corrupt.
    if (bpfLoader) {
      await (await vm.agent()).shell(`for m in trace writeuser; do ${bpfLoader} $m do_sys_openat2 >/dev/null 2>&1 & done; ` +
        `${bpfLoader} tptrace syscalls/sys_enter_openat >/dev/null 2>&1 & sleep 2`);
    }
    // Something for the ftrace and kprobe walks to read: a filtered function tracer (an ops with a
    // filter hash), two kprobe events on one function (an aggregate kprobe) and a kretprobe event.
    const T = '/sys/kernel/tracing';
    await (await vm.agent()).shell(`[ -e ${T}/current_tracer ] || mount -t tracefs nodev ${T}; echo schedule > ${T}/set_ftrace_filter && ` +
      `echo function > ${T}/current_tracer && printf 'p:iva do_sys_openat2\\np:ivb do_sys_openat2\\nr:ivc do_sys_openat2\\n' >> ${T}/kprobe_events && ` +
      `for e in iva ivb ivc; do echo 1 > ${T}/events/kprobes/$e/enable; done`);
    await dumpRam(vm, image);
  } finally { await vm.stop(); }
}
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

const clean = await Introspector.attach(image);
t.teardown(() => clean.close());
const ctx = clean.context;
const p = clean.kernel.profile;
const snap = clean.scan({ hashImage: false });

// Guest-physical targets worth corrupting, from the clean views.
const pa = (va: bigint): bigint | null => ctx.space.translate(va);
const targets: { what: string; pa: bigint; len: number }[] = [];
const add = (what: string, va: bigint, len: number): void => { const a = pa(va); if (a !== null) targets.push({ what, pa: a, len }); };
const off = (s: string, m: string): bigint => BigInt(p.offsetof(s, m));
for (const task of snap.tasks.tasks) {
  add(`task ${task.pid} tasks.next`, task.address + off('task_struct', 'tasks'), 8);
  add(`task ${task.pid} tasks.prev`, task.address + off('task_struct', 'tasks') + 8n, 8);
  add(`task ${task.pid} real_parent`, task.address + off('task_struct', 'real_parent'), 8);
  add(`task ${task.pid} cred`, task.address + off('task_struct', 'cred'), 8);
  add(`task ${task.pid} mm`, task.address + off('task_struct', 'mm'), 8);
  add(`task ${task.pid} comm`, task.address + off('task_struct', 'comm'), 16);
  add(`task ${task.pid} pid`, task.address + off('task_struct', 'pid'), 8);
  add(`task ${task.pid} thread_group`, task.address + off('task_struct', 'thread_group'), 8);
}
for (const m of snap.modules.modules) {
  add(`module ${m.name} list.next`, m.address + off('module', 'list'), 8);
  add(`module ${m.name} name`, m.address + off('module', 'name'), 56);
}
for (const e of snap.pidIdr.entries) add(`struct pid of ${e.pid}`, ctx.space.readU64(e.task + off('task_struct', 'thread_pid')), 64);
const ns = p.symbol('init_pid_ns') + off('pid_namespace', 'idr');
add('init_pid_ns idr head', ns + off('idr', 'idr_rt') + off('xarray', 'xa_head'), 8);
const head = ctx.space.readU64(ns + off('idr', 'idr_rt') + off('xarray', 'xa_head'));
if ((head & 3n) === 2n) add('idr root xa_node', head - 2n, 64 * 8 + 64);
for (const c of snap.runQueues.cpus) add(`rq ${c.cpu}`, p.symbol('runqueues') + ctx.space.readU64(p.symbol('__per_cpu_offset') + BigInt(8 * c.cpu)), 4096);
add('sys_call_table', p.symbol('sys_call_table'), 451 * 8);
// ftrace: the list head, each ops (func, next, func_hash), its filter hash and buckets; the record pages.
add('ftrace_ops_list', p.symbol('ftrace_ops_list'), 8);
for (const o of snap.ftrace?.ops ?? []) {
  add(`ftrace_ops ${o.funcOwner.kind === 'kernel' ? o.funcOwner.symbol : 'x'}`, o.address, p.sizeof('ftrace_ops'));
  const fh = ctx.space.readU64(o.address + off('ftrace_ops', 'func_hash'));
  const hash = fh === 0n ? 0n : ctx.space.readU64(fh + off('ftrace_ops_hash', 'filter_hash'));
  if (hash === 0n) continue;
  add('ftrace_hash', hash, p.sizeof('ftrace_hash'));
  const buckets = ctx.space.readU64(hash + off('ftrace_hash', 'buckets'));
  add('ftrace_hash buckets', buckets, 8 << Number(ctx.space.readU64(hash + off('ftrace_hash', 'size_bits'))));
}
add('ftrace_pages_start', p.symbol('ftrace_pages_start'), 8);
for (let pg = ctx.space.readU64(p.symbol('ftrace_pages_start')), i = 0; pg !== 0n && i < 8; pg = ctx.space.readU64(pg + off('ftrace_page', 'next')), i++) {
  add(`ftrace_page ${i}`, pg, p.sizeof('ftrace_page'));
  add(`ftrace records ${i}`, ctx.space.readU64(pg + off('ftrace_page', 'records')), 4096);
}
// kprobes: the table, each probe (hlist, aggregate list, handlers).
add('kprobe_table', p.symbol('kprobe_table'), 64 * 8);
for (const k of snap.kprobes?.probes ?? []) {
  add(`kprobe ${k.symbol ?? ''}`, k.address, p.sizeof('kprobe'));
  if (k.aggregate !== undefined) add('aggregate kprobe', k.aggregate, p.sizeof('kprobe'));
}
add('module_kset ptr', p.symbol('module_kset'), 8);
add('nr_cpu_ids', p.symbol('nr_cpu_ids'), 4);
add('idt_table', p.symbol('idt_table'), 4096);
const bpfFirst = targets.length;
// eBPF: the IDR head and root node, each program's header, aux and verified instructions, the kprobe table.
const progIdr = p.symbol('prog_idr') + off('idr', 'idr_rt') + off('xarray', 'xa_head');
add('prog_idr head', progIdr, 8);
const progHead = ctx.space.readU64(progIdr);
if ((progHead & 3n) === 2n) add('prog_idr root xa_node', progHead - 2n, 64 * 8 + 64);
for (const b of snap.bpf?.programs ?? []) {
  add(`bpf prog ${b.id} header`, b.address, Number(off('bpf_prog', 'insnsi')));
  add(`bpf prog ${b.id} aux`, ctx.space.readU64(b.address + off('bpf_prog', 'aux')), 256);
  add(`bpf prog ${b.id} instructions`, b.address + off('bpf_prog', 'insnsi'), 64);
}
add('kprobe_table', p.symbol('kprobe_table'), 64 * 8);
add('ftrace_events head', p.symbol('ftrace_events'), 16);
const bpfTargets = targets.slice(bpfFirst);
// The module-area walk: the page-table pages over module text (directory and leaf), each listed
// module's memory descriptors (mem[] or core_layout/init_layout) and whole struct module (the
// carver's input), and the heads of the owner lists it follows.
function tablesFor(va: bigint): { level: number; pa: bigint }[] {
  const out: { level: number; pa: bigint }[] = [];
  const shifts = ctx.space.levels === 5 ? [48n, 39n, 30n, 21n, 12n] : [39n, 30n, 21n, 12n];
  let table = ctx.space.root;
  for (const [level, shift] of shifts.entries()) {
    out.push({ level, pa: table });
    const e = ctx.space.readPhys(table + 8n * ((va >> shift) & 511n), 8).readBigUInt64LE(0);
    if ((e & 1n) === 0n || (e & 0x80n) !== 0n) break;
    table = e & 0x000f_ffff_ffff_f000n;
  }
  return out;
}
const memField = p.layouts.has('module', 'mem') ? 'mem' : 'core_layout';
for (const m of snap.modules.modules) {
  for (const x of tablesFor(m.coreBase).slice(-2)) targets.push({ what: `page table (level ${x.level}) over ${m.name}`, pa: x.pa + BigInt(8 * (rnd() % 512)), len: 8 * (1 + (rnd() % 64)) });
  add(`module ${m.name} ${memField}`, m.address + off('module', memField), 64);
  add(`module ${m.name} struct`, m.address, 1024);
}
for (const sym of ['ftrace_ops_list', 'kprobe_insn_slots', 'kprobe_optinsn_slots', 'bpf_kallsyms', 'pack_list', 'prog_idr']) {
  const a = p.optionalSymbol(sym);
  if (a !== undefined) add(`${sym} head`, a, 64);
}
t.ok(targets.length > 100, `${targets.length} structure targets`);
if (bpfLoader) t.same(snap.bpf?.programs.map((b) => `${b.name} ${b.attachTo} ${b.helpers.join(',')}`).sort(),
  ['iv_trace kprobe:do_sys_openat2 bpf_get_current_pid_tgid,bpf_ktime_get_ns', 'iv_trace tracepoint:syscalls/sys_enter_openat bpf_get_current_pid_tgid,bpf_ktime_get_ns',
    'iv_writeuser kprobe:do_sys_openat2 bpf_probe_write_user'], 'the dump holds the three eBPF programs');
t.ok((snap.ftrace?.ops.length ?? 0) > 0 && (snap.kprobes?.probes.length ?? 0) >= 3, `ftrace ops ${snap.ftrace?.ops.length ?? 0}, kprobes ${snap.kprobes?.probes.length ?? 0} to corrupt`);
const structureTargets = [...targets];
const btfStart = pa(p.symbol('__start_BTF'));
const tokenTable = clean.kernel.tokenTablePhys;
const discoveryTargets = [
  { what: 'BTF header', pa: btfStart ?? 0n, len: 24 },
  { what: 'BTF types', pa: (btfStart ?? 0n) + 24n + BigInt(rnd() % 4_000_000), len: 4096 },
  { what: 'kallsyms token table', pa: tokenTable, len: 2048 },
  { what: 'kallsyms names/markers', pa: tokenTable - BigInt(1 + (rnd() % 2_000_000)), len: 4096 },
  { what: 'phys_base', pa: pa(p.symbol('phys_base')) ?? 0n, len: 8 },
  { what: 'init_top_pgt', pa: pa(p.symbol('init_top_pgt')) ?? 0n, len: 4096 },
];

const kernelPointers = snap.tasks.tasks.map((x) => x.address);
function payload(len: number): Buffer {
  const b = Buffer.alloc(len);
  switch (rnd() % 6) {
    case 0: for (let i = 0; i < len; i++) b[i] = rnd() & 0xff; break; // noise
    case 1: b.fill(0xff); break; // huge counts, -1 pointers
    case 2: break; // zeros: NULLs, truncation
    case 3: for (let i = 0; i + 8 <= len; i += 8) b.writeBigUInt64LE(pick(kernelPointers) + BigInt(rnd() % 4096), i); break; // pointers into other tasks: cycles
    case 4: for (let i = 0; i + 8 <= len; i += 8) b.writeBigUInt64LE(0xffff_0000_0000_0000n | (BigInt(rnd()) << 12n), i); break; // wild kernel pointers
    default: { const i = rnd() % len; b.fill(0); b[i] = 1 << (rnd() % 8); } // a single bit
  }
  return b;
}

const fd = openSync(image, 'r+');
t.teardown(() => closeSync(fd));
/** Writes a payload at a guest-physical target (the image is mapped shared: the engine sees it at once); returns an undo. */
function mutate(target: { pa: bigint; len: number }): () => void {
  const fileOff = clean.memory.fileOffsetOf(target.pa, target.len);
  if (fileOff === null) return () => undefined;
  const before = Buffer.alloc(target.len);
  readSync(fd, before, 0, target.len, Number(fileOff));
  writeSync(fd, payload(target.len), 0, target.len, Number(fileOff));
  return () => { writeSync(fd, before, 0, target.len, Number(fileOff)); };
}

/** Writes 8 bytes at a guest-virtual address; returns an undo. */
function writeU64(va: bigint, v: bigint): () => void {
  const at = pa(va);
  const fileOff = at === null ? null : clean.memory.fileOffsetOf(at, 8);
  if (fileOff === null) throw new Error(`0x${va.toString(16)} is not in the image`);
  const before = Buffer.alloc(8);
  readSync(fd, before, 0, 8, Number(fileOff));
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(v);
  writeSync(fd, b, 0, 8, Number(fileOff));
  return () => { writeSync(fd, before, 0, 8, Number(fileOff)); };
}
/** list_del of the list_head at `entry` in guest memory, as a hiding rootkit does it; returns the undos. */
function listDel(entry: bigint): (() => void)[] {
  const next = ctx.space.readU64(entry);
  const prev = ctx.space.readU64(entry + 8n);
  return [writeU64(prev, next), writeU64(next + 8n, prev)];
}

const SCAN_BOUND_MS = 2_000;
const DISCOVERY_BOUND_MS = 10_000;
const RSS_BOUND = 3 * 1024 ** 3;

t.test('scans of corrupted kernel structures end with views and errors, within bounds', async (t) => {
  const deadline = Date.now() + seconds * 1000 * 0.6;
  let runs = 0;
  let withErrors = 0;
  let hookViewErrors = 0;
  let worstMs = 0;
  let worstWhat = '';
  while (Date.now() < deadline) {
    const chosen = Array.from({ length: 1 + (rnd() % 4) }, () => pick(structureTargets));
    const undo = chosen.map(mutate);
    const t0 = performance.now();
    let s;
    try {
      s = clean.scan({ hashImage: false });
    } catch (e) {
      t.fail(`scan threw after corrupting ${chosen.map((c) => c.what).join(', ')}: ${e instanceof Error ? e.stack : String(e)}`);
      undo.reverse().forEach((u) => u());
      break;
    }
    const ms = performance.now() - t0;
    if (ms > worstMs) { worstMs = ms; worstWhat = chosen.map((c) => c.what).join(', '); }
    const errs = snapshotErrors(s).length;
    analyzeScan({ nowMs: 0, snapshot: s, snapshotError: null, report: { takenAtMs: 0, agent: 'down', error: 'fuzz' }, reportFresh: false, critical: [], baseline: null });
    if (errs > 0) withErrors++;
    if ((s.ftrace?.errors.length ?? 0) + (s.kprobes?.errors.length ?? 0) > 0) hookViewErrors++;
    undo.reverse().forEach((u) => u());
    runs++;
    if (ms > SCAN_BOUND_MS || process.memoryUsage().rss > RSS_BOUND) {
      t.fail(`scan took ${ms.toFixed(0)} ms / rss ${process.memoryUsage().rss} after corrupting ${worstWhat}`);
      break;
    }
  }
  t.comment(`${runs} corrupted scans, ${withErrors} reported view errors (${hookViewErrors} in the ftrace/kprobe views); slowest ${worstMs.toFixed(1)} ms (${worstWhat})`);
  t.ok(runs > 50, `${runs} scans ran`);
  t.ok(withErrors > 0, 'corruption shows up as view errors');
  const again = clean.scan({ hashImage: false });
  t.same(again.tasks.errors, [], 'the restored image scans clean again');
  t.same([...again.ftrace?.errors ?? [], ...again.kprobes?.errors ?? []], [], 'its ftrace and kprobe views too');
  t.same(again.moduleArea?.hiddenModules ?? [], [], 'and carves no module off the lists');
});

t.test('the eBPF walk over a corrupted BPF IDR, programs and kprobe table ends with programs and errors, within bounds', async (t) => {
  const deadline = Date.now() + seconds * 1000 * 0.15;
  const ctxBpf = clean.context;
  let runs = 0;
  let withErrors = 0;
  let worstMs = 0;
  let worstWhat = '';
  const unbounded: string[] = [];
  const times: number[] = [];
  while (Date.now() < deadline || runs < 20) {
    const chosen = Array.from({ length: 1 + (rnd() % 3) }, () => pick(bpfTargets));
    const undo = chosen.map(mutate);
    ctxBpf.space.clearCache();
    const t0 = performance.now();
    try {
      const v = readBpf(ctxBpf);
      if (v.errors.length > 0) withErrors++;
      if (v.programs.length > MAX_BPF_PROGRAMS || v.programs.some((b) => b.helpers.length > 64)) unbounded.push(chosen.map((c) => c.what).join(', '));
      detectBpfHooks({ ...snap, bpf: v });
    } catch (e) {
      t.fail(`eBPF walk threw after corrupting ${chosen.map((c) => c.what).join(', ')}: ${e instanceof Error ? e.stack : String(e)}`);
      undo.reverse().forEach((u) => u());
      break;
    }
    const ms = performance.now() - t0;
    times.push(ms);
    if (ms > worstMs) { worstMs = ms; worstWhat = chosen.map((c) => c.what).join(', '); }
    undo.reverse().forEach((u) => u());
    runs++;
    if (runs > 5000) break;
  }
  times.sort((a, b) => a - b);
  const q = (f: number): string => (times[Math.min(times.length - 1, Math.floor(f * times.length))] ?? 0).toFixed(2);
  t.comment(`${runs} corrupted eBPF walks, ${withErrors} reported view errors; median ${q(0.5)} ms, p99 ${q(0.99)} ms, slowest ${worstMs.toFixed(2)} ms (${worstWhat})`);
  t.ok(worstMs < SCAN_BOUND_MS, 'every walk within the scan bound');
  t.same(unbounded.slice(0, 5), [], 'every walk within its program and helper bounds');
  if (bpfTargets.length > 0) t.ok(withErrors > 0, 'corruption shows up as view errors');
  ctxBpf.space.clearCache();
  t.same(readBpf(ctxBpf).errors, [], 'the restored image reads clean again');
});

t.test('fake struct modules in unowned memory: carved only when self-consistent, never a throw', (t) => {
  // Take one listed module, make its memory unowned by pointing its list entry's descriptors away
  // (copy of the snapshot's module list without it), and forge candidates in its data.
  const m = snap.modules.modules[0];
  if (!m) { t.comment('no module loaded in the fuzz guest'); t.end(); return; }
  const others = { ...snap.modules, modules: snap.modules.modules.filter((x) => x !== m), kobjects: snap.modules.kobjects.filter((x) => x.address !== m.address) };
  // A list read before the module was loaded: carved, then found on the list read again, so not hidden.
  const stale = readModuleArea(ctx, others);
  t.same(stale.hiddenModules, [], `${m.name} missing only from a stale list is not hidden`);
  t.ok(stale.regions.some((r) => r.owner === 'module' && r.name === m.name), 'and its text is its own');
  // Really hidden: unlinked (list_del) from the module list and from module_kset in guest memory.
  const p = ctx.profile;
  const unlinks = [
    m.address + BigInt(p.offsetof('module', 'list')),
    m.address + BigInt(p.offsetof('module', 'mkobj') + p.offsetof('module_kobject', 'kobj') + p.offsetof('kobject', 'entry')),
  ].flatMap((entry) => listDel(entry));
  ctx.space.clearCache();
  const real = readModuleArea(ctx, others);
  t.same(real.hiddenModules.map((x) => x.name), [m.name], `with ${m.name} off both lists, carving finds it by name`);
  t.ok(real.regions.some((r) => r.owner === 'module' && r.name === m.name), 'and gives it its text');
  t.teardown(() => { unlinks.reverse().forEach((u) => u()); ctx.space.clearCache(); });
  const structPa = pa(m.address);
  let runs = 0;
  let carved = 0;
  if (structPa !== null) {
    for (let i = 0; i < 300; i++) {
      const target = { pa: structPa + BigInt(8 * (rnd() % 64)), len: 8 * (1 + (rnd() % 32)) };
      const undo = mutate(target);
      try {
        const v = readModuleArea(ctx, others);
        carved += v.hiddenModules.length;
        for (const h of v.hiddenModules) if (!/^[A-Za-z0-9_-]{1,55}$/.test(h.name)) t.fail(`carved a module with name ${JSON.stringify(h.name)}`);
      } catch (e) {
        t.fail(`module area threw: ${e instanceof Error ? e.stack : String(e)}`);
        undo();
        break;
      }
      undo();
      runs++;
    }
  }
  t.comment(`${runs} forged struct modules, ${carved} carved (only self-consistent ones)`);
  t.equal(runs, structPa === null ? 0 : 300);
  t.end();
});

t.test('discovery over corrupted kallsyms, BTF and page tables ends with a kernel or a clean error', async (t) => {
  const deadline = Date.now() + seconds * 1000 * 0.25;
  let runs = 0;
  let failures = 0;
  const messages = new Set<string>();
  while (Date.now() < deadline || runs < 3) {
    const target = pick(discoveryTargets);
    const undo = mutate(target);
    const t0 = performance.now();
    try {
      const ins = await Introspector.attach(image);
      ins.scan({ hashImage: false });
      ins.close();
    } catch (e) {
      failures++;
      if (!(e instanceof Error) || e.message.length === 0) t.fail(`discovery threw a non-error after corrupting ${target.what}`);
      else if (messages.size < 8) messages.add(`${target.what}: ${e.message.slice(0, 160)}`);
    } finally {
      undo();
    }
    const ms = performance.now() - t0;
    runs++;
    if (ms > DISCOVERY_BOUND_MS) { t.fail(`discovery took ${ms.toFixed(0)} ms after corrupting ${target.what}`); break; }
    if (runs > 200) break;
  }
  t.comment(`${runs} corrupted discoveries, ${failures} ended in a clean error, e.g.:\n${[...messages].join('\n')}`);
  t.ok(runs >= 3);
});

t.test('text diffs over corrupted kernel text and kprobe_table end with explanations or errors, within bounds', async (t) => {
  // The clean copy is taken by this first image-hashing scan; the corruptions below are judged against it.
  t.ok(clean.scan({ hashImage: true }).textDiff?.reference, 'a clean copy of the text');
  const s = p.symbols;
  const text = s.require('_stext');
  const pages = Number((s.require('_etext') - text) / 4096n);
  const kp = s.address('kprobe_table');
  const textTargets = (): { what: string; pa: bigint; len: number }[] => {
    const out: { what: string; pa: bigint; len: number }[] = [];
    const page = text + BigInt((rnd() % pages) * 4096);
    const at = (what: string, va: bigint | undefined, len: number): void => { const a = va === undefined ? null : pa(va); if (a !== null) out.push({ what, pa: a, len }); };
    at(`text page ${page.toString(16)}`, page + BigInt(rnd() % 4000), 1 + (rnd() % 96));
    at('vfs_read entry', s.address('vfs_read'), 16);
    at('x64_sys_call body', s.address('x64_sys_call'), 64);
    at('kprobe_table', kp, 64 * 8);
    return out;
  };
  const deadline = Date.now() + seconds * 1000 * 0.25;
  let runs = 0;
  let explained = 0;
  while (Date.now() < deadline || runs < 10) {
    const chosen = textTargets().filter(() => rnd() % 2 === 0);
    const undo = chosen.map(mutate);
    const t0 = performance.now();
    try {
      const d = clean.scan({ hashImage: true }).textDiff;
      if ((d?.sites.length ?? 0) + (d?.fentryGroups.length ?? 0) + (d?.dispatchers.length ?? 0) > 0 || d?.truncated) explained++;
    } catch (e) {
      t.fail(`scan threw after corrupting ${chosen.map((c) => c.what).join(', ')}: ${e instanceof Error ? e.stack : String(e)}`);
      undo.reverse().forEach((u) => u());
      break;
    }
    undo.reverse().forEach((u) => u());
    const ms = performance.now() - t0;
    runs++;
    if (ms > SCAN_BOUND_MS || process.memoryUsage().rss > RSS_BOUND) { t.fail(`text scan took ${ms.toFixed(0)} ms / rss ${process.memoryUsage().rss} after corrupting ${chosen.map((c) => c.what).join(', ')}`); break; }
    if (runs > 400) break;
  }
  t.comment(`${runs} scans of corrupted text, ${explained} with changes explained`);
  t.ok(explained > 0, 'corrupted text shows up as explained changes');
  const after = clean.scan({ hashImage: true }).textDiff;
  t.same([after?.sites.length, after?.fentryGroups.length, after?.dispatchers.length, after?.errors], [0, 0, 0, []], 'the restored image diffs clean again');
});
