// Processes and threads on the kernel's task list (init_task.tasks), the view a
// DKOM rootkit edits. One native call walks the list (bounded, cycle-checked) and
// returns a fixed-stride record per task: its fields plus real_parent->tgid,
// cred->uid and mm->pgd, each pointer checked natively. JavaScript reads the records
// through typed-array views and builds the TaskInfo objects from numbers.
import type { TaskInfo, TaskListView, ViewError } from './types.js';
import { hex, perProfile, viewError, type KernelContext } from './kernel-context.js';
import type { RecordSpec } from '../translate/address-space.js';

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
  /** The native record per task (see RECORD): its fields and the three pointers it follows. */
  readonly records: RecordSpec;
}

/**
 * One task's native record (RecordSpec): byte offsets. The u64s are 8-aligned and the
 * 32-bit fields 4-aligned, so they are read through typed-array views of the records.
 */
const RECORD = {
  address: 0, status: 8, mm: 16, realParent: 24, cred: 32, startTime: 40, pgd: 48, threadGroupNext: 56,
  pid: 64, tgid: 68, state: 72, flags: 76, parentTgid: 80, uid: 84, signal: 88, comm: 96, stride: 112,
} as const;
/** Status bits: the task's fields were read; real_parent->tgid, cred->uid, mm->pgd were followed. */
const FIELDS_OK = 1, PARENT_OK = 2, CRED_OK = 4, MM_OK = 8;

/** task_struct's run state: `state` (a long) up to 5.13, `__state` (an unsigned int) since 5.14. */
export function taskStateMember(L: { has(struct: string, path: string): boolean }): '__state' | 'state' {
  return L.has('task_struct', '__state') ? '__state' : 'state';
}

function buildTaskLayout(ctx: KernelContext): TaskLayout {
  const p = ctx.profile;
  const L = p.layouts;
  const o = (m: string): number => p.offsetof('task_struct', m);
  const fields = {
    tasks: o('tasks'), state: o(taskStateMember(L)), flags: o('flags'), pid: o('pid'), tgid: o('tgid'), comm: o('comm'),
    mm: o('mm'), realParent: o('real_parent'), cred: o('cred'), startTime: o('start_time'), signal: o('signal'),
    threadGroup: L.has('task_struct', 'thread_group') ? o('thread_group') : null,
    threadNode: L.has('task_struct', 'thread_node') ? o('thread_node') : null,
  };
  const credUid = p.offsetof('cred', 'uid');
  const mmPgd = p.offsetof('mm_struct', 'pgd');
  const R = RECORD;
  const layout: TaskLayout = {
    ...fields,
    signalThreadHead: L.has('signal_struct', 'thread_head') ? p.offsetof('signal_struct', 'thread_head') : null,
    credUid,
    mmPgd,
    records: {
      fields: Uint32Array.from([
        fields.state, 4, R.state, fields.flags, 4, R.flags, fields.pid, 4, R.pid, fields.tgid, 4, R.tgid,
        fields.comm, 16, R.comm, fields.mm, 8, R.mm, fields.realParent, 8, R.realParent, fields.cred, 8, R.cred,
        fields.startTime, 8, R.startTime, fields.signal, 8, R.signal,
        ...(fields.threadGroup !== null ? [fields.threadGroup, 8, R.threadGroupNext] : []),
      ]),
      derefs: Uint32Array.from([R.realParent, fields.tgid, 4, R.parentTgid, R.cred, credUid, 4, R.uid, R.mm, mmPgd, 8, R.pgd]),
      stride: R.stride,
      floor: ctx.kernelHalf,
    },
  };
  return layout;
}

/** task_struct's layout and the record spec, once per kernel profile. */
export const taskLayout = perProfile(buildTaskLayout);

/** Reads the task_structs at `addresses` (e.g. found in the pid IDR or a run queue). */
export function readTasks(ctx: KernelContext, addresses: readonly bigint[], errors: ViewError[], where: string): TaskInfo[] {
  const L = taskLayout(ctx);
  const good = addresses.filter((a) => {
    if (ctx.isKernelPointer(a)) return true;
    errors.push({ where: `${where}: task_struct ${hex(a)}`, message: 'not a kernel pointer' });
    return false;
  });
  return buildTasks(ctx.space.gatherRecords(BigUint64Array.from(good), L.records), L, errors, where).tasks;
}

/** Up to 16 bytes of comm, to the first NUL, as latin1 (what the kernel stores is bytes). */
function commString(bytes: Uint8Array, at: number): string {
  let end = at;
  while (end < at + 16 && bytes[end] !== 0) end++;
  // Short strings: fromCharCode beats a native Buffer decode per task.
  let s = '';
  for (let k = at; k < end; k++) s += String.fromCharCode(bytes[k] as number);
  return s;
}

/**
 * TaskInfo for each native task record (fields and the parent's tgid, cred's uid and mm's
 * pgd already followed natively). `alone[i]` says tasks[i] is the only thread of its group
 * (its thread_group list points back at itself), so no thread walk is needed for it.
 */
