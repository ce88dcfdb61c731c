// Scale figures: N lab guests watched by one in-process Supervisor.
// Reproduce: npm run bench -- scale
//   IV_BENCH_GUESTS=1,8,16,32  guest counts (default 1,8)
//   IV_BENCH_INTERVAL_SEC=0.1  scan interval (default 0.1 = 10 Hz)
//   IV_BENCH_WINDOW_SEC=60     measuring window per count
//   IV_BENCH_HOOKS=5           synthetic syscall hooks per count (detection latency)
//   IV_BENCH_SLIDES=4          guests resumed from this many saved states, each its own boot (its own
//                              KASLR slide, as guests of one kernel have in a real fleet); default 1
//   IV_BENCH_RESTORE=0         boot every guest instead (default: one guest boots once, its state is
//                              saved, and every guest of every count resumes from that file, QEMU -incoming)
//   IV_BENCH_READY_SEC=900     how long the guests may take to their first kernel baseline
//   IV_BENCH_LOG=FILE          the supervisor's log lines of the last count (written when it ends or fails)
// Per count it prints, and writes docs/scale.svg from (CPU, memory) per count:
//  - supervisor CPU (user+sys of this process) per guest-scan, over the window;
//  - supervisor private memory (Private_Clean+Private_Dirty; guest RAM is mapped shared);
//  - events recorded per minute by kind (each journal event is one MQTT message when telemetry is on);
//  - the guests' own CPU (QEMU utime+stime, % of a core per guest);
//  - detection latency of a synthetic syscall hook: the bench itself writes another kernel
//    handler's address into a sys_call_table slot of the guest RAM file (no guest cooperation,
//    no module load), waits for the finding, then writes the original back.
import { closeSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startBenchSupervisor, waitLine as waitFor, type Run } from './supervisor-run.js';
import { Introspector } from '../src/views/scan.js';
import { sleep } from '../src/util/deadline.js';
import { percentile } from './stats.js';
import { QemuVm } from '../src/vm/qemu-vm.js';
import type { Supervisor } from '../src/supervisor/supervisor.js';
import { Session } from 'node:inspector/promises';
import { QemuGuestController } from '../src/recovery/qemu-controller.js';


export interface ScalePoint {
  guests: number; scans: number; cpuMsPerScan: number; privateMiB: number; eventsPerMin: number;
  eventsByKind: Record<string, number>; guestCpuPct: number; hookP50Ms: number; hookP99Ms: number; hooks: number;
}

/** Guests resumed from one saved state: launched here, then adopted by the supervisor (as after a supervisor restart). */
class Restorer {
  private states: string[] = [];
  readonly launched: QemuVm[] = [];
  restoreMs: number[] = [];

  constructor(private readonly dir: string, private readonly templates = 1) {}

  async launch(sup: Supervisor): Promise<void> {
    this.restoreMs = [];
    const specs = sup.controllers.filter((c): c is QemuGuestController => c instanceof QemuGuestController).map((c) => ({ ...c.vm.spec, dieWithParent: true }));
    const first = specs[0];
    if (!first) return;
    while (this.states.length < this.templates) {
      // Every guest has the same machine, devices and golden image: one boot's state fits them all.
      // Each template is its own boot, so its own KASLR slide.
      const tpl = new QemuVm(first);
      const t0 = Date.now();
      await tpl.start({ freshDisk: true });
      console.log(`template guest ${this.states.length + 1}/${this.templates} booted in ${((Date.now() - t0) / 1000).toFixed(1)} s; settling 10 s before saving its state`);
      await sleep(10_000);
      const state = join(this.dir, `guest-${this.states.length}.state`);
      await tpl.saveState(state);
      await tpl.stop();
      this.states.push(state);
    }
    // Four at a time: each restore reads the state file and writes the guest's RAM file.
    for (let i = 0; i < specs.length; i += 4) {
      await Promise.all(specs.slice(i, i + 4).map(async (spec, k) => {
        const vm = new QemuVm(spec);
        const t0 = Date.now();
        await vm.start({ freshDisk: true, incoming: this.states[(i + k) % this.states.length] as string });
        this.restoreMs.push(Date.now() - t0);
        vm.detach();
        this.launched.push(vm);
      }));
    }
  }

  get templateCount(): number { return this.states.length; }

  /** Whatever the supervisor did not stop. */
  async stopAll(): Promise<void> {
    await Promise.allSettled(this.launched.splice(0).map((vm) => vm.stop()));
  }

  remove(): void { rmSync(this.dir, { recursive: true, force: true }); }
}

