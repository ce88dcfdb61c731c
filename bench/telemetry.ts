// Telemetry figures against a real local mosquitto (the test fixture):
// durable record rate (synchronous=FULL), events per second from record to
// the consumer (plain and TLS), and the outbox replay rate after an outage.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EventStore } from '../src/store/event-store.js';
import { Telemetry } from '../src/telemetry/telemetry.js';
import type { EventInput } from '../src/events/types.js';
import { Mosquitto, subscribeAll } from '../test/telemetry/broker-fixture.js';
import { median } from './stats.js';

const scan = (n: number): EventInput => ({
  kind: 'scan',
  payload: { guest: 'bench', startedAtMs: Date.now(), durationMs: 1, outcome: 'clean', findings: 0, error: null, policyVersion: 1, stats: { n, tasks: 87, modules: 31 } },
});

const seconds = (t0: bigint): number => Number(process.hrtime.bigint() - t0) / 1e9;

async function consumerFor(broker: Mosquitto, id: string, device: string): Promise<{ count(): number; close(): void }> {
  const c = await broker.client(id);
  const ids = new Set<string>();
  c.on('message', (_t, payload) => { ids.add((JSON.parse(payload.toString()) as { id: string }).id); });
  await subscribeAll(c, [`introvisor/${device}/events/#`]);
  return { count: () => ids.size, close: () => { c.end(true); } };
}

async function until(pred: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`bench: timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

export async function bench(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'iv-bench-tel-'));
  try {
    // 1. Durable record rate.
    {
      const store = new EventStore({ path: join(dir, 'rate.db'), deviceId: 'bench', outboxLimit: 0 });
      let t0 = process.hrtime.bigint();
      for (let i = 0; i < 300; i++) store.record(scan(i));
      const single = 300 / seconds(t0);
      t0 = process.hrtime.bigint();
      for (let i = 0; i < 100; i++) store.recordMany(Array.from({ length: 100 }, (_, j) => scan(i * 100 + j)));
      const batched = 10_000 / seconds(t0);
      store.close();
      console.log(`record() one event per fsync (synchronous=FULL):  ${single.toFixed(0)} events/s`);
      console.log(`recordMany() 100 events per fsync:                 ${batched.toFixed(0)} events/s`);
    }

    // 2. Record -> outbox -> broker -> consumer, live.
    for (const tls of [false, true]) {
      const broker = await Mosquitto.start({ tls });
      try {
        const rates: number[] = [];
        for (let round = 0; round < 3; round++) {
          const device = `bench-live-${round}`;
          const consumer = await consumerFor(broker, `c-live-${round}`, device);
          const store = new EventStore({ path: join(dir, `live-${tls}-${round}.db`), deviceId: device });
          const telemetry = new Telemetry({ store, broker: broker.brokerConfig(`p-live-${round}`), softwareVersion: 'bench' });
          const connected = new Promise((r) => telemetry.once('connected', () => r(null)));
          telemetry.start();
          await connected;
          const N = 20_000;
          const t0 = process.hrtime.bigint();
          for (let i = 0; i < N / 100; i++) {
            store.recordMany(Array.from({ length: 100 }, (_, j) => scan(i * 100 + j)));
            await new Promise((r) => setImmediate(r));
          }
          await until(() => consumer.count() >= N, 120_000, `${N} live events`);
          rates.push(N / seconds(t0));
          await telemetry.stop();
          store.close();
          consumer.close();
        }
        console.log(`events/s to the broker, recorded in batches of 100 and received by a consumer (${tls ? 'TLS + client cert' : 'plain TCP'}): median ${median(rates).toFixed(0)} (runs ${rates.map((r) => r.toFixed(0)).join(', ')})`);
      } finally {
        await broker.stop();
      }
    }

    // 3. Outbox replay after an outage: the backlog is already on disk; time from connect to the consumer having it all.
    {
      const broker = await Mosquitto.start({ tls: true });
      try {
        const rates: number[] = [];
        for (let round = 0; round < 3; round++) {
          const device = `bench-replay-${round}`;
          const consumer = await consumerFor(broker, `c-replay-${round}`, device);
          const store = new EventStore({ path: join(dir, `replay-${round}.db`), deviceId: device });
          const N = 20_000;
          for (let i = 0; i < N / 500; i++) store.recordMany(Array.from({ length: 500 }, (_, j) => scan(i * 500 + j)));
          const telemetry = new Telemetry({ store, broker: broker.brokerConfig(`p-replay-${round}`), softwareVersion: 'bench' });
          const t0 = process.hrtime.bigint();
          telemetry.start();
          await telemetry.waitDrained(120_000);
          await until(() => consumer.count() >= N, 120_000, `${N} replayed events`);
          rates.push(N / seconds(t0));
          await telemetry.stop();
          store.close();
          consumer.close();
        }
        console.log(`outbox replay of a 20,000-event backlog over TLS (connect to all received, outbox emptied): median ${median(rates).toFixed(0)} events/s (runs ${rates.map((r) => r.toFixed(0)).join(', ')})`);
      } finally {
        await broker.stop();
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
