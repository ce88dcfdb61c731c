// The record/report services as the supervisor starts them: config checks, then
// store + TLS telemetry + OTA + host metrics + web against a real mosquitto.
import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createPrivateKey } from 'node:crypto';
import { EventStore } from '../../src/store/event-store.js';
import { startServices } from '../../src/supervisor/services.js';
import { parseSupervisorConfig, type ReportConfig } from '../../src/supervisor/config.js';
import { generateSigningKey } from '../../src/ota/keyring.js';
import { createBundle } from '../../src/ota/bundle.js';
import { parseRecordedEvent } from '../../src/events/schemas.js';
import { Mosquitto, subscribeAll } from '../telemetry/broker-fixture.js';

const parseReport = (report: unknown, where: string, baseDir: string): ReportConfig => {
  const c = parseSupervisorConfig({ version: 1, database: 'x.db', guests: [{ name: 'a', image: { lab: true } }], report }, where, baseDir);
  if (!c.report) throw new Error('no report section');
  return c.report;
};

t.test('config: errors name the field; relative paths resolve against the config folder', async (t) => {
  t.throws(() => parseReport({}, 'cfg.json', '/etc/iv'), /\/report\/policyDir is required/);
  t.throws(() => parseReport({ policyDir: 'p', mqtt: { url: 'mqtts://h:8883' } }, 'cfg.json', '/etc/iv'), /\/report\/mqtt\/tls is required for mqtts/);
  t.throws(() => parseReport({ policyDir: 'p', web: { host: '0.0.0.0', port: 'x' } }, 'cfg.json', '/etc/iv'), /\/report\/web\/port must be integer/);
  const c = parseReport({ policyDir: 'policy', mqtt: { url: 'mqtts://h:8883', tls: { ca: 'ca.crt', cert: '/abs/c.crt', key: 'c.key' } } }, 'cfg.json', '/etc/iv');
  t.equal(c.policyDir, '/etc/iv/policy');
  t.same(c.mqtt?.tls, { ca: '/etc/iv/ca.crt', cert: '/abs/c.crt', key: '/etc/iv/c.key' });
});

t.test('the service: events to the broker, host metrics, OTA, web status', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'iv-rr-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const broker = await Mosquitto.start({ tls: true });
  t.teardown(() => broker.stop());
  const tls = broker.tls;
  if (!tls) throw new Error('no tls');
  const key = generateSigningKey();
  mkdirSync(join(dir, 'keyring'));
  writeFileSync(join(dir, 'keyring', 'ops.pub'), key.publicPem);
  writeFileSync(join(dir, 'web.token'), 'token-for-the-web-page-0001\n');

  const central = await broker.client('central-rr');
  t.teardown(() => { central.end(true); });
  const seen: { topic: string; payload: string }[] = [];
  central.on('message', (topic, payload) => seen.push({ topic, payload: payload.toString() }));
  await subscribeAll(central, ['introvisor/dev-rr/#']);

  const cfg = parseReport({
    policyDir: 'policy', groups: ['fleet-a'], hostMetricsIntervalSec: 0.2,
    mqtt: { url: broker.url, tls: { ca: tls.caPath, cert: tls.certPath, key: tls.keyPath } },
    ota: { keyringDir: 'keyring' },
    web: { host: '127.0.0.1', port: 0, tokenFile: 'web.token' },
  }, 'test config', dir);
  const store = new EventStore({ path: join(dir, 'events.db'), deviceId: 'dev-rr' });
  const logs: string[] = [];
  const rr = await startServices(store, cfg, { softwareVersion: '0.1.0', log: (l) => logs.push(l), storeHealth: () => ({ ok: true, error: null, sinceMs: null, pending: 0, dropped: 0 }) });
  t.teardown(async () => { await rr.stop(); store.close(); });
  t.equal(rr.policy.current()?.version, 0, 'starts on the defaults');
  t.equal(rr.policy.current()?.policy.maxActionsPerHour, 12);

  const until = async (what: string, pred: () => boolean, ms = 15_000): Promise<void> => {
    const end = Date.now() + ms;
    while (!pred()) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}; logs: ${logs.join(' | ')}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  await until('host metrics on the broker', () => seen.some((m) => m.topic === 'introvisor/dev-rr/events/host-metrics'));
  const hm = seen.find((m) => m.topic === 'introvisor/dev-rr/events/host-metrics');
  const metrics = parseRecordedEvent(JSON.parse(hm?.payload ?? '{}'), 'host-metrics');
  t.ok(metrics.kind === 'host-metrics' && metrics.payload.memTotalBytes > 0, 'real host metrics, valid');
  await until('initial policy/state', () => seen.some((m) => m.topic === 'introvisor/dev-rr/policy/state'));

  const bundle = createBundle({ version: 2, target: { group: 'fleet-a' }, issuedAtMs: Date.now(), policy: { version: 1, maxActionsPerHour: 40 } }, createPrivateKey(key.privatePem));
  central.publish('introvisor/group/fleet-a/policy/set', JSON.stringify(bundle), { qos: 1 });
  await until('policy applied', () => rr.policy.current()?.version === 2);
  t.equal(rr.policy.current()?.policy.maxActionsPerHour, 40, 'group bundle applied live');

  const web = rr.web;
  if (!web) throw new Error('no web');
  const res = await fetch(new URL('/api/status', web.url), { headers: { authorization: 'Bearer token-for-the-web-page-0001' } });
  const status = (await res.json()) as { device: string; policyVersion: number; telemetry: { connected: boolean } };
  t.equal(status.device, 'dev-rr');
  t.equal(status.policyVersion, 2);
  t.equal(status.telemetry.connected, true);
  t.equal((await fetch(new URL('/api/status', web.url))).status, 401, 'token file honoured on loopback too');
  t.ok(logs.some((l) => /policy update on introvisor\/group\/fleet-a\/policy\/set: applied/.test(l)), 'the outcome is logged');
});