async function startSupervisor(guests: number, intervalSec: number, restorer: Restorer | null): Promise<Run> {
  const dir = mkdtempSync(join(tmpdir(), 'iv-bench-scale-'));
  // A hook that is found is only reported: the bench restores the slot itself, no guest restarts.
  writeFileSync(join(dir, 'policy.json'), JSON.stringify({
    version: 1, maxActionsPerHour: 1, onExhausted: { hold: 'keep-running', alert: false },
    // The hook also changes the rodata page hash (kernel-integrity-changed, restore-image by default): report it only too.
    faults: {
      'syscall-table-changed': { confirmScans: 1, ladder: [{ action: 'kill-process', count: 1, verifyTimeoutSec: 3600, backoffSec: 0 }] },
      'kernel-integrity-changed': { confirmScans: 1, ladder: [{ action: 'kill-process', count: 1, verifyTimeoutSec: 3600, backoffSec: 0 }] },
      // Many TCG guests on 2 cores answer their agent late: restarting them (the default) would turn the run into boots.
      'agent-down': { confirmScans: 3, ladder: [{ action: 'kill-process', count: 1, verifyTimeoutSec: 3600, backoffSec: 0 }] },
    },
  }));
  return startBenchSupervisor(dir, {
    version: 1, database: 'scale.db', deviceId: 'bench', scanIntervalSec: intervalSec, runDir: 'run', onExit: 'stop-guests', policy: 'policy.json',
    guests: Array.from({ length: guests }, (_, i) => ({ name: `bench-sc${i}`, image: { lab: true }, memoryMiB: 256, cpus: 1, writeTrap: 'off' })),
  }, restorer ? (sup) => restorer.launch(sup) : undefined);
}

// Polled every 5 ms: the hook-to-finding latency is measured from these lines' times.
const waitLine = (r: Run, re: RegExp, from: number, timeoutMs: number): Promise<{ atMs: number; index: number }> => waitFor(r, re, from, timeoutMs, 'bench scale', 5);

/** Private (not shared) resident memory of this process: RSS also counts the guest RAM pages it maps from /dev/shm. */
function privateMiB(): number {
  const t = readFileSync('/proc/self/smaps_rollup', 'utf8');
  const kb = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(t)?.[1] ?? NaN);
  return (kb('Private_Clean') + kb('Private_Dirty')) / 1024;
}

/** utime+stime of a process in ms. */
function procCpuMs(pid: number | undefined): number {
  if (pid === undefined) return NaN;
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) * 10; // USER_HZ = 100
}

/** One synthetic hook: sys_call_table[nr] := the handler of slot nr+1, until the finding is raised. */
async function hookOnce(r: Run, guest: number, nr: number): Promise<number> {
  const ctl = r.sup.controllers[guest];
  if (!(ctl instanceof QemuGuestController)) throw new Error('no QEMU controller');
  const intro = await Introspector.attach(ctl.vm.ramPath, { qmp: { hmp: (c) => ctl.hmp(c) } });
  try {
    const table = intro.context.profile.symbols.address('sys_call_table');
    if (table === undefined) throw new Error('no sys_call_table symbol');
    const gpa = intro.context.space.translate(table + BigInt(8 * nr));
    if (gpa === null || gpa >= 0xc000_0000n) throw new Error('sys_call_table slot not in low RAM');
    const fd = openSync(ctl.vm.ramPath, 'r+');
    try {
      const orig = Buffer.alloc(8);
      const other = Buffer.alloc(8);
      readSync(fd, orig, 0, 8, Number(gpa));
      readSync(fd, other, 0, 8, Number(gpa) + 8);
      const from = r.lines.length;
      const t0 = performance.now();
      writeSync(fd, other, 0, 8, Number(gpa));
      const found = await waitLine(r, new RegExp(`\\[bench-sc${guest}\\] finding raised: syscall-table-changed`), from, 60_000);
      const latency = found.atMs - (performance.timeOrigin + t0);
      writeSync(fd, orig, 0, 8, Number(gpa));
      await waitLine(r, new RegExp(`\\[bench-sc${guest}\\] finding cleared: syscall-table-changed`), found.index, 60_000);
      return latency;
    } finally {
      closeSync(fd);
    }
  } finally {
    intro.close();
  }
}