function buildTasks(records: ArrayBuffer, L: TaskLayout, errors: ViewError[], where: string, prev: BuiltRecords | null = null): { tasks: TaskInfo[]; alone: Uint8Array; built: BuiltRecords } {
  const R = RECORD;
  const n = records.byteLength / R.stride;
  const byRecord: (TaskInfo | null)[] = new Array<TaskInfo | null>(n).fill(null);
  const aloneByRecord = new Uint8Array(n);
  const u64 = new BigUint64Array(records);
  const u32 = new Uint32Array(records);
  const i32 = new Int32Array(records);
  const bytes = new Uint8Array(records);
  const tgLink = L.threadGroup ?? -1;
  const tasks: TaskInfo[] = [];
  const alone = new Uint8Array(n);
  const q8 = R.stride / 8, q4 = R.stride / 4;
  for (let i = 0; i < n; i++) {
    const q = i * q8, w = i * q4;
    // A record the same as the last scan's at this place: the same task (no 4 BigInts and a comm string per task per scan).
    const kept = prev?.byRecord[i];
    if (prev && kept) {
      let same = true;
      for (let k = 0; same && k < q4; k++) same = u32[w + k] === prev.words[w + k];
      if (same) {
        byRecord[i] = kept;
        aloneByRecord[i] = prev.alone[i] as number;
        alone[tasks.length] = prev.alone[i] as number;
        tasks.push(kept);
        continue;
      }
    }
    const complaints = errors.length;
    const status = u32[w + R.status / 4] as number;
    const address = u64[q] as bigint;
    if ((status & FIELDS_OK) === 0) { errors.push({ where: `${where}: task_struct ${hex(address)}`, message: 'not mapped' }); continue; }
    const pid = i32[w + R.pid / 4] as number;
    const tgid = i32[w + R.tgid / 4] as number;
    if (pid < 0 || pid > PID_MAX_LIMIT || tgid < 0 || tgid > PID_MAX_LIMIT) {
      errors.push({ where: `${where}: task_struct ${hex(address)}`, message: `pid ${pid}/tgid ${tgid} outside 0..${PID_MAX_LIMIT}` });
      continue;
    }
    const isNull = (at: number): boolean => u32[w + at / 4] === 0 && u32[w + at / 4 + 1] === 0;
    // pid 1 and kthreadd are children of the idle task (real_parent NULL here): ps reports 0.
    let ppid = 0;
    if (!isNull(R.realParent)) {
      if (status & PARENT_OK) ppid = i32[w + R.parentTgid / 4] as number;
      else errors.push({ where: `${where}: task ${pid} real_parent ${hex(u64[q + R.realParent / 8] as bigint)}`, message: 'not a readable kernel pointer' });
    }
    let uid = 0;
    if (status & CRED_OK) uid = u32[w + R.uid / 4] as number;
    else errors.push({ where: `${where}: task ${pid} cred ${hex(u64[q + R.cred / 8] as bigint)}`, message: 'not a readable kernel pointer' });
    let mmVa = 0n;
    let pgd = 0n;
    if (!isNull(R.mm)) {
      mmVa = u64[q + R.mm / 8] as bigint;
      if (status & MM_OK) pgd = u64[q + R.pgd / 8] as bigint;
      else errors.push({ where: `${where}: task ${pid} mm ${hex(mmVa)}`, message: 'not a readable kernel pointer' });
    }
    if (tgLink >= 0) {
      // thread_group.next === address + thread_group (no wrap past 2^64), compared as two 32-bit halves.
      const lo = (u32[w] as number) + tgLink;
      const hi = (u32[w + 1] as number) + (lo >= 0x1_0000_0000 ? 1 : 0);
      if (u32[w + R.threadGroupNext / 4] === lo % 0x1_0000_0000 && u32[w + R.threadGroupNext / 4 + 1] === hi) alone[tasks.length] = 1;
    }
    const task: TaskInfo = {
      address, pid, tgid, ppid: Math.max(ppid, 0), comm: commString(bytes, i * R.stride + R.comm), state: u32[w + R.state / 4] as number,
      uid, mm: mmVa, pgd, startTimeNs: u64[q + R.startTime / 8] as bigint, kernelThread: ((u32[w + R.flags / 4] as number) & PF_KTHREAD) !== 0,
    };
    // Only a record that gave a task without a complaint is reused as it stands.
    byRecord[i] = errors.length === complaints ? task : null;
    aloneByRecord[i] = alone[tasks.length] as number;
    tasks.push(task);
  }
  return { tasks, alone: alone.subarray(0, tasks.length), built: { words: u32, byRecord, alone: aloneByRecord } };
}

/** One scan's task records and the tasks built from them, by record (null: none, or one with a complaint). */
interface BuiltRecords { readonly words: Uint32Array; readonly byRecord: readonly (TaskInfo | null)[]; readonly alone: Uint8Array }

/** The task list's records as the last scan of each context built them. */
const lastRecords = new WeakMap<KernelContext, BuiltRecords>();

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
  const walk = ctx.space.walkRecords(initTask + BigInt(L.tasks), L.tasks, ctx.limits.maxTasks, L.records);
  if (walk.error) errors.push({ where: `tasks: init_task.tasks at ${hex(initTask)}`, message: walk.error });
  const { tasks, alone, built } = buildTasks(walk.records, L, errors, 'tasks', lastRecords.get(ctx) ?? null);
  lastRecords.set(ctx, built);

  // Threads: each leader's thread group, minus the leader itself.
  const threadAddrs: bigint[] = [];
  const budget = { left: ctx.limits.maxTasks - tasks.length };
  for (let i = 0; i < tasks.length; i++) {
    if (alone[i]) continue; // single-threaded: no walk needed
    const t = tasks[i] as TaskInfo;
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
