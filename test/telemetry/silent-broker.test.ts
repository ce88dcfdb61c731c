// A broker that stops acknowledging (a real mosquitto, SIGSTOPped: its sockets
// stay open, nothing answers) is noticed: after the PUBACK deadline telemetry
// drops the session, logs it, says so in its status (not connected, the last
// acknowledgement time, the real backlog), keeps trying, and delivers the
// whole backlog once the broker runs again.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EventStore } from '../../src/store/event-store.js';
import { Telemetry } from '../../src/telemetry/telemetry.js';
import type { EventInput } from '../../src/events/types.js';
import { Mosquitto } from './broker-fixture.js';
import { sleep } from '../../src/util/deadline.js';

const scan = (n: number): EventInput => ({
  kind: 'scan',
  payload: { guest: 'g1', startedAtMs: Date.now(), durationMs: 1, outcome: 'clean', findings: 0, error: null, policyVersion: 1, stats: { n } },
});

async function until(pred: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`not within ${ms} ms: ${what}`);
    await sleep(50);
  }
}

t.test('a SIGSTOPped broker: deadline, reconnect, logged, real backlog; all delivered after SIGCONT', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'iv-silent-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const broker = await Mosquitto.start();
  t.teardown(async () => { broker.thaw(); await broker.stop(); });
  const store = new EventStore({ path: join(dir, 'e.db'), deviceId: 'dev-silent' });
  t.teardown(() => store.close());
  const logged: string[] = [];
  // keepalive far beyond the test: only the PUBACK deadline can notice.
  const telemetry = new Telemetry({
    store, broker: { ...broker.brokerConfig('introvisor-dev-silent'), keepaliveS: 600 }, softwareVersion: 'test',
    ackTimeoutMs: 1_500, backoff: { initialMs: 200, maxMs: 1_000 }, log: (l) => logged.push(l),
  });
  t.teardown(() => telemetry.stop());
  telemetry.start();
  for (let i = 0; i < 10; i++) store.record(scan(i));
  await telemetry.waitDrained(10_000);
  const firstAck = telemetry.status().lastAckAtMs;
  t.ok(firstAck !== null, 'acknowledgements are timed');

  broker.freeze();
  for (let i = 10; i < 60; i++) store.record(scan(i));
  await until(() => telemetry.status().ackStalls > 0, 8_000, 'the stall noticed');
  const st = telemetry.status();
  t.equal(st.connected, false, 'not shown as connected');
  t.match(st.lastError, /acknowledged nothing for \d+ ms with \d+ messages in flight .*; reconnecting/);
  t.equal(st.pending, 50, 'the backlog is the 50 unacknowledged events');
  t.equal(st.lastAckAtMs, firstAck, 'the last acknowledgement is the one before the stall');
  t.match(logged, [/telemetry: broker mqtt:\/\/127\.0\.0\.1:\d+ acknowledged nothing/], 'and it was logged');

  broker.thaw();
  await telemetry.waitDrained(20_000);
  t.equal(telemetry.status().pending, 0, 'everything delivered after the broker runs again');
  t.ok((telemetry.status().lastAckAtMs ?? 0) > (firstAck ?? 0));
  t.ok(telemetry.status().connected);
});
