// Synthetic kernel snapshots for the detectors' unit tests: a small, consistent
// guest that each test then bends one way.
import type { KernelSnapshot, TaskInfo, SyscallEntry } from '../../src/views/types.js';
import type { GuestProcess, GuestReport } from '../../src/detectors/types.js';

export const SLIDE = 0x1a000000n;
const KBASE = 0xffffffff81000000n + SLIDE;

export function task(pid: number, comm: string, opts: Partial<TaskInfo> = {}): TaskInfo {
  return {
    address: 0xffff888000100000n + BigInt(pid) * 0x2000n,
    pid, tgid: pid, ppid: 1, comm, state: 1, uid: 0,
    mm: opts.kernelThread ? 0n : 0xffff888000900000n + BigInt(pid) * 0x100n,
    pgd: 0n, startTimeNs: BigInt(pid) * 1000n, kernelThread: false,
    ...opts,
  };
}

export const HANDLERS = ['__x64_sys_read', '__x64_sys_write', '__x64_sys_open', '__x64_sys_close'];
export const handlerAddr = (nr: number, slide = SLIDE): bigint => 0xffffffff81300000n + slide + BigInt(nr) * 0x40n;

export function snapshot(opts: { tasks?: TaskInfo[]; slide?: bigint; entries?: SyscallEntry[] } = {}): KernelSnapshot {
  const slide = opts.slide ?? SLIDE;
  const tasks = opts.tasks ?? [
    task(1, 'init'), task(2, 'kthreadd', { kernelThread: true, ppid: 0 }), task(120, 'qemu-ga'), task(130, 'csdtest'), task(140, 'sh'),
  ];
  const entries: SyscallEntry[] = opts.entries ??
    HANDLERS.map((h, nr) => ({ nr, target: handlerAddr(nr, slide), owner: { kind: 'kernel', symbol: h }, expected: h }));
  return {
    takenAtMs: 1000,
    kernel: { banner: 'Linux version 6.1.0-56-amd64 (test)', release: '6.1.0-56-amd64', kaslrSlide: slide, pagingLevels: 5 },
    tasks: { tasks, threads: [], errors: [] },
    pidIdr: { entries: tasks.map((t) => ({ pid: t.pid, task: t.address })), errors: [] },
    runQueues: { cpus: [{ cpu: 0, current: 0xffffffff82a00000n + slide, queued: [] }], errors: [] },
    modules: {
      modules: [{ name: 'virtio_blk', address: 0xffffffffc0002000n, coreBase: 0xffffffffc0000000n, coreSize: 0x4000 }],
      kobjects: [{ name: 'virtio_blk', address: 0xffffffffc0002000n, coreBase: 0xffffffffc0000000n, coreSize: 0x4000 }],
      errors: [],
    },
    syscallTables: [{ table: 'sys_call_table', address: KBASE + 0x1200000n, entries, errors: [] }],
    integrity: {
      textHash: `text-${slide}`, rodataHash: `ro-${slide}`,
      dispatchers: [{ name: 'x64_sys_call', hash: 'd1' }, { name: 'ia32_sys_call', hash: 'd2' }],
      idt: [0xffffffff81a00000n + slide, 0xffffffff81a00100n + slide], lstar: 0xffffffff81c00000n + slide, errors: [],
    },
    moduleArea: { regions: [{ start: 0xffffffffc0000000n, size: 0x2000, owner: 'module', name: 'virtio_blk' }], hiddenModules: [], errors: [] },
  };
}

export function report(snap: KernelSnapshot, extra: GuestProcess[] = [], drop: number[] = []): GuestReport {
  const processes: GuestProcess[] = snap.tasks.tasks
    .filter((t) => !drop.includes(t.pid))
    .map((t) => ({ pid: t.pid, ppid: t.ppid, comm: t.comm, state: 'S' }));
  return { takenAtMs: 1000, agent: 'ok', processes: [...processes, ...extra] };
}
