// Lab figures: guest boot to agent-ready, system_reset to ready, guest-agent
// round trips, and host memory per guest.
import { readFileSync } from 'node:fs';
import { startLabGuest } from '../lab/lab-guest.js';
import { median } from './stats.js';

function rssMiB(pid: number | undefined): number {
  if (pid === undefined) return NaN;
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

export async function bench(): Promise<void> {
  const boots: number[] = [];
  const resets: number[] = [];
  const pings: number[] = [];
  const execs: number[] = [];
  let rss = NaN;
  for (let i = 0; i < 3; i++) {
    const vm = await startLabGuest('bench-lab');
    try {
      boots.push(vm.lastBootMs);
      const agent = await vm.agent();
      for (let j = 0; j < 20; j++) {
        let t = process.hrtime.bigint();
        await agent.ping();
        pings.push(Number(process.hrtime.bigint() - t) / 1e6);
        t = process.hrtime.bigint();
        await agent.exec('/bin/ps');
        execs.push(Number(process.hrtime.bigint() - t) / 1e6);
      }
      rss = rssMiB(vm.pid);
      if (i === 0) {
        const t0 = Date.now();
        await vm.reset();
        resets.push(Date.now() - t0);
      }
    } finally {
      await vm.stop();
    }
  }
  console.log(`guest boot to agent ready (TCG, 256 MiB, 1 vCPU): median ${median(boots).toFixed(0)} ms over ${boots.length} boots (${boots.join(', ')})`);
  console.log(`system_reset to agent ready: ${resets.join(', ')} ms`);
  console.log(`guest-ping round trip: median ${median(pings).toFixed(2)} ms; guest-exec ps round trip: median ${median(execs).toFixed(1)} ms (n=${execs.length})`);
  console.log(`QEMU RSS after boot + 20 exec: ${rss.toFixed(0)} MiB`);
}
