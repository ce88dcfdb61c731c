// The init pid namespace's IDR (init_pid_ns.idr, an XArray of struct pid *):
// every pid number the kernel can still resolve, and the task that owns it.
// Unlinking a task from the task list (DKOM) leaves it here.
import type { PidIdrView, ViewError } from './types.js';
import { hex, perProfile, viewError, type KernelContext } from './kernel-context.js';

const MAX_DEPTH = 12; // 64-bit indices need at most 11 levels of 6 bits

interface PidLayout {
  idrRt: number;
  idrBase: number;
  xaHead: number;
  nodeShift: number;
  nodeSlots: number;
  pidTasks: number;
  pidNumbers: number;
  pidLevel: number;
  upidNr: number;
  taskPidLinks: number;
}

function layout(ctx: KernelContext): PidLayout {
  const p = ctx.profile;
  return {
    idrRt: p.offsetof('pid_namespace', 'idr') + p.offsetof('idr', 'idr_rt'),
    idrBase: p.offsetof('pid_namespace', 'idr') + p.offsetof('idr', 'idr_base'),
    xaHead: p.offsetof('xarray', 'xa_head'),
    nodeShift: p.offsetof('xa_node', 'shift'),
    nodeSlots: p.offsetof('xa_node', 'slots'),
    pidTasks: p.offsetof('pid', 'tasks'),
    pidNumbers: p.offsetof('pid', 'numbers'),
    pidLevel: p.offsetof('pid', 'level'),
    upidNr: p.offsetof('upid', 'nr'),
    taskPidLinks: p.offsetof('task_struct', 'pid_links'),
  };
}

const layoutOf = perProfile(layout);

export function readPidIdr(ctx: KernelContext): PidIdrView {
  const errors: ViewError[] = [];
  let L: PidLayout;
  let ns: bigint;
  try {
    L = layoutOf(ctx);
    ns = ctx.profile.symbol('init_pid_ns');
  } catch (e) {
    return { entries: [], errors: [viewError('pid idr: profile', e)] };
  }
  let head: bigint;
  let base: number;
  try {
    head = ctx.space.readU64(ns + BigInt(L.idrRt + L.xaHead));
    base = ctx.space.readU32(ns + BigInt(L.idrBase));
  } catch (e) {
    return { entries: [], errors: [viewError(`pid idr: init_pid_ns at ${hex(ns)}`, e)] };
  }
  // Collect (index, struct pid *) from the XArray natively (bounded depth, nodes and entries;
  // every node a kernel pointer with a sane shift). Indices are pid numbers (< 2^22 for a sane
  // kernel) and stay exact as JavaScript numbers; larger ones are errors below, not pids.
  const xa = ctx.space.walkXArray(head, L.nodeShift, L.nodeSlots,
    { maxDepth: MAX_DEPTH, maxNodes: ctx.limits.maxTreeNodes, maxEntries: ctx.limits.maxTasks }, ctx.kernelHalf, 'pid idr');
  for (let i = 0; i + 1 < xa.errors.length; i += 2) errors.push({ where: xa.errors[i] as string, message: xa.errors[i + 1] as string });
  if (xa.entries.length >= ctx.limits.maxTasks) errors.push({ where: 'pid idr', message: `more than ${ctx.limits.maxTasks} pids` });

  // struct pid pointers must be kernel pointers (checked on the 32-bit halves: the kernel
  // half's floor has a zero low word).
  const floorHi = Number(ctx.kernelHalf >> 32n);
  const halves = new Uint32Array(xa.entries.buffer, xa.entries.byteOffset, 2 * xa.entries.length);
  let pids = xa.entries;
  let indices = xa.indices;
  const isKernel = (i: number): boolean => (halves[2 * i + 1] as number) >= floorHi && ((halves[2 * i] as number) & 7) === 0;
  let allGood = true;
  for (let i = 0; i < xa.entries.length && allGood; i++) allGood = isKernel(i);
  if (!allGood) {
    const keep: number[] = [];
    for (let i = 0; i < xa.entries.length; i++) {
      if (isKernel(i)) keep.push(i);
      else errors.push({ where: `pid idr: index ${xa.indices[i] as number}`, message: `struct pid ${hex(xa.entries[i] as bigint)} is not a kernel pointer` });
    }
    pids = BigUint64Array.from(keep, (i) => xa.entries[i] as bigint);
    indices = Float64Array.from(keep, (i) => xa.indices[i] as number);
  }
  // struct pid: tasks[PIDTYPE_PID].first, level, numbers[0].nr, in one native record each;
  // the record is good only when the whole span up to those fields is readable.
  const span = Math.max(L.pidTasks + 8, L.pidLevel + 4, L.pidNumbers + L.upidNr + 4);
  const R = { first: 16, level: 24, nr: 28, span: 32 };
  const stride = R.span + Math.ceil(span / 8) * 8;
  const records = ctx.space.gatherRecords(pids, {
    fields: Uint32Array.from([0, span, R.span, L.pidTasks, 8, R.first, L.pidLevel, 4, R.level, L.pidNumbers + L.upidNr, 4, R.nr]),
    derefs: new Uint32Array(0), stride, floor: ctx.kernelHalf,
  });
  const u32 = new Uint32Array(records);
  const i32 = new Int32Array(records);
  const u64 = new BigUint64Array(records);
  const linkOff = BigInt(L.taskPidLinks);
  const entries: { pid: number; task: bigint }[] = [];
  for (let i = 0; i < pids.length; i++) {
    const w = (i * stride) / 4;
    if (((u32[w + 2] as number) & 1) === 0) { errors.push({ where: `pid idr: struct pid ${hex(pids[i] as bigint)}`, message: 'not mapped' }); continue; }
    const number = (indices[i] as number) + base;
    const nr = i32[w + R.nr / 4] as number;
    if (u32[w + R.level / 4] === 0 && nr !== number) errors.push({ where: `pid idr: struct pid ${hex(pids[i] as bigint)}`, message: `numbers[0].nr ${nr} differs from its IDR index ${number}` });
    if (u32[w + R.first / 4] === 0 && u32[w + R.first / 4 + 1] === 0) continue; // a pid kept only as a process group or session id
    entries.push({ pid: number, task: (u64[(i * stride) / 8 + R.first / 8] as bigint) - linkOff });
  }
  return { entries, errors };
}
