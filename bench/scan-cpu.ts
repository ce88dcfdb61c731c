// CPU per supervisor-style scan, offline on a dump: the views as the supervisor takes them
// (incremental image hash, the dispatch switches compared with their decoded bodies (decoded once, in the first scan), eBPF / tracepoints / module area / ftrace records at their
// own cadence, a clock advanced 100 ms per scan) and then the detectors (analyzeScan against a
// baseline of the first scan, a guest report matching the task list). No guest runs while it
// measures. Reproduce:
//   IV_BENCH_DUMP=FILE npm run bench -- scan-cpu    (a raw dump, e.g. of a 512 MiB lab guest)
// Without IV_BENCH_DUMP it boots one lab guest (512 MiB, KASLR on), dumps it and stops it first.
// IV_BENCH_SCANS (default 2000) scans are measured after 200 unmeasured ones. IV_BENCH_IDLE_MS (default
// 0): the process idles this long before each scan, as a supervisor between its scans does.
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startLabGuest } from '../lab/lab-guest.js';
import { sleep } from '../src/util/deadline.js';
import { Introspector, type ScanOptions } from '../src/views/scan.js';
import { analyzeScan } from '../src/detectors/index.js';
import { baselineOf } from '../src/detectors/baseline.js';
import type { GuestReport } from '../src/detectors/types.js';
import type { KernelSnapshot } from '../src/views/types.js';

const cpuMs = (): number => { const c = process.cpuUsage(); return (c.user + c.system) / 1000; };

async function dumpOfLabGuest(dir: string): Promise<string> {
  const vm = await startLabGuest('iv-bench-scan-cpu', { kaslr: true, memoryMiB: 512 });
  try {
    await vm.qmp.execute('stop');
    const file = join(dir, 'guest.ram');
    copyFileSync(vm.ramPath, file);
    return file;
  } finally {
    await vm.stop();
  }
}

export async function bench(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'iv-bench-scan-cpu-'));
  try {
    const dump = process.env.IV_BENCH_DUMP ?? await dumpOfLabGuest(dir);
    const scans = Number(process.env.IV_BENCH_SCANS ?? 2000);
    const ins = await Introspector.attach(dump, { profiles: null });
    try {
      let now = 1_000_000;
      let n = 0;
      // The cadences of src/supervisor/kernel-scanner.ts at a 100 ms scan period.
      const opts = (): ScanOptions => ({
        hashImage: true, imageCoverageMs: 30_000, nowMs: now, dispatchSwitches: true,
        bpf: n % 10 === 0, tracepoints: n % 10 === 0, ftraceRecords: n % 10 === 0, moduleArea: n % 5 === 0,
      });
      const first = ins.scan({ ...opts(), fullImage: true });
      const baseline = baselineOf(first, now);
      const report = (s: KernelSnapshot): GuestReport => ({
        takenAtMs: now, agent: 'ok',
        processes: s.tasks.tasks.map((t) => ({ pid: t.pid, ppid: t.ppid, comm: t.comm, state: 'S' })),
      });
      let viewsMs = 0;
      let detectMs = 0;
      let findings = 0;
      const idleMs = Number(process.env.IV_BENCH_IDLE_MS ?? 0);
      for (let i = -200; i < scans; i++) {
        if (idleMs > 0) await sleep(idleMs);
        now += 100;
        n++;
        const c0 = cpuMs();
        const snap = ins.scan(opts());
        const c1 = cpuMs();
        const a = analyzeScan({ nowMs: now, snapshot: snap, snapshotError: null, report: report(snap), critical: [], baseline });
        const c2 = cpuMs();
        if (i >= 0) { viewsMs += c1 - c0; detectMs += c2 - c1; findings += a.observations.length; }
      }
      console.log(`${ins.kernel.identity.release}, ${first.tasks.tasks.length} tasks, ${scans} scans (after 200 unmeasured)${idleMs > 0 ? `, idle ${idleMs} ms before each` : ''}`);
      console.log(`CPU per scan: views ${(viewsMs / scans).toFixed(3)} ms, detectors (analyzeScan) ${(detectMs / scans).toFixed(3)} ms, total ${((viewsMs + detectMs) / scans).toFixed(3)} ms`);
      console.log(`observations per scan (a clean dump: 0): ${(findings / scans).toFixed(2)}`);
    } finally {
      ins.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
