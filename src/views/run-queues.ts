// The per-CPU run queues (runqueues + __per_cpu_offset[cpu]): the running task,
// and every task queued on the CFS red-black tree (through group entities), the
// RT priority lists and the deadline tree. The scheduler must see a task to run
// it, so a runnable task hidden from the task list still shows here.
import type { CpuRunQueue, RunQueueView, ViewError } from './types.js';
import { hex, perProfile, viewError, walkRbTree, type KernelContext } from './kernel-context.js';

const MAX_RT_PRIO = 100;
const MAX_GROUP_DEPTH = 8;

interface RqLayout {
  curr: number;
  idle: number;
  cfs: number;
  rt: number;
  dl: number;
  cfsTimeline: number;
  seRunNode: number;
  seMyQ: number | null;
  taskSe: number;
  rtActive: number;
  rtQueue: number;
  rtBitmap: number;
  taskRt: number;
  rtRunList: number;
  dlRoot: number;
  taskDl: number;
  dlRbNode: number;
  /** Deadline servers embedded in the rq (6.8+: fair_server; later ext_server): queued on the dl tree but not tasks. */
  dlServers: number[];
}

function layout(ctx: KernelContext): RqLayout {
  const p = ctx.profile;
  const o = (s: string, m: string): number => p.offsetof(s, m);
  return {
    curr: o('rq', 'curr'), idle: o('rq', 'idle'), cfs: o('rq', 'cfs'), rt: o('rq', 'rt'), dl: o('rq', 'dl'),
    cfsTimeline: o('cfs_rq', 'tasks_timeline'),
    seRunNode: o('sched_entity', 'run_node'),
    seMyQ: p.layouts.has('sched_entity', 'my_q') ? o('sched_entity', 'my_q') : null,
    taskSe: o('task_struct', 'se'),
    rtActive: o('rt_rq', 'active'), rtQueue: o('rt_prio_array', 'queue'), rtBitmap: o('rt_prio_array', 'bitmap'),
    taskRt: o('task_struct', 'rt'), rtRunList: o('sched_rt_entity', 'run_list'),
    dlRoot: o('dl_rq', 'root'), taskDl: o('task_struct', 'dl'), dlRbNode: o('sched_dl_entity', 'rb_node'),
    dlServers: ['fair_server', 'ext_server'].filter((m) => p.layouts.has('rq', m)).map((m) => o('rq', m)),
  };
}

const layoutOf = perProfile(layout);

/** Online CPUs and their per-CPU offsets. */
export function onlineCpus(ctx: KernelContext, errors: ViewError[]): { cpu: number; offset: bigint }[] {
  const p = ctx.profile;
  const nr = Math.min(ctx.space.readU32(p.symbol('nr_cpu_ids')), ctx.limits.maxCpus);
  const maskVa = p.optionalSymbol('__cpu_online_mask');
  const mask = maskVa !== undefined ? ctx.space.read(maskVa, Math.ceil(nr / 64) * 8) : null;
  const offsets = ctx.space.read(p.symbol('__per_cpu_offset'), nr * 8);
  const out: { cpu: number; offset: bigint }[] = [];
  for (let cpu = 0; cpu < nr; cpu++) {
    if (mask && (((mask[cpu >> 3] as number) >> (cpu & 7)) & 1) === 0) continue;
    const off = offsets.readBigUInt64LE(cpu * 8);
    if (off === 0n && cpu > 0) { errors.push({ where: `cpus: __per_cpu_offset[${cpu}]`, message: 'zero for an online CPU' }); continue; }
    out.push({ cpu, offset: off });
  }
  return out;
}

export function readRunQueues(ctx: KernelContext): RunQueueView {
  const errors: ViewError[] = [];
  let L: RqLayout;
  let cpus: { cpu: number; offset: bigint }[];
  let runqueues: bigint;
  try {
    L = layoutOf(ctx);
    runqueues = ctx.profile.symbol('runqueues');
    cpus = onlineCpus(ctx, errors);
  } catch (e) {
    return { cpus: [], errors: [viewError('run queues: profile', e)] };
  }
  const out: CpuRunQueue[] = [];
  let budget = ctx.limits.maxTreeNodes;
  for (const { cpu, offset } of cpus) {
    const rq = (runqueues + offset) & 0xffff_ffff_ffff_ffffn;
    const where = `run queue of cpu ${cpu} at ${hex(rq)}`;
    try {
      const current = ctx.space.readU64(rq + BigInt(L.curr));
      const idle = ctx.space.readU64(rq + BigInt(L.idle));
      const queued: bigint[] = [];
      // CFS: entities in the tree are tasks, or groups whose own cfs_rq holds more.
      const walkCfs = (cfsRq: bigint, depth: number): void => {
        if (depth > MAX_GROUP_DEPTH) { errors.push({ where, message: `task groups nested deeper than ${MAX_GROUP_DEPTH}` }); return; }
        const root = ctx.space.readU64(cfsRq + BigInt(L.cfsTimeline));
        for (const node of walkRbTree(ctx, root, budget, errors, `${where}: cfs`)) {
          budget--;
          const se = node - BigInt(L.seRunNode);
          const myQ = L.seMyQ === null ? 0n : (ctx.space.tryRead(se + BigInt(L.seMyQ), 8)?.readBigUInt64LE(0) ?? 0n);
          if (myQ !== 0n) {
            if (ctx.isKernelPointer(myQ)) walkCfs(myQ, depth + 1);
            else errors.push({ where: `${where}: sched_entity ${hex(se)}`, message: `my_q ${hex(myQ)} is not a kernel pointer` });
          } else {
            queued.push(se - BigInt(L.taskSe));
          }
        }
      };
      walkCfs(rq + BigInt(L.cfs), 0);
      // RT: one list per priority, only where the bitmap says it is non-empty.
      const array = rq + BigInt(L.rt + L.rtActive);
      const bitmap = ctx.space.read(array + BigInt(L.rtBitmap), 16);
      for (let prio = 0; prio < MAX_RT_PRIO; prio++) {
        if ((((bitmap[prio >> 3] as number) >> (prio & 7)) & 1) === 0) continue;
        const head = array + BigInt(L.rtQueue + 16 * prio);
        const w = ctx.space.walkList(head, L.taskRt + L.rtRunList, Math.max(budget, 0), 0, 0);
        if (w.error) errors.push({ where: `${where}: rt queue ${prio}`, message: w.error });
        budget -= w.nodes.length;
        for (const n of w.nodes) queued.push(n);
      }
      // Deadline tree.
      const dlRoot = ctx.space.readU64(rq + BigInt(L.dl + L.dlRoot));
      for (const node of walkRbTree(ctx, dlRoot, Math.max(budget, 0), errors, `${where}: dl`)) {
        budget--;
        const dlSe = node - BigInt(L.dlRbNode);
        if (L.dlServers.some((off) => dlSe === rq + BigInt(off))) continue; // a deadline server, not a task
        queued.push(dlSe - BigInt(L.taskDl));
      }
      out.push({ cpu, current, idle, queued });
    } catch (e) {
      errors.push(viewError(where, e));
    }
  }
  return { cpus: out, errors };
}
