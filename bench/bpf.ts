// Cost of the eBPF view per scan on a live lab guest (default kernel line, KASLR on, TCG):
// readBpf with no program, with the two lab programs on a kprobe, with 32 more loaded, and with
// one on a trace event (the attach point is then looked up on the ftrace_events list); and the
// full scan with and without it.
// Reproduce: npm run bench -- bpf
import { startLabGuest } from '../lab/lab-guest.js';
import { loadLabImages } from '../lab/lab-images.js';
import { Introspector } from '../src/views/scan.js';
import { readBpf } from '../src/views/bpf.js';
import { median } from './stats.js';

function timeIt(iterations: number, fn: () => unknown): number {
  for (let i = 0; i < Math.min(50, iterations); i++) fn();
  const xs: number[] = [];
  for (let i = 0; i < iterations; i++) {
    const t0 = process.hrtime.bigint();
    fn();
    xs.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  return median(xs);
}

export async function bench(): Promise<void> {
  const images = loadLabImages();
  const loader = images.bpfLoader;
  if (!loader) throw new Error('the lab manifest names no bpfLoader: run lab/build-images.sh');
  const vm = await startLabGuest('bench-bpf', { kaslr: true, images });
  try {
    const ins = await Introspector.attach(vm.ramPath, { qmp: vm.qmp });
    const agent = await vm.agent();
    const ctx = ins.context;
    const row = (label: string): void => {
      const n = readBpf(ctx).programs.length;
      const view = timeIt(500, () => { ctx.space.clearCache(); readBpf(ctx); });
      const full = timeIt(100, () => ins.scan({ hashImage: false }));
      const without = timeIt(100, () => ins.scan({ hashImage: false, bpf: false }));
      console.log(`  ${label.padEnd(38)} ${String(n).padStart(3)} programs: view median ${view.toFixed(3)} ms; full scan ${full.toFixed(2)} ms (${without.toFixed(2)} ms without it)`);
    };
    row('no program');
    await agent.shell(`for m in trace writeuser; do ${loader} $m do_sys_openat2 >/dev/null 2>&1 & done; sleep 2`);
    row('two kprobe programs');
    await agent.shell(`i=0; while [ $i -lt 32 ]; do ${loader} trace vfs_read >/dev/null 2>&1 & i=$((i+1)); done; sleep 5`);
    row('34 programs (32 on one kprobe)');
    await agent.shell(`${loader} tptrace syscalls/sys_enter_openat >/dev/null 2>&1 & sleep 2`);
    row('and one on a trace event (walks them)');
    ins.close();
  } finally {
    await vm.stop();
  }
}
