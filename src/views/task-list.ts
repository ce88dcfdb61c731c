// Processes and threads on the kernel's task list (init_task.tasks), the view a
// DKOM rootkit edits. Fields are gathered natively, one record per task, in one
// bounded walk; parents, creds and page tables are then read in batches.
import type { TaskInfo, TaskListView, ViewError } from './types.js';
import { hex, viewError, type KernelContext } from './kernel-context.js';

const PF_KTHREAD = 0x0020_0000;
const PID_MAX_LIMIT = 4 * 1024 * 1024;

/** Where the task_struct fields the views read lie; resolved once per profile. */
export interface TaskLayout {
  readonly tasks: number;
  readonly state: number;
  readonly flags: number;
  readonly pid: number;
  readonly tgid: number;
  readonly comm: number;
  readonly mm: number;
  readonly realParent: number;
  readonly cred: number;
  readonly startTime: number;
  /** thread_group list (kernels before 6.7) or signal->thread_head/thread_node. */
  readonly threadGroup: number | null;
  readonly signal: number;
  readonly threadNode: number | null;
  readonly signalThreadHead: number | null;
  readonly credUid: number;
  readonly mmPgd: number;
  /** [first, last) byte span covering every field above, gathered per task. */
  readonly span: readonly [number, number];
  /** The same fields as packed [offset, length] pairs for the native list walk, and where each lands. */
  readonly packedFields: Uint32Array;
  readonly packedAt: ReadonlyMap<number, number>;
  readonly packedLength: number;
}

const layouts = new WeakMap<object, TaskLayout>();

export function taskLayout(ctx: KernelContext): TaskLayout {
  const cached = layouts.get(ctx.profile);
  if (cached) return cached;
  const p = ctx.profile;
  const L = p.layouts;
  const o = (m: string): number => p.offsetof('task_struct', m);
  const fields = {
    tasks: o('tasks'), state: o('__state'), flags: o('flags'), pid: o('pid'), tgid: o('tgid'), comm: o('comm'),
    mm: o('mm'), realParent: o('real_parent'), cred: o('cred'), startTime: o('start_time'), signal: o('signal'),
    threadGroup: L.has('task_struct', 'thread_group') ? o('thread_group') : null,
    threadNode: L.has('task_struct', 'thread_node') ? o('thread_node') : null,
  };
  const ends = [fields.tasks + 16, fields.state + 4, fields.flags + 4, fields.pid + 4, fields.tgid + 4, fields.comm + 16,
    fields.mm + 8, fields.realParent + 8, fields.cred + 8, fields.startTime + 8, fields.signal + 8,
    (fields.threadGroup ?? 0) + 16, (fields.threadNode ?? 0) + 16];
  const starts = [fields.tasks, fields.state, fields.flags, fields.pid, fields.tgid, fields.comm, fields.mm, fields.realParent,
    fields.cred, fields.startTime, fields.signal, ...(fields.threadGroup !== null ? [fields.threadGroup] : []), ...(fields.threadNode !== null ? [fields.threadNode] : [])];
  const layout: TaskLayout = {
    ...fields,
    signalThreadHead: L.has('signal_struct', 'thread_head') ? p.offsetof('signal_struct', 'thread_head') : null,
    credUid: p.offsetof('cred', 'uid'),
    mmPgd: p.offsetof('mm_struct', 'pgd'),
    span: [Math.min(...starts), Math.max(...ends)],
    ...packFields([[fields.tasks, 16], [fields.state, 4], [fields.flags, 4], [fields.pid, 4], [fields.tgid, 4], [fields.comm, 16],
      [fields.mm, 8], [fields.realParent, 8], [fields.cred, 8], [fields.startTime, 8], [fields.signal, 8],
      ...(fields.threadGroup !== null ? [[fields.threadGroup, 8] as [number, number]] : [])]),
  };
  layouts.set(ctx.profile, layout);
  return layout;
}

/** Packs (offset, length) fields; fields that overlap or touch are merged into one piece. */
function packFields(list: [number, number][]): { packedFields: Uint32Array; packedAt: Map<number, number>; packedLength: number } {
  const sorted = [...list].sort((a, b) => a[0] - b[0]);
  const pieces: [number, number][] = [];
  for (const [off, len] of sorted) {
    const last = pieces[pieces.length - 1];
    if (last && off <= last[0] + last[1] + 8) last[1] = Math.max(last[1], off + len - last[0]);
    else pieces.push([off, len]);
  }
  const packedAt = new Map<number, number>();
  let pos = 0;
  for (const [off, len] of pieces) {
    for (const [f] of sorted) if (f >= off && f < off + len) packedAt.set(f, pos + (f - off));
    pos += len;
  }
  return { packedFields: Uint32Array.from(pieces.flat()), packedAt, packedLength: pos };
}

