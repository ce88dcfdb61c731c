// The init pid namespace's IDR (init_pid_ns.idr, an XArray of struct pid *):
// every pid number the kernel can still resolve, and the task that owns it.
// Unlinking a task from the task list (DKOM) leaves it here.
import type { PidIdrView, ViewError } from './types.js';
import { hex, viewError, type KernelContext } from './kernel-context.js';

const XA_CHUNK_SHIFT = 6;
const XA_SLOTS = 1 << XA_CHUNK_SHIFT;
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

export function readPidIdr(ctx: KernelContext): PidIdrView {
  const errors: ViewError[] = [];
  let L: PidLayout;
  let ns: bigint;
  try {
    L = layout(ctx);
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
  // Collect (index, struct pid *) from the XArray. Indices are pid numbers (< 2^22 for a
  // sane kernel), so they stay JavaScript numbers; larger ones are errors, not pids.
  const found: { index: number; pid: bigint }[] = [];
  let nodes = 0;
  const visit = (entry: bigint, index: number, depth: number): void => {
    if (entry === 0n) return;
    if ((entry & 3n) === 2n) {
      if (entry <= 4096n) return; // sibling/retry entries, not nodes
      const node = entry - 2n;
      if (depth > MAX_DEPTH) { errors.push({ where: `pid idr: xa_node ${hex(node)}`, message: `deeper than ${MAX_DEPTH} levels` }); return; }
      if (!ctx.isKernelPointer(node)) { errors.push({ where: `pid idr: xa_node ${hex(node)}`, message: 'not a kernel pointer' }); return; }
      if (++nodes > ctx.limits.maxTreeNodes) { if (nodes === ctx.limits.maxTreeNodes + 1) errors.push({ where: 'pid idr', message: `more than ${ctx.limits.maxTreeNodes} nodes` }); return; }
      const shiftBuf = ctx.space.tryRead(node + BigInt(L.nodeShift), 1);
      const slots = ctx.space.tryRead(node + BigInt(L.nodeSlots), 8 * XA_SLOTS);
      if (!shiftBuf || !slots) { errors.push({ where: `pid idr: xa_node ${hex(node)}`, message: 'not mapped' }); return; }
      const shift = shiftBuf[0] as number;
      if (shift % XA_CHUNK_SHIFT !== 0 || shift > 30) { errors.push({ where: `pid idr: xa_node ${hex(node)}`, message: `shift ${shift} is not a multiple of 6 up to 30` }); return; }
      for (let i = 0; i < XA_SLOTS; i++) {
        if (slots.readUInt32LE(8 * i) === 0 && slots.readUInt32LE(8 * i + 4) === 0) continue;
        visit(slots.readBigUInt64LE(8 * i), index + i * 2 ** shift, depth + 1);
      }
      return;
    }
    if ((entry & 1n) === 1n) return; // value entries are not pointers
    if (found.length >= ctx.limits.maxTasks) return;
    found.push({ index, pid: entry });
  };
  visit(head, 0, 0);
  if (found.length >= ctx.limits.maxTasks) errors.push({ where: 'pid idr', message: `more than ${ctx.limits.maxTasks} pids` });

  const good = found.filter((f) => {
    if (ctx.isKernelPointer(f.pid)) return true;
    errors.push({ where: `pid idr: index ${f.index}`, message: `struct pid ${hex(f.pid)} is not a kernel pointer` });
    return false;
  });
  // struct pid: tasks[PIDTYPE_PID].first, level, numbers[0].nr in one gathered record.
  const span = Math.max(L.pidTasks + 8, L.pidLevel + 4, L.pidNumbers + L.upidNr + 4);
  const { data, ok } = ctx.space.readGather(BigUint64Array.from(good.map((g) => g.pid)), 0, span);
  const entries: { pid: number; task: bigint }[] = [];
  for (let i = 0; i < good.length; i++) {
    const g = good[i] as { index: number; pid: bigint };
    const where = (): string => `pid idr: struct pid ${hex(g.pid)}`;
    if (!ok[i]) { errors.push({ where: where(), message: 'not mapped' }); continue; }
    const rec = data.subarray(i * span, (i + 1) * span);
    const number = Number(g.index) + base;
    const nr = rec.readInt32LE(L.pidNumbers + L.upidNr);
    if (rec.readUInt32LE(L.pidLevel) === 0 && nr !== number) errors.push({ where: where(), message: `numbers[0].nr ${nr} differs from its IDR index ${number}` });
    const first = rec.readBigUInt64LE(L.pidTasks);
    if (first === 0n) continue; // a pid kept only as a process group or session id
    entries.push({ pid: number, task: first - BigInt(L.taskPidLinks) });
  }
  return { entries, errors };
}
