// The write-trap chain end to end, run inside the nested guest (L1) that
// test/trap/chain/run-chain.sh boots with the patched KVM: the supervisor
// (`Supervisor` with the config `introvisor run` takes, report section
// included) guards a lab guest (L2, QEMU under KVM), arms the trap on its
// sys_call_table, a rootkit module in L2 tries to hook two entries, and the
// refused writes must reach SQLite, MQTT and the web API, be counted as a
// finding, leave the table intact, and the trap must re-arm after the
// ladder's image restore. The supervisor runs in this process, like the
// e2e tests' harness, because the attack goes in through its guest agent:
// QEMU's agent socket takes one client at a time.
//   node chain-check.js gp|drop
// Prints TAP ("ok N - ..."), exits 0 only if every check passed.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { loadLabImages } from '../../../lab/lab-images.js';
import { payloadProblem } from '../../../src/events/schemas.js';
import { settlesWithin, sleep } from '../../../src/util/deadline.js';
import { errorMessage } from '../../../src/util/errors.js';
import { Mosquitto, freePort } from '../../telemetry/broker-fixture.js';
import { LiveSupervisor } from '../../supervisor/harness.js';
import { TapLines } from '../node/tap-lines.js';

const action = process.argv[2];
if (action !== 'gp' && action !== 'drop') {
  console.error('usage: chain-check.js gp|drop');
  process.exit(2);
}

const tap = new TapLines(action);
const check = tap.check.bind(tap);
const t0 = Date.now();
const secs = (ms = Date.now()): string => ((ms - t0) / 1000).toFixed(1);

const GUEST = 'chain';
// The syscall slots whose writes are refused: gp stops the module at its first store.
const hooked = action === 'gp' ? [39] : [39, 62];
const DEVICE = 'chain-dev';
const dir = mkdtempSync(join(tmpdir(), 'iv-chain-'));
const runDir = join(dir, 'run');
const dbPath = join(dir, 'introvisor.db');
const broker = await Mosquitto.start();
const webPort = await freePort();
// The default ladders for a refused write or changed kernel are an image restore at once; here they
// confirm over 3 scans first, so the test can read the attacked guest's dmesg before the restore.
writeFileSync(join(dir, 'policy.json'), JSON.stringify({
  version: 1,
  maxActionsPerHour: 30,
  onExhausted: { hold: 'keep-running', alert: true },
  faults: {
    'syscall-write-refused': { confirmScans: 3, resetWindowSec: 600, ladder: [{ action: 'restore-image', count: 1, verifyTimeoutSec: 300, backoffSec: 0 }] },
    // The hook module finds kallsyms_lookup_name through a kprobe, which patches kernel text while it is
    // registered: a scan in that window sees the text hash changed. Confirmed as slowly, so such a
    // transient does not restore the image before the checks below have read the guest.
    'kernel-integrity-changed': { confirmScans: 3, resetWindowSec: 600, ladder: [{ action: 'restore-image', count: 1, verifyTimeoutSec: 300, backoffSec: 0 }] },
  },
}));
const configPath = join(dir, 'supervisor.json');
writeFileSync(configPath, JSON.stringify({
  version: 1,
  database: dbPath,
  deviceId: DEVICE,
  policy: 'policy.json',
  scanIntervalSec: 2,
  runDir,
  onExit: 'stop-guests',
  writeTrap: action,
  guests: [{ name: GUEST, image: { lab: true }, memoryMiB: 256, cpus: 1, accel: 'kvm', critical: [{ name: 'csdtest', start: ['/data/bin/csdtest', '-d'] }] }],
  report: { policyDir: join(dir, 'policy-store'), mqtt: { url: broker.url }, web: { host: '127.0.0.1', port: webPort }, hostMetricsIntervalSec: 600 },
}));

// The central consumer: every event the device publishes.
const consumer = await broker.client('chain-consumer');
const published: { topic: string; body: unknown }[] = [];
consumer.on('message', (topic, buf) => {
  try { published.push({ topic, body: JSON.parse(buf.toString('utf8')) as unknown }); } catch { published.push({ topic, body: null }); }
});
await consumer.subscribeAsync(`introvisor/${DEVICE}/events/#`, { qos: 1 });

// The supervisor, as `introvisor run --config` builds it.
const live = new LiveSupervisor({ configPath, guest: GUEST }, (line) => console.log(`# ${secs()} sup: ${line}`.slice(0, 400)));
const lines = live.lines;
let stopped = false;
const stopSupervisor = async (): Promise<boolean> => {
  if (stopped) return true;
  const stopping = live.stop();
  stopped = await settlesWithin(stopping, 120_000);
  if (stopped) await stopping; // its error, if any, is the check's
  return stopped;
};

/** The first supervisor log line from `from` on matching re, or null after timeoutMs (a failed check, not an exception). */
const waitFor = (re: RegExp, timeoutMs: number, from = 0): Promise<{ atMs: number; line: string; index: number } | null> =>
  live.waitFor(re, timeoutMs, from).catch(() => null);