interface FieldPositions { tg: number; pid: number; tgid: number; comm: number; state: number; flags: number; mm: number; rp: number; cred: number; start: number }
const positionCache = new WeakMap<TaskLayout, { packed: FieldPositions; span: FieldPositions }>();

/** Where each field sits in a gathered record: packed (list walk) or as one span (readGather). */
function positions(L: TaskLayout, packed: boolean): FieldPositions {
  let c = positionCache.get(L);
  if (!c) {
    const make = (at: (off: number) => number): FieldPositions => ({
      tg: L.threadGroup !== null ? at(L.threadGroup) : -1, pid: at(L.pid), tgid: at(L.tgid), comm: at(L.comm), state: at(L.state),
      flags: at(L.flags), mm: at(L.mm), rp: at(L.realParent), cred: at(L.cred), start: at(L.startTime),
    });
    c = { packed: make((off) => L.packedAt.get(off) as number), span: make((off) => off - L.span[0]) };
    positionCache.set(L, c);
  }
  return packed ? c.packed : c.span;
}


/** Reads the task_structs at `addresses` (e.g. found in the pid IDR or a run queue). */
export function readTasks(ctx: KernelContext, addresses: readonly bigint[], errors: ViewError[], where: string): TaskInfo[] {
  const L = taskLayout(ctx);
  const good = addresses.filter((a) => {
    if (ctx.isKernelPointer(a)) return true;
    errors.push({ where: `${where}: task_struct ${hex(a)}`, message: 'not a kernel pointer' });
    return false;
  });
  const nodes = BigUint64Array.from(good);
  const len = L.span[1] - L.span[0];
  const { data, ok } = ctx.space.readGather(nodes, L.span[0], len);
  return buildTasks(ctx, nodes, data, len, false, ok, errors, where).tasks;
}

/**
 * TaskInfo for each gathered record, in one pass: pointer fields are copied as bytes
 * into three arrays and followed with three native gathers (parent's tgid, cred's uid,
 * mm's pgd), so 10k tasks cost few allocations beyond the TaskInfo objects themselves.
 */
function buildTasks(ctx: KernelContext, nodes: BigUint64Array, data: Buffer, len: number, packed: boolean, ok: Uint8Array | null,
  errors: ViewError[], where: string): { tasks: TaskInfo[]; alone: Set<bigint> } {
  const L = taskLayout(ctx);
  const p = positions(L, packed);
  const n = nodes.length;
  const rp = Buffer.alloc(8 * n);
  const cred = Buffer.alloc(8 * n);
  const mm = Buffer.alloc(8 * n);
  for (let i = 0; i < n; i++) {
    if (ok && !ok[i]) continue;
    const base = i * len;
    data.copy(rp, 8 * i, base + p.rp, base + p.rp + 8);
    data.copy(cred, 8 * i, base + p.cred, base + p.cred + 8);
    data.copy(mm, 8 * i, base + p.mm, base + p.mm + 8);
  }
  const view = (b: Buffer): BigUint64Array => new BigUint64Array(b.buffer, b.byteOffset, n);
  const parents = ctx.space.readGather(view(rp), L.tgid, 4, ctx.kernelHalf);
  const creds = ctx.space.readGather(view(cred), L.credUid, 4, ctx.kernelHalf);
  const mms = ctx.space.readGather(view(mm), L.mmPgd, 8, ctx.kernelHalf);
  const tgLink = L.threadGroup !== null ? BigInt(L.threadGroup) : -1n;
  const tasks: TaskInfo[] = [];
  const alone = new Set<bigint>();
  for (let i = 0; i < n; i++) {
    const address = nodes[i] as bigint;
    if (ok && !ok[i]) { errors.push({ where: `${where}: task_struct ${hex(address)}`, message: 'not mapped' }); continue; }
    const base = i * len;
    const pid = data.readInt32LE(base + p.pid);
    const tgid = data.readInt32LE(base + p.tgid);
    if (pid < 0 || pid > PID_MAX_LIMIT || tgid < 0 || tgid > PID_MAX_LIMIT) {
      errors.push({ where: `${where}: task_struct ${hex(address)}`, message: `pid ${pid}/tgid ${tgid} outside 0..${PID_MAX_LIMIT}` });
      continue;
    }
    const isNull = (b: Buffer): boolean => b.readUInt32LE(8 * i) === 0 && b.readUInt32LE(8 * i + 4) === 0;
    // pid 1 and kthreadd are children of the idle task (real_parent NULL here): ps reports 0.
    let ppid = 0;
    if (!isNull(rp)) {
      if (parents.ok[i]) ppid = parents.data.readInt32LE(4 * i);
      else errors.push({ where: `${where}: task ${pid} real_parent ${hex(rp.readBigUInt64LE(8 * i))}`, message: 'not a readable kernel pointer' });
    }
    let uid = 0;
    if (creds.ok[i]) uid = creds.data.readUInt32LE(4 * i);
    else errors.push({ where: `${where}: task ${pid} cred ${hex(cred.readBigUInt64LE(8 * i))}`, message: 'not a readable kernel pointer' });
    let mmVa = 0n;
    let pgd = 0n;
    if (!isNull(mm)) {
      mmVa = mm.readBigUInt64LE(8 * i);
      if (mms.ok[i]) pgd = mms.data.readBigUInt64LE(8 * i);
      else errors.push({ where: `${where}: task ${pid} mm ${hex(mmVa)}`, message: 'not a readable kernel pointer' });
    }
    const c = base + p.comm;
    let end = c;
    while (end < c + 16 && data[end] !== 0) end++;
    if (tgLink >= 0n && data.readBigUInt64LE(base + p.tg) === address + tgLink) alone.add(address);
    tasks.push({
      address, pid, tgid, ppid: Math.max(ppid, 0), comm: data.toString('latin1', c, end), state: data.readUInt32LE(base + p.state),
      uid, mm: mmVa, pgd, startTimeNs: data.readBigUInt64LE(base + p.start), kernelThread: (data.readUInt32LE(base + p.flags) & PF_KTHREAD) !== 0,
    });
  }
  return { tasks, alone };
}

