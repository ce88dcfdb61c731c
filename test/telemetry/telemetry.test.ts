// Telemetry against a real mosquitto with TLS and client certificates:
// every event kind arrives on its topic and validates against its schema,
// the device state is retained "online", and the Last Will marks the device
// offline when the supervisor process dies.
import t from 'tap';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import mqtt, { type MqttClient } from 'mqtt';
import { EventStore } from '../../src/store/event-store.js';
import { Telemetry } from '../../src/telemetry/telemetry.js';
import { sampleHostMetrics } from '../../src/telemetry/host-metrics.js';
import { parseRecordedEvent, parseDeviceState } from '../../src/events/schemas.js';
import { EVENT_KINDS, type RecordedEvent } from '../../src/events/types.js';
import { Mosquitto, subscribeAll } from './broker-fixture.js';
import { sampleEvents } from './sample-events.js';
import type { ChildConfig } from './fixtures/supervisor-child.js';

const here = dirname(fileURLToPath(import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'iv-telemetry-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

function collect(c: MqttClient): { messages: { topic: string; payload: string; retain: boolean }[]; waitFor(pred: (m: { topic: string; payload: string; retain: boolean }) => boolean, ms: number, what: string): Promise<{ topic: string; payload: string; retain: boolean }> } {
  const messages: { topic: string; payload: string; retain: boolean }[] = [];
  const waiters: (() => void)[] = [];
  c.on('message', (topic, payload, packet) => {
    messages.push({ topic, payload: payload.toString(), retain: packet.retain });
    for (const w of waiters.splice(0)) w();
  });
  return {
    messages,
    waitFor: (pred, ms, what) => new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}; got ${messages.length} messages: ${messages.slice(-5).map((m) => m.topic).join(', ')}`)), ms);
      const check = (): void => {
        const m = messages.find(pred);
        if (m) { clearTimeout(timer); resolve(m); } else waiters.push(check);
      };
      check();
    }),
  };
}

t.test('every event kind arrives over TLS with a payload that validates against its schema', async (t) => {
  const broker = await Mosquitto.start({ tls: true });
  t.teardown(() => broker.stop());
  const consumer = await broker.client('central');
  t.teardown(() => { consumer.end(true); });
  await subscribeAll(consumer, ['introvisor/dev1/#']);
  const got = collect(consumer);

  const store = new EventStore({ path: join(dir, 'kinds.db'), deviceId: 'dev1' });
  const telemetry = new Telemetry({ store, broker: broker.brokerConfig('introvisor-dev1'), softwareVersion: '0.1.0-test', policyVersion: () => 3 });
  t.teardown(async () => { await telemetry.stop(); store.close(); });
  telemetry.start();

  const state = await got.waitFor((m) => m.topic === 'introvisor/dev1/state', 10_000, 'device state');
  const s = parseDeviceState(JSON.parse(state.payload), state.topic);
  t.equal(s.payload.state, 'online');
  t.equal(s.payload.policyVersion, 3);

  const recorded: RecordedEvent[] = sampleEvents('lab1').map((e) => store.record(e));
  recorded.push(store.record({ kind: 'host-metrics', payload: await sampleHostMetrics() }));
  recorded.push(store.record({ kind: 'operator-action', payload: { guest: 'lab1', who: 'local cli uid 0 pid 4242', peer: { uid: 0, pid: 4242 }, operation: 'action', detail: 'reboot-os', outcome: 'ok', error: null, startedAtMs: Date.now() - 30, durationMs: 26_012 } }));
  // outbox-dropped only happens on overflow; the outage test and the store test make it happen for real.
  await telemetry.waitDrained(10_000);
  const seen = new Set<string>();
  for (const r of recorded) {
    const topic = r.kind === 'guest-health' ? 'introvisor/dev1/guest/lab1/health' : `introvisor/dev1/events/${r.kind}`;
    const m = await got.waitFor((m) => m.topic === topic && (JSON.parse(m.payload) as { id: string }).id === r.id, 5000, `${r.kind} on ${topic}`);
    const parsed = parseRecordedEvent(JSON.parse(m.payload), topic);
    t.same(parsed, JSON.parse(JSON.stringify(r)), `${r.kind}: arrives intact on ${topic} and validates`);
    seen.add(r.kind);
  }
  const journalKinds = EVENT_KINDS.filter((k) => k !== 'device-state' && k !== 'outbox-dropped');
  t.same([...seen].sort(), [...journalKinds].sort(), 'every journal kind was published');
  t.equal(store.outboxStats().pending, 0, 'all marked delivered on PUBACK');

  // Retained topics are there for a consumer that connects later.
  const late = await broker.client('late-dashboard');
  t.teardown(() => { late.end(true); });
  const lateGot = collect(late);
  await subscribeAll(late, ['introvisor/dev1/state', 'introvisor/dev1/guest/+/health']);
  const h = await lateGot.waitFor((m) => m.topic === 'introvisor/dev1/guest/lab1/health', 5000, 'retained health');
  t.ok(h.retain, 'guest health is retained');
  t.equal((parseRecordedEvent(JSON.parse(h.payload), h.topic).payload as { health: string }).health, 'recovering');
  t.ok((await lateGot.waitFor((m) => m.topic === 'introvisor/dev1/state', 5000, 'retained state')).retain, 'state is retained');
});

t.test('the broker refuses a client without a certificate', async (t) => {
  const broker = await Mosquitto.start({ tls: true });
  t.teardown(() => broker.stop());
  const tls = broker.tls;
  if (!tls) throw new Error('no tls');
  const c = mqtt.connect(broker.url, { ca: readFileSync(tls.caPath), reconnectPeriod: 0, connectTimeout: 3000 });
  const outcome = await new Promise<string>((resolve) => {
    c.once('connect', () => resolve('connected'));
    c.once('error', (e) => resolve(`error: ${e.message}`));
    c.once('close', () => resolve('closed'));
  });
  c.end(true);
  t.not(outcome, 'connected', `no certificate, no connection (${outcome})`);
});

t.test('the Last Will marks the device offline when the supervisor process dies', async (t) => {
  const broker = await Mosquitto.start({ tls: true });
  t.teardown(() => broker.stop());
  const consumer = await broker.client('central-lwt');
  t.teardown(() => { consumer.end(true); });
  const got = collect(consumer);
  await subscribeAll(consumer, ['introvisor/dev-lwt/state']);

  const cfg: ChildConfig = { dbPath: join(dir, 'lwt.db'), deviceId: 'dev-lwt', broker: broker.brokerConfig('introvisor-dev-lwt'), first: 1, count: 10, batch: 10, then: 'hold' };
  const child = spawn(process.execPath, [join(here, 'fixtures', 'supervisor-child.js'), JSON.stringify(cfg)], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL'); });
  createInterface({ input: child.stdout }).on('line', () => { /* progress lines; not needed here */ });

  const online = await got.waitFor((m) => m.payload.includes('"online"'), 15_000, 'online state');
  t.equal(parseDeviceState(JSON.parse(online.payload), online.topic).payload.state, 'online');
  const onlineCount = got.messages.length;
  child.kill('SIGKILL');
  const offline = await got.waitFor((m, ) => got.messages.indexOf(m) >= onlineCount && m.payload.includes('"offline"'), 15_000, 'offline state from the Last Will');
  const parsed = parseDeviceState(JSON.parse(offline.payload), offline.topic);
  t.equal(parsed.payload.state, 'offline', 'LWT published offline after SIGKILL');
  t.equal(parsed.device, 'dev-lwt');
});

t.test('an overflowing outbox tells the broker what it dropped (outbox-dropped arrives and validates)', async (t) => {
  const broker = await Mosquitto.start({ tls: true });
  t.teardown(() => broker.stop());
  const consumer = await broker.client('central-overflow');
  t.teardown(() => { consumer.end(true); });
  await subscribeAll(consumer, ['introvisor/dev-ovf/events/#']);
  const got = collect(consumer);
  // Recorded while no broker connection exists yet, into an outbox bounded at 100.
  const store = new EventStore({ path: join(dir, 'overflow.db'), deviceId: 'dev-ovf', outboxLimit: 100 });
  const warn = (): void => { /* the drop warning is expected here */ };
  process.on('warning', warn);
  t.teardown(() => { process.off('warning', warn); });
  for (let i = 0; i < 300; i++) store.record(sampleEvents('lab1')[0] as never);
  t.ok(store.outboxStats().pending <= 100, 'bounded');
  const dropped = store.outboxStats().droppedTotal;
  t.ok(dropped >= 200, `dropped ${dropped}`);
  const telemetry = new Telemetry({ store, broker: broker.brokerConfig('introvisor-dev-ovf'), softwareVersion: 'test' });
  t.teardown(async () => { await telemetry.stop(); store.close(); });
  telemetry.start();
  await telemetry.waitDrained(10_000);
  const notices = await got.waitFor((m) => m.topic === 'introvisor/dev-ovf/events/outbox-dropped', 5000, 'outbox-dropped');
  const e = parseRecordedEvent(JSON.parse(notices.payload), notices.topic);
  t.equal(e.kind, 'outbox-dropped');
  await new Promise((r) => setTimeout(r, 200));
  const all = got.messages.filter((m) => m.topic === 'introvisor/dev-ovf/events/outbox-dropped').map((m) => parseRecordedEvent(JSON.parse(m.payload), m.topic));
  const sum = all.reduce((n, x) => n + (x.kind === 'outbox-dropped' ? x.payload.dropped : 0), 0);
  const scans = got.messages.filter((m) => m.topic === 'introvisor/dev-ovf/events/scan').length;
  t.equal(scans + sum, 300, `the scans that arrived (${scans}) and the drops the notices report (${sum}) add up to all 300 recorded`);
  t.equal(sum, dropped, 'and match the store\'s count');
});