async function main(): Promise<void> {
  await live.start();
  const unavailable = await waitFor(/trap unavailable|write trap (error|attached)/, 300_000);
  check(unavailable !== null && /attached/.test(unavailable.line), `the trap attached to the guest's QEMU (${secs(unavailable?.atMs)} s)`, unavailable?.line ?? 'no trap line');
  const armed = await waitFor(/write trap armed \((gp|drop)\) on sys_call_table/, 300_000);
  if (!check(armed !== null && armed.line.includes(`(${action})`), `the trap armed (${action}) on sys_call_table after the first clean scan (${secs(armed?.atMs)} s)`, lines.slice(-10).map((l) => l.line))) return;
  const armedIdx = (armed as { index: number }).index;
  // The dispatch switches (6.1.85+) are decoded live, in a child process of the supervisor.
  const decoded = await waitFor(/dispatch switches decoded in a child process/, 300_000);
  check(decoded !== null && !/attempt \d/.test(decoded.line), `the supervisor decoded the dispatch switches in a child process (${secs(decoded?.atMs)} s)`, decoded?.line ?? 'no decoder line');

  // The supervisor's own agent connection (the VM's only one).
  const agent = await live.agent();
  const kallsyms = await agent.shell("grep -E ' (sys_call_table|__x64_sys_getpid|__x64_sys_kill)$' /proc/kallsyms", { timeoutMs: 60_000 });
  const sym = (name: string): bigint | null => {
    const m = new RegExp(`^([0-9a-f]+) \\S+ ${name}$`, 'm').exec(kallsyms);
    return m ? BigInt(`0x${m[1] as string}`) : null;
  };
  const table = sym('sys_call_table');
  check(table !== null && table !== 0n, 'L2 names sys_call_table in /proc/kallsyms', kallsyms);

  // The attack: a module that clears CR0.WP and rewrites sys_call_table[39], then [62]. Under
  // gp the first store faults, so the module's init dies before it tries 62; under drop both
  // stores "complete" and the module reads back the untouched entries.
  const hook = loadLabImages().attackModules.syscallHook;
  const attackedAt = Date.now();
  const insmod = await agent.exec('/bin/sh', ['-c', `insmod ${hook} nrs=39,62 2>&1; echo "insmod exit $?"`], { timeoutMs: 120_000 }).catch((e: unknown) => ({ error: errorMessage(e) }));
  const insmodOut = 'error' in insmod ? insmod.error : insmod.stdout.toString();
  console.log(`# ${secs()} insmod in L2: ${insmodOut.trim().replace(/\n/g, ' | ')}`);

  // What the guest itself saw, read at once: the policy confirms over 3 scans, then restores the image.
  // Only the lines about the module and the fault: an oops is long, and the kernel may log more after it.
  const dmesg = await agent.shell("dmesg | grep -E 'iv_syscall_hook|iv_init|general protection|RIP:'", { timeoutMs: 60_000 }).catch((e: unknown) => `(dmesg failed: ${errorMessage(e)})`);
  const dmesgHook = dmesg.trim().split('\n').join(' | ');
  if (action === 'gp') {
    check(/general protection fault/.test(dmesg) && /iv_init/.test(dmesg), 'the rootkit store took a #GP in L2, in the module\'s init', dmesgHook);
    check(!/insmod exit 0/.test(insmodOut) && !/iv_syscall_hook: sys_call_table\[/.test(dmesg), 'insmod did not succeed and the module never reported a hook', { insmodOut, dmesgHook });
  } else {
    check(/insmod exit 0/.test(insmodOut), 'insmod completed in L2 (the stores were silently discarded)', insmodOut);
    // The module prints each entry before and after its store (%ps: a handler's alias may show, e.g. __do_sys_getpid).
    const readBack = (nr: number): boolean => {
      const m = new RegExp(`sys_call_table\\[${nr}\\] (\\S+) -> (\\S+)`).exec(dmesg);
      return m !== null && m[1] === m[2] && !/iv_hook/.test(m[2] as string);
    };
    check(readBack(39) && readBack(62), 'the module read back the original handlers after its stores to [39] and [62]', dmesgHook);
  }
  const refused39 = await waitFor(/REFUSED write to sys_call_table\[39\]/, 120_000, armedIdx);
  check(refused39 !== null, `the supervisor logged the refused write to sys_call_table[39] (${refused39 ? refused39.atMs - attackedAt : '-'} ms after insmod)`);
  if (action === 'drop') {
    const refused62 = await waitFor(/REFUSED write to sys_call_table\[62\]/, 30_000, armedIdx);
    check(refused62 !== null, 'the module went on to [62], refused too');
  }
  const finding = await waitFor(/finding raised: syscall-write-refused/, 60_000, armedIdx);
  check(finding !== null, `a syscall-write-refused finding was raised (${finding ? finding.atMs - attackedAt : '-'} ms after insmod)`, finding?.line);

  // Scans ran between the write and the restore: none saw a changed table.
  await waitFor(/action restore-image \(attempt/, 120_000, armedIdx);
  check(!lines.slice(armedIdx).some((l) => /finding raised: syscall-table-changed/.test(l.line)), 'no syscall-table-changed finding: the writes never landed');

  // The web API while the supervisor runs.
  const web = await fetch(`http://127.0.0.1:${webPort}/api/refused-writes?guest=${GUEST}`).then(async (r) => ({ status: r.status, body: await r.json() as unknown })).catch((e: unknown) => ({ status: 0, body: errorMessage(e) }));
  const webRows = Array.isArray(web.body) ? web.body as { entry: number | null; table: string }[] : [];
  check(web.status === 200 && hooked.every((e) => webRows.some((r) => r.entry === e && r.table === 'sys_call_table')), `GET /api/refused-writes lists the refused writes to entries ${hooked.join(', ')}`, web);

  // The ladder restores the image; the new boot's table is protected again.
  const restored = await waitFor(/action restore-image done/, 600_000, armedIdx);
  check(restored !== null, `the ladder restored the image (${restored ? secs(restored.atMs) : '-'} s)`);
  if (restored) {
    const rearmed = await waitFor(/write trap armed \((gp|drop)\) on sys_call_table/, 600_000, restored.index);
    check(rearmed !== null, `the trap re-armed on the restored guest's sys_call_table (${rearmed ? ((rearmed.atMs - restored.atMs) / 1000).toFixed(1) : '-'} s after the restore)`);
    const verified = await waitFor(/ladder syscall-write-refused: verified/, 300_000, restored.index);
    check(verified !== null, 'the ladder verified the guest clean after the restore');
  }

  // Stop the supervisor; then the evidence it left.
  check(await stopSupervisor(), 'the supervisor stopped within 120 s');

  const db = new Database(dbPath, { readonly: true });
  interface Rw { gpa: string; gva: string | null; length: number; rip: string; value: string; protected_table: string; entry: number | null; vcpu: number; action: string | null; source: string | null; trap_seq: number | null; lost_before: number }
  const rows = db.prepare('SELECT * FROM refused_writes WHERE guest = ? ORDER BY seq').all(GUEST) as Rw[];
  check(hooked.every((e) => rows.some((r) => r.entry === e)), `SQLite refused_writes has rows for entries ${hooked.join(', ')} (${rows.length} rows)`, rows);
  for (const e of hooked) {
    const r = rows.find((x) => x.entry === e);
    if (!r) continue;
    const value = r.value.length === 16 ? Buffer.from(r.value, 'hex').readBigUInt64LE() : -1n;
    check(r.protected_table === 'sys_call_table' && r.length === 8, `entry ${e}: an 8-byte write to sys_call_table`, r);
    check(table !== null && r.gva === `0x${(table + BigInt(e) * 8n).toString(16)}`, `entry ${e}: gva is sys_call_table+${e * 8} as L2's kallsyms says`, { gva: r.gva, table: table?.toString(16) });
    check(value >= 0xffffffffc0000000n, `entry ${e}: the refused value ${r.value} points into module space (the hook)`);
    check(BigInt(r.rip) >= 0xffffffffc0000000n, `entry ${e}: the writing rip ${r.rip} is in module space (the rootkit's code)`);
    check(r.action === action && r.source === 'emulated' && (r.trap_seq ?? 0) >= 1 && r.lost_before === 0,
      `entry ${e}: recorded as ${action}, met on KVM's emulated-store path, trap seq ${String(r.trap_seq)}, nothing lost`, r);
  }
  const events = db.prepare("SELECT kind, payload FROM events WHERE guest = ? AND kind IN ('refused-write', 'finding') ORDER BY seq").all(GUEST) as { kind: string; payload: string }[];
  check(events.filter((e) => e.kind === 'refused-write').length >= hooked.length, 'the event journal holds the refused-write events');
  check(events.some((e) => e.kind === 'finding' && (JSON.parse(e.payload) as { fault?: string }).fault === 'syscall-write-refused'), 'the event journal holds the syscall-write-refused finding');
  db.close();

  // MQTT: the same events reached the central broker, valid against their schemas.
  const deadline = Date.now() + 30_000;
  const refusedMsgs = (): { body: unknown }[] => published.filter((m) => m.topic === `introvisor/${DEVICE}/events/refused-write`);
  while (refusedMsgs().length < hooked.length && Date.now() < deadline) await sleep(200);
  const msgs = refusedMsgs().map((m) => m.body as { kind?: string; payload?: { entry?: number } });
  check(hooked.every((e) => msgs.some((m) => m.payload?.entry === e)), `MQTT introvisor/${DEVICE}/events/refused-write carried entries ${hooked.join(', ')} (${msgs.length} messages)`);
  const bad = msgs.map((m) => payloadProblem('refused-write', m.payload)).filter((p) => p !== null);
  check(msgs.length > 0 && bad.length === 0, 'every refused-write message passes its schema', bad);
}

try {
  await main();
} catch (e) {
  check(false, `the chain ran without an exception: ${errorMessage(e)}`);
} finally {
  await stopSupervisor().catch(() => false);
  await consumer.endAsync().catch(() => undefined);
  await broker.stop();
}
console.log(`# whole chain ${secs()} s`);
process.exit(tap.plan() ? 0 : 1);