/** The task list: processes from init_task.tasks, then each one's other threads. */
export function readTaskList(ctx: KernelContext): TaskListView {
  const errors: ViewError[] = [];
  let L: TaskLayout;
  let initTask: bigint;
  try {
    L = taskLayout(ctx);
    initTask = ctx.profile.symbol('init_task');
  } catch (e) {
    return { tasks: [], threads: [], errors: [viewError('tasks: profile', e)] };
  }
  const walk = ctx.space.walkListFields(initTask + BigInt(L.tasks), L.tasks, ctx.limits.maxTasks, L.packedFields);
  if (walk.error) errors.push({ where: `tasks: init_task.tasks at ${hex(initTask)}`, message: walk.error });
  const { tasks, alone } = buildTasks(ctx, walk.nodes, walk.data, L.packedLength, true, null, errors, 'tasks');

  // Threads: each leader's thread group, minus the leader itself.
  const threadAddrs: bigint[] = [];
  const budget = { left: ctx.limits.maxTasks - tasks.length };
  for (const t of tasks) {
    if (alone.has(t.address)) continue; // single-threaded: no walk needed
    if (budget.left <= 0) { errors.push({ where: 'threads', message: `more than ${ctx.limits.maxTasks} tasks in all` }); break; }
    let head: bigint;
    let linkOff: number;
    if (L.threadGroup !== null) {
      head = t.address + BigInt(L.threadGroup);
      linkOff = L.threadGroup;
    } else if (L.threadNode !== null && L.signalThreadHead !== null) {
      const sig = ctx.space.tryRead(t.address + BigInt(L.signal), 8)?.readBigUInt64LE(0) ?? 0n;
      if (!ctx.isKernelPointer(sig)) { errors.push({ where: `threads: task ${t.pid} signal ${hex(sig)}`, message: 'not a kernel pointer' }); continue; }
      head = sig + BigInt(L.signalThreadHead);
      linkOff = L.threadNode;
    } else {
      errors.push({ where: 'threads', message: 'task_struct has neither thread_group nor thread_node' });
      break;
    }
    const w = ctx.space.walkList(head, linkOff, budget.left, 0, 0);
    if (w.error) errors.push({ where: `threads: task ${t.pid} thread list`, message: w.error });
    for (const n of w.nodes) if (n !== t.address) threadAddrs.push(n);
    budget.left -= w.nodes.length;
  }
  const threads = threadAddrs.length > 0 ? readTasks(ctx, threadAddrs, errors, 'threads') : [];
  return { tasks, threads: threads.filter((th) => th.pid !== th.tgid), errors };
}