export function svgPlot(points: readonly ScalePoint[]): string {
  const W = 640, H = 360, L = 60, R = 60, T = 30, B = 40;
  const maxN = Math.max(1, ...points.map((p) => p.guests));
  const maxCpu = Math.max(1.5, ...points.map((p) => p.cpuMsPerScan)) * 1.1;
  const maxMem = Math.max(100, ...points.map((p) => p.privateMiB)) * 1.1;
  const x = (n: number): number => L + (n / maxN) * (W - L - R);
  const yc = (v: number): number => H - B - (v / maxCpu) * (H - T - B);
  const ym = (v: number): number => H - B - (v / maxMem) * (H - T - B);
  const line = (f: (p: ScalePoint) => [number, number]): string => points.map((p, i) => `${i ? 'L' : 'M'}${f(p)[0].toFixed(1)},${f(p)[1].toFixed(1)}`).join(' ');
  const dots = (f: (p: ScalePoint) => [number, number], c: string): string => points.map((p) => `<circle cx="${f(p)[0].toFixed(1)}" cy="${f(p)[1].toFixed(1)}" r="3" fill="${c}"/>`).join('');
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="11">
<rect width="${W}" height="${H}" fill="white"/>
<text x="${W / 2}" y="18" text-anchor="middle" font-size="13">supervisor cost against guest count (npm run bench -- scale)</text>
<line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" stroke="black"/><line x1="${L}" y1="${T}" x2="${L}" y2="${H - B}" stroke="#c33"/><line x1="${W - R}" y1="${T}" x2="${W - R}" y2="${H - B}" stroke="#36c"/>
${points.map((p) => `<text x="${x(p.guests).toFixed(1)}" y="${H - B + 14}" text-anchor="middle">${p.guests}</text>`).join('')}
<text x="${W / 2}" y="${H - 8}" text-anchor="middle">guests</text>
<text x="${L - 6}" y="${T - 6}" text-anchor="end" fill="#c33">CPU ms / guest-scan</text><text x="${L - 6}" y="${yc(maxCpu / 1.1).toFixed(1)}" text-anchor="end" fill="#c33">${(maxCpu / 1.1).toFixed(1)}</text><text x="${L - 6}" y="${H - B}" text-anchor="end" fill="#c33">0</text>
<text x="${W - R + 6}" y="${T - 6}" fill="#36c">private MiB</text><text x="${W - R + 6}" y="${ym(maxMem / 1.1).toFixed(1)}" fill="#36c">${(maxMem / 1.1).toFixed(0)}</text><text x="${W - R + 6}" y="${H - B}" fill="#36c">0</text>
<line x1="${L}" y1="${yc(1.5).toFixed(1)}" x2="${W - R}" y2="${yc(1.5).toFixed(1)}" stroke="#c33" stroke-dasharray="4 4"/><text x="${L + 4}" y="${(yc(1.5) - 4).toFixed(1)}" fill="#c33">target 1.5 ms</text>
<path d="${line((p) => [x(p.guests), yc(p.cpuMsPerScan)])}" fill="none" stroke="#c33" stroke-width="2"/>${dots((p) => [x(p.guests), yc(p.cpuMsPerScan)], '#c33')}
<path d="${line((p) => [x(p.guests), ym(p.privateMiB)])}" fill="none" stroke="#36c" stroke-width="2"/>${dots((p) => [x(p.guests), ym(p.privateMiB)], '#36c')}
</svg>
`;
}

export async function bench(): Promise<void> {
  const intervalSec = Number(process.env.IV_BENCH_INTERVAL_SEC ?? 0.1);
  const windowSec = Number(process.env.IV_BENCH_WINDOW_SEC ?? 60);
  const hooks = Number(process.env.IV_BENCH_HOOKS ?? 5);
  const counts = (process.env.IV_BENCH_GUESTS ?? '1,8').split(',').map(Number).filter((n) => n > 0);
  const points: ScalePoint[] = [];
  const restorer = process.env.IV_BENCH_RESTORE === '0' ? null : new Restorer(mkdtempSync(join(tmpdir(), 'iv-bench-state-')), Math.max(1, Number(process.env.IV_BENCH_SLIDES ?? 1)));
  try {
  for (const n of counts) {
    const run = await startSupervisor(n, intervalSec, restorer);
    if (restorer) console.log(`${n} guest(s) resumed from ${restorer.templateCount} saved state(s): ${percentile(restorer.restoreMs, 50).toFixed(0)} ms median per guest (four at a time)`);
    try {
      // IV_BENCH_READY_SEC: how long every guest may take to its first kernel baseline (default 900).
      const readyUntil = Date.now() + Number(process.env.IV_BENCH_READY_SEC ?? 900) * 1000;
      for (let i = 0; i < n; i++) await waitLine(run, new RegExp(`\\[bench-sc${i}\\] kernel baseline recorded`), 0, Math.max(1, readyUntil - Date.now()));
      await sleep(5_000);
      const db = run.sup.store.db;
      const seq0 = (db.prepare('SELECT coalesce(max(seq), 0) AS s FROM events').get() as { s: number }).s;
      const scans0 = run.sup.watches.reduce((s, w) => s + w.scans, 0);
      const agent0 = run.sup.watches.reduce((s, w) => s + (w.agentReports ?? 0), 0);
      const wall0 = run.sup.watches.map((w) => w.lastScan?.durationMs ?? 0);
      const guestCpu0 = run.sup.controllers.map((c) => procCpuMs(c.qemuPid));
      // IV_BENCH_CPUPROF=DIR: a CPU profile of the measuring window only (not boot, discovery or the hooks).
      const prof = process.env.IV_BENCH_CPUPROF ? new Session() : null;
      if (prof) { prof.connect(); await prof.post('Profiler.enable'); await prof.post('Profiler.start'); }
      const cpu0 = process.cpuUsage();
      const t0 = Date.now();
      await sleep(windowSec * 1000);
      const cpu = process.cpuUsage(cpu0);
      if (prof) {
        const { profile } = await prof.post('Profiler.stop');
        writeFileSync(join(process.env.IV_BENCH_CPUPROF as string, `scale-${n}.cpuprofile`), JSON.stringify(profile));
        prof.disconnect();
      }
      const wallMs = Date.now() - t0;
      const scans = run.sup.watches.reduce((s, w) => s + w.scans, 0) - scans0;
      const agentPerMin = (run.sup.watches.reduce((s, w) => s + (w.agentReports ?? 0), 0) - agent0) * 60_000 / wallMs / n;
      void wall0;
      const guestCpuMs = run.sup.controllers.reduce((s, c, i) => s + procCpuMs(c.qemuPid) - (guestCpu0[i] ?? 0), 0);
      const kinds = db.prepare('SELECT kind, count(*) AS n FROM events WHERE seq > ? GROUP BY kind').all(seq0) as { kind: string; n: number }[];
      const eventsByKind = Object.fromEntries(kinds.map((k) => [k.kind, +(k.n * 60_000 / wallMs).toFixed(1)]));
      const mem = privateMiB();
      const lat: number[] = [];
      for (let h = 0; h < hooks; h++) lat.push(await hookOnce(run, h % n, 169));
      const p: ScalePoint = {
        guests: n, scans, cpuMsPerScan: (cpu.user + cpu.system) / 1000 / Math.max(1, scans), privateMiB: mem,
        eventsPerMin: kinds.reduce((s, k) => s + k.n, 0) * 60_000 / wallMs, eventsByKind,
        guestCpuPct: (guestCpuMs / wallMs) * 100 / n, hookP50Ms: percentile(lat, 50), hookP99Ms: percentile(lat, 99), hooks: lat.length,
      };
      points.push(p);
      console.log(`${n} guest(s), ${(wallMs / 1000).toFixed(0)} s at ${intervalSec} s: ${scans} scans (${(scans / (wallMs / 1000) / n).toFixed(1)} Hz per guest); ` +
        `supervisor CPU ${p.cpuMsPerScan.toFixed(2)} ms per guest-scan (${(((cpu.user + cpu.system) / 1000 / wallMs) * 100).toFixed(1)} % of a core); private ${mem.toFixed(0)} MiB; ` +
        `events ${p.eventsPerMin.toFixed(1)}/min ${JSON.stringify(eventsByKind)}; guests' CPU ${p.guestCpuPct.toFixed(0)} % of a core each, ${agentPerMin.toFixed(1)} agent reports (ps in the guest) per guest-minute; ` +
        `synthetic hook to finding p50 ${p.hookP50Ms.toFixed(0)} ms, p99 ${p.hookP99Ms.toFixed(0)} ms (n=${lat.length}); load ${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')}`);
    } finally {
      // IV_BENCH_LOG=FILE: the supervisor's log lines of the last count (to see why a wait failed).
      if (process.env.IV_BENCH_LOG) writeFileSync(process.env.IV_BENCH_LOG, run.lines.map((l) => `${new Date(l.atMs).toISOString()} ${l.line}`).join('\n') + '\n');
      await run.sup.stop();
      await restorer?.stopAll();
      rmSync(run.dir, { recursive: true, force: true });
    }
  }
  } finally {
    restorer?.remove();
  }
  if (process.env.IV_BENCH_SVG) writeFileSync(process.env.IV_BENCH_SVG, svgPlot(points));
  console.log(JSON.stringify(points));
}
