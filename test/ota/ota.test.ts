// OTA policy updates end to end over a real mosquitto (TLS, client certs):
// a good bundle is applied live and used by the next scan; 28 kinds of bad
// bundle are refused with their reason on the retained policy/state and the
// running policy stays exactly as it was; a bundle the watchdog cannot load
// is rolled back. The policy schema is the watchdog's (src/policy/schema.ts).
import t from 'tap';
import { createHash, createPrivateKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync, readFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { MqttClient } from 'mqtt';
import { EventStore } from '../../src/store/event-store.js';
import { Telemetry } from '../../src/telemetry/telemetry.js';
import { Keyring, generateSigningKey } from '../../src/ota/keyring.js';
import { createBundle, signEnvelope, BUNDLE_FORMAT, type BundleEnvelope, type SignedContent } from '../../src/ota/bundle.js';
import { FilePolicyStore } from '../../src/ota/policy-store.js';
import { OtaAgent, parsePolicyState, type PolicyStateMessage } from '../../src/ota/ota-agent.js';
import { validatePolicy } from '../../src/policy/schema.js';
import type { Policy } from '../../src/policy/types.js';
import { Mosquitto, subscribeAll } from '../telemetry/broker-fixture.js';

const DEVICE = 'dev-ota';
const GROUP = 'lab-fleet';

t.test('policy bundles over MQTT: applied, refused with reasons, rolled back', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'iv-ota-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const broker = await Mosquitto.start({ tls: true });
  t.teardown(() => broker.stop());

  // Keys: one the device trusts, one it does not.
  const trusted = generateSigningKey();
  const untrusted = generateSigningKey();
  mkdirSync(join(dir, 'keyring'));
  writeFileSync(join(dir, 'keyring', 'ops.pub'), trusted.publicPem);
  const keyring = Keyring.loadDir(join(dir, 'keyring'));
  t.equal(keyring.get(trusted.keyId)?.name, 'ops');
  const trustedKey = createPrivateKey(trusted.privatePem);
  const untrustedKey = createPrivateKey(untrusted.privatePem);

  // The device: store, policy store, telemetry and OTA agent, as the supervisor wires them.
  const store = new EventStore({ path: join(dir, 'events.db'), deviceId: DEVICE });
  const policies = FilePolicyStore.open<Policy>(join(dir, 'policy'), validatePolicy, { document: { version: 1 }, source: 'file' });
  t.equal(policies.current()?.version, 0, 'starts on the initial policy');
  let telemetry: Telemetry | null = null;
  const agent = new OtaAgent<Policy>({
    deviceId: DEVICE, groups: [GROUP], keyring, store: policies, sink: store, validatePolicy, maxBytes: 64 * 1024,
    publishRetained: (topic, msg) => telemetry?.setRetained(topic, msg),
  });
  telemetry = new Telemetry({ store, broker: broker.brokerConfig(`introvisor-${DEVICE}`), softwareVersion: 'test', subscriptions: agent.subscriptions(), policyVersion: () => policies.current()?.version ?? null });
  telemetry.on('message', (topic, payload) => { void agent.handle(topic, payload); });
  t.teardown(async () => { await telemetry?.stop(); store.close(); });

  // Stand-in for the watchdog: it loads each policy (refusing one it cannot run) and a scan reads the running policy.
  const loaded: number[] = [];
  policies.subscribe((p) => {
    if (p.policy.maxActionsPerHour === 13) throw new Error('ladder engine: cannot load maxActionsPerHour 13 (test refusal)');
    loaded.push(p.version);
  });
  const scan = (): number | null => {
    const p = policies.current();
    store.record({ kind: 'scan', payload: { guest: 'lab1', startedAtMs: Date.now(), durationMs: 1, outcome: 'clean', findings: 0, error: null, policyVersion: p?.version ?? null, stats: { maxActionsPerHour: p?.policy.maxActionsPerHour ?? 0 } } });
    return p?.version ?? null;
  };

  // The operator's side.
  const operator: MqttClient = await broker.client('operator');
  t.teardown(() => { operator.end(true); });
  const states: PolicyStateMessage[] = [];
  const waiters: (() => void)[] = [];
  operator.on('message', (topic, payload) => {
    states.push(parsePolicyState(JSON.parse(payload.toString()), topic));
    for (const w of waiters.splice(0)) w();
  });
  await subscribeAll(operator, [`introvisor/${DEVICE}/policy/state`]);
  const connected = new Promise((r) => telemetry?.once('connected', () => r(null)));
  telemetry.start();
  agent.announce();
  await connected; // subscribed to policy/set from here on
  const stateFor = (sha: string): Promise<PolicyStateMessage> => new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no policy/state for bundle ${sha.slice(0, 12)} within 10 s`)), 10_000);
    const check = (): void => {
      const s = states.find((m) => m.payload.received?.sha256 === sha);
      if (s) { clearTimeout(timer); resolve(s); } else waiters.push(check);
    };
    check();
  });
  const send = async (payload: Buffer | string, topic = `introvisor/${DEVICE}/policy/set`): Promise<PolicyStateMessage> => {
    const buf = Buffer.isBuffer(payload) ? payload : Buffer.from(payload);
    await new Promise<void>((res, rej) => operator.publish(topic, buf, { qos: 1 }, (e) => (e ? rej(e) : res())));
    return stateFor(createHash('sha256').update(buf).digest('hex'));
  };
  const content = (version: number, policy: unknown, target: SignedContent['target'] = { device: DEVICE }): SignedContent => ({ version, target, issuedAtMs: Date.now(), policy });
  const bundle = (c: SignedContent, key: KeyObject = trustedKey): string => JSON.stringify(createBundle(c, key));
  const goodDoc = { version: 1, maxActionsPerHour: 20, faults: { 'hidden-process': { ladder: [{ action: 'reboot-os', count: 1, verifyTimeoutSec: 30, backoffSec: 0 }] } } };

  // --- a good bundle is applied live and used by the next scan ---
  const v5 = bundle(content(5, goodDoc));
  const applied = await send(v5);
  t.equal(applied.payload.status, 'applied', 'good bundle applied');
  t.equal(applied.payload.activeVersion, 5);
  t.equal(applied.payload.activeKeyId, trusted.keyId);
  t.same(loaded, [5], 'the watchdog loaded it without a restart');
  t.equal(scan(), 5, 'the next scan runs under version 5');
  t.equal(policies.current()?.policy.maxActionsPerHour, 20);
  t.equal(policies.current()?.policy.faults['hidden-process'].ladder[0]?.action, 'reboot-os');
  t.equal((JSON.parse(readFileSync(join(dir, 'policy', 'current.json'), 'utf8')) as { version: number }).version, 5, 'on disk');
  t.equal((JSON.parse(readFileSync(join(dir, 'policy', 'previous.json'), 'utf8')) as { version: number }).version, 0, 'previous kept');
  t.equal(await agent.handle(`introvisor/${DEVICE}/policy/set`, Buffer.from(v5)), null, 'the running bundle delivered again is not an update');
  t.equal(await agent.handle(`introvisor/${DEVICE}/policy/set`, Buffer.alloc(0)), null, 'an empty message (clearing a retained bundle) is not an update');

  // --- bad bundles ---
  const good6 = createBundle(content(6, goodDoc), trustedKey);
  const flip = (b64: string, i: number): string => { const b = Buffer.from(b64, 'base64'); b[i] = (b[i] ?? 0) ^ 1; return b.toString('base64'); };
  const env = (e: Partial<BundleEnvelope> & Record<string, unknown>): string => JSON.stringify({ ...good6, ...e });
  const signedRaw = (raw: string, key: KeyObject = trustedKey): string => JSON.stringify(signEnvelope(Buffer.from(raw).toString('base64'), key));
  const ed = generateKeyPairSync('ed25519');
  const forgedKeyId = JSON.stringify({ ...createBundle(content(6, goodDoc), ed.privateKey), keyId: trusted.keyId });
  const otherDeviceBundle = bundle(content(6, goodDoc, { device: 'someone-else' }));
  const bad: { name: string; payload: string | Buffer; code: string; topic?: string }[] = [
    { name: 'signature from another bundle', payload: env({ signature: createBundle(content(7, goodDoc), trustedKey).signature }), code: 'bad-signature' },
    { name: 'one bit flipped in the signature', payload: env({ signature: flip(good6.signature, 10) }), code: 'bad-signature' },
    { name: 'signed content changed after signing', payload: env({ signed: Buffer.from(JSON.stringify(content(6, { ...goodDoc, maxActionsPerHour: 3600 }))).toString('base64') }), code: 'bad-signature' },
    { name: 'signed by an unknown key', payload: bundle(content(6, goodDoc), untrustedKey), code: 'unknown-key' },
    { name: 'unknown key claiming a trusted key id', payload: forgedKeyId, code: 'bad-signature' },
    { name: 'for another device', payload: otherDeviceBundle, code: 'wrong-target' },
    { name: 'for a group the device is not in, on its group topic', payload: bundle(content(6, goodDoc, { group: 'other-fleet' })), code: 'wrong-target', topic: `introvisor/group/${GROUP}/policy/set` },
    { name: 'replay of an older applied version', payload: bundle(content(3, goodDoc)), code: 'not-newer' },
    { name: 'same version as running, different content', payload: bundle(content(5, { ...goodDoc, maxActionsPerHour: 21 })), code: 'not-newer' },
    { name: 'policy: unknown field', payload: bundle(content(6, { ...goodDoc, selfDestruct: true })), code: 'policy-invalid' },
    { name: 'policy: empty ladder', payload: bundle(content(6, { version: 1, faults: { 'hidden-process': { ladder: [] } } })), code: 'policy-invalid' },
    { name: 'policy: unknown action', payload: bundle(content(6, { version: 1, faults: { 'hidden-process': { ladder: [{ action: 'format-disk', count: 1, verifyTimeoutSec: 30, backoffSec: 0 }] } } })), code: 'policy-invalid' },
    { name: 'policy: count 0', payload: bundle(content(6, { version: 1, faults: { 'hidden-process': { ladder: [{ action: 'reboot-os', count: 0, verifyTimeoutSec: 30, backoffSec: 0 }] } } })), code: 'policy-invalid' },
    { name: 'policy: unknown fault kind', payload: bundle(content(6, { version: 1, faults: { 'bad-vibes': {} } })), code: 'policy-invalid' },
    { name: 'policy: schema version 2', payload: bundle(content(6, { version: 2 })), code: 'policy-invalid' },
    { name: 'oversize', payload: bundle(content(6, { ...goodDoc, pad: 'x'.repeat(70 * 1024) })), code: 'oversize' },
    { name: 'truncated JSON', payload: bundle(content(6, goodDoc)).slice(0, 150), code: 'not-json' },
    { name: 'a lone brace', payload: '{', code: 'not-json' },
    { name: 'binary garbage', payload: Buffer.from([0xff, 0xfe, 0x00, 0x13, 0x37]), code: 'not-json' },
    { name: 'JSON but not an object', payload: '[1,2,3]', code: 'bad-envelope' },
    { name: 'missing signature', payload: JSON.stringify({ format: BUNDLE_FORMAT, keyId: good6.keyId, signed: good6.signed }), code: 'bad-envelope' },
    { name: 'wrong format tag', payload: env({ format: 'introvisor-policy-bundle/2' as never }), code: 'bad-envelope' },
    { name: 'extra envelope field', payload: env({ policy: goodDoc }), code: 'bad-envelope' },
    { name: 'signature of the wrong length', payload: env({ signature: Buffer.alloc(32).toString('base64') }), code: 'bad-envelope' },
    { name: 'key id not hex', payload: env({ keyId: 'zz'.repeat(16) }), code: 'bad-envelope' },
    { name: 'signed content is not JSON', payload: signedRaw('{"version": 6, "target": '), code: 'bad-content' },
    { name: 'signed content without target', payload: signedRaw(JSON.stringify({ version: 6, issuedAtMs: 1, policy: goodDoc })), code: 'bad-content' },
    { name: 'fractional version', payload: signedRaw(JSON.stringify({ ...content(6, goodDoc), version: 6.5 })), code: 'bad-content' },
    { name: 'policy is an array', payload: signedRaw(JSON.stringify({ ...content(6, goodDoc), policy: [goodDoc] })), code: 'bad-content' },
  ];
  const before = JSON.stringify(policies.currentStored());
  for (const b of bad) {
    const s = await send(b.payload, b.topic);
    t.equal(s.payload.status, 'rejected', `${b.name}: rejected`);
    t.equal(s.payload.code, b.code, `${b.name}: ${s.payload.code}: ${s.payload.reason ?? ''}`);
    t.ok((s.payload.reason ?? '').length > 10, `${b.name}: with a reason`);
    t.equal(s.payload.activeVersion, 5, `${b.name}: still running version 5`);
  }
  t.ok(bad.length >= 20, `${bad.length} kinds of bad bundle`);
  t.equal(JSON.stringify(policies.currentStored()), before, 'the running policy is unchanged, byte for byte');
  t.same(loaded, [5], 'the watchdog was never handed a bad policy');
  t.equal(scan(), 5);

  // --- a valid bundle the watchdog cannot load is rolled back ---
  const rb = await send(bundle(content(6, { ...goodDoc, maxActionsPerHour: 13 })));
  t.equal(rb.payload.status, 'rolled-back');
  t.equal(rb.payload.code, 'load-failed');
  t.match(rb.payload.reason ?? '', /cannot load maxActionsPerHour 13/);
  t.equal(rb.payload.activeVersion, 5);
  t.equal(policies.current()?.version, 5);
  t.same(loaded, [5, 5], 'the previous policy was handed back to the watchdog');
  t.equal((JSON.parse(readFileSync(join(dir, 'policy', 'current.json'), 'utf8')) as { version: number }).version, 5, 'and put back on disk');

  // --- a good group bundle, then a restart keeps it ---
  const g = await send(bundle(content(7, { ...goodDoc, maxActionsPerHour: 30 }, { group: GROUP })), `introvisor/group/${GROUP}/policy/set`);
  t.equal(g.payload.status, 'applied', 'group bundle applied');
  t.equal(scan(), 7, 'the next scan runs under version 7');
  t.equal(policies.current()?.policy.maxActionsPerHour, 30);
  const reopened = FilePolicyStore.open<Policy>(join(dir, 'policy'), validatePolicy);
  t.equal(reopened.current()?.version, 7, 'survives a supervisor restart');

  // The journal has every outcome, and the retained state is the last one.
  const changes = store.events({ kinds: ['policy-change'], limit: 1000, newestFirst: false });
  t.equal(changes.length, bad.length + 3);
  t.same(changes.map((c) => (c.kind === 'policy-change' ? c.payload.outcome : '')).filter((o) => o !== 'rejected'), ['applied', 'rolled-back', 'applied']);
  const scans = store.events({ kinds: ['scan'], limit: 10, newestFirst: false }).map((e) => (e.kind === 'scan' ? e.payload.policyVersion : null));
  t.same(scans, [5, 5, 7], 'scans recorded the version they ran under');

  const late = await broker.client('late-operator');
  t.teardown(() => { late.end(true); });
  const retained = await new Promise<PolicyStateMessage>((resolve) => {
    late.on('message', (topic, payload) => resolve(parsePolicyState(JSON.parse(payload.toString()), topic)));
    void subscribeAll(late, [`introvisor/${DEVICE}/policy/state`]);
  });
  t.equal(retained.payload.status, 'applied');
  t.equal(retained.payload.activeVersion, 7, 'policy/state is retained with the outcome');
});
