// Watchdog figures: time from attack to finding at the configured scan
// interval, supervisor CPU per guest per scan, and supervisor RSS with 1, 4
// and 8 lab guests. Reproduce: npm run bench -- watchdog
// (IV_BENCH_GUESTS=1,4,8 picks the guest counts; IV_BENCH_INTERVAL_SEC the interval.)
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startBenchSupervisor, waitLine as waitFor, type Run } from './supervisor-run.js';
import { loadLabImages } from '../lab/lab-images.js';
import { sleep } from '../src/util/deadline.js';
import { QemuGuestController } from '../src/recovery/qemu-controller.js';
import { median, percentile } from './stats.js';


async function startSupervisor(guests: number, intervalSec: number): Promise<Run> {
  const dir = mkdtempSync(join(tmpdir(), 'iv-bench-wd-'));
  return startBenchSupervisor(dir, {
    version: 1, database: 'wd.db', deviceId: 'bench', scanIntervalSec: intervalSec, runDir: 'run', onExit: 'stop-guests',
    guests: Array.from({ length: guests }, (_, i) => ({
      name: `bench-wd${i}`, image: { lab: true }, memoryMiB: 256, cpus: 1,
      critical: [{ name: 'csdtest', start: ['/data/bin/csdtest', '-d'] }],
    })),
  });
}

const waitLine = (r: Run, re: RegExp, from: number, timeoutMs: number): Promise<{ atMs: number; index: number }> => waitFor(r, re, from, timeoutMs, 'bench watchdog');

async function stopSupervisor(r: Run): Promise<void> {
  await r.sup.stop();
  rmSync(r.dir, { recursive: true, force: true });
}

/** Private (not shared) resident memory of this process: RSS also counts the guest RAM pages it maps from /dev/shm. */
function privateMiB(): number {
  const t = readFileSync('/proc/self/smaps_rollup', 'utf8');
  const kb = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(t)?.[1] ?? NaN);
  return (kb('Private_Clean') + kb('Private_Dirty')) / 1024;
}

const rssMiB = (pid: number | undefined): number => {
  if (pid === undefined) return NaN;
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
};

export async function bench(): Promise<void> {
  const intervalSec = Number(process.env.IV_BENCH_INTERVAL_SEC ?? 2);
  const counts = (process.env.IV_BENCH_GUESTS ?? '1,4,8').split(',').map(Number).filter((n) => n > 0);

  // 1) Attack to finding, one guest at the configured interval.
  const r = await startSupervisor(1, intervalSec);
  try {
    const w = r.sup.watches[0];
    if (!w) throw new Error('no watch');
    await waitLine(r, /kernel baseline recorded/, 0, 180_000);
    const ctl = r.sup.controllers[0];
    if (!(ctl instanceof QemuGuestController)) throw new Error('no QEMU controller');
    const agent = await ctl.vm.agent();
    const kills: number[] = [];
    for (let i = 0; i < 5; i++) {
      await sleep(Math.random() * intervalSec * 1000);
      const from = r.lines.length;
      const t0 = Date.now();
      await agent.shell('kill $(cat /run/csdtest.pid)');
      kills.push((await waitLine(r, /finding raised: critical-process-missing/, from, 30_000)).atMs - t0);
      await waitLine(r, /ladder critical-process-missing: verified/, from, 60_000);
    }
    const from = r.lines.length;
    const t0 = Date.now();
    await agent.shell(`insmod ${loadLabImages().attackModules.syscallHook} nrs=39,62`);
    const hook = (await waitLine(r, /finding raised: syscall-table-changed/, from, 30_000)).atMs - t0;
    await waitLine(r, /ladder syscall-table-changed: verified/, from, 240_000);
    console.log(`attack to finding at a ${intervalSec} s scan interval (1 guest):`);
    console.log(`  kill csdtest:        median ${median(kills).toFixed(0)} ms, max ${Math.max(...kills).toFixed(0)} ms (n=${kills.length})`);
    console.log(`  syscall-hook insmod: ${hook} ms (n=1)`);
  } finally {
    await stopSupervisor(r);
  }

  // 2) and 3) Supervisor CPU per guest per scan and RSS, with N guests at once.
  for (const n of counts) {
    const run = await startSupervisor(n, intervalSec);
    try {
      for (let i = 0; i < n; i++) await waitLine(run, new RegExp(`\\[bench-wd${i}\\] kernel baseline recorded`), 0, 600_000);
      await sleep(5_000);
      const scans0 = run.sup.watches.reduce((s, w) => s + w.scans, 0);
      const cpu0 = process.cpuUsage();
      const durations: number[] = [];
      const windowMs = 60_000;
      const until = Date.now() + windowMs;
      while (Date.now() < until) {
        for (const w of run.sup.watches) if (w.lastScan) durations.push(w.lastScan.durationMs);
        await sleep(intervalSec * 1000);
      }
      const cpu = process.cpuUsage(cpu0);
      const scans = run.sup.watches.reduce((s, w) => s + w.scans, 0) - scans0;
      const rss = process.memoryUsage().rss / 2 ** 20;
      const qemuRss = run.sup.controllers.reduce((s, c) => s + rssMiB(c.qemuPid), 0);
      console.log(`${n} guest(s), ${windowMs / 1000} s at ${intervalSec} s: ${scans} scans; supervisor CPU ${((cpu.user + cpu.system) / 1000 / scans).toFixed(1)} ms per guest per scan; ` +
        `scan wall time median ${median(durations).toFixed(0)} ms, p95 ${percentile(durations, 95).toFixed(0)} ms; supervisor RSS ${rss.toFixed(0)} MiB (private ${privateMiB().toFixed(0)} MiB; the rest is mapped guest RAM shared with QEMU); QEMU RSS total ${qemuRss.toFixed(0)} MiB`);
    } finally {
      await stopSupervisor(run);
    }
  }
}
