// The operator's tool (ota/introvisor-ota.js) end to end: make a key, sign an
// example policy, publish it over TLS to a real mosquitto and get the device's
// answer; verify refuses what a device would refuse.
import t from 'tap';
import { spawn } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { EventStore } from '../../src/store/event-store.js';
import { Telemetry } from '../../src/telemetry/telemetry.js';
import { Keyring } from '../../src/ota/keyring.js';
import { FilePolicyStore } from '../../src/ota/policy-store.js';
import { OtaAgent } from '../../src/ota/ota-agent.js';
import { validatePolicy } from '../../src/policy/schema.js';
import type { Policy } from '../../src/policy/types.js';
import { Mosquitto } from '../telemetry/broker-fixture.js';

const repo = resolve(process.cwd());
const tool = join(repo, 'ota', 'introvisor-ota.js');

function ota(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((res) => {
    const c = spawn(process.execPath, [tool, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    c.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    c.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    c.on('close', (code) => res({ code, stdout, stderr }));
  });
}

t.test('every example policy passes the watchdog schema', async (t) => {
  const dir = join(repo, 'ota', 'policies');
  const files = readdirSync(dir).filter((f) => f.endsWith('.json'));
  t.ok(files.length >= 3);
  for (const f of files) {
    const r = await ota(['sign', '--key', '/nonexistent', '--policy', join(dir, f), '--version', '1', '--device', 'x']);
    // Schema check comes before the key is read: a valid policy fails only on the missing key.
    t.match(r.stderr, /signing key \/nonexistent/, `${f} passes the schema`);
  }
});

t.test('keygen, sign, publish --wait-state against a device, verify', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'iv-ota-cli-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const broker = await Mosquitto.start({ tls: true });
  t.teardown(() => broker.stop());
  const tls = broker.tls;
  if (!tls) throw new Error('no tls');

  const keygen = await ota(['keygen', '--out', join(dir, 'keys'), '--name', 'ops']);
  t.equal(keygen.code, 0, keygen.stderr);
  mkdirSync(join(dir, 'keyring'));
  copyFileSync(join(dir, 'keys', 'ops.pub'), join(dir, 'keyring', 'ops.pub'));

  const store = new EventStore({ path: join(dir, 'events.db'), deviceId: 'dev-cli' });
  const policies = FilePolicyStore.open<Policy>(join(dir, 'policy'), validatePolicy, { document: { version: 1 }, source: 'file' });
  let telemetry: Telemetry | null = null;
  const agent = new OtaAgent<Policy>({
    deviceId: 'dev-cli', groups: [], keyring: Keyring.loadDir(join(dir, 'keyring')), store: policies, sink: store, validatePolicy,
    publishRetained: (topic, msg) => telemetry?.setRetained(topic, msg),
  });
  telemetry = new Telemetry({ store, broker: broker.brokerConfig('introvisor-dev-cli'), softwareVersion: 'test', subscriptions: agent.subscriptions() });
  telemetry.on('message', (topic, payload) => { void agent.handle(topic, payload); });
  t.teardown(async () => { await telemetry?.stop(); store.close(); });
  const connected = new Promise((r) => telemetry?.once('connected', () => r(null)));
  telemetry.start();
  await connected;

  const bundlePath = join(dir, 'v1.bundle.json');
  const sign = await ota(['sign', '--key', join(dir, 'keys', 'ops.key'), '--policy', join(repo, 'ota', 'policies', 'gentle-lab.json'), '--version', '1', '--device', 'dev-cli', '--out', bundlePath]);
  t.equal(sign.code, 0, sign.stderr);
  const inspect = await ota(['inspect', '--bundle', bundlePath]);
  t.match(inspect.stdout, /"device": "dev-cli"/);

  const tlsArgs = ['--ca', tls.caPath, '--cert', tls.certPath, '--key', tls.keyPath];
  const pub = await ota(['publish', '--broker', broker.url, '--bundle', bundlePath, ...tlsArgs, '--wait-state', '15']);
  t.equal(pub.code, 0, `publish: ${pub.stdout} ${pub.stderr}`);
  t.match(pub.stdout, /applied: device runs version 1/);
  t.equal(policies.current()?.version, 1);
  t.equal(policies.current()?.policy.maxActionsPerHour, 30, 'the gentle-lab policy runs');

  const verifyOld = await ota(['verify', '--bundle', bundlePath, '--keyring', join(dir, 'keyring'), '--device', 'dev-cli', '--current-version', '1']);
  t.equal(verifyOld.code, 1);
  t.match(verifyOld.stdout, /refused \(not-newer\)/);
  const verifyOther = await ota(['verify', '--bundle', bundlePath, '--keyring', join(dir, 'keyring'), '--device', 'dev-other']);
  t.match(verifyOther.stdout, /refused \(wrong-target\)/);

  // The same bundle again (a replay) changes nothing; a publish of a stale one gets a refusal.
  const stalePath = join(dir, 'v1b.bundle.json');
  await ota(['sign', '--key', join(dir, 'keys', 'ops.key'), '--policy', join(repo, 'ota', 'policies', 'default.json'), '--version', '1', '--device', 'dev-cli', '--out', stalePath]);
  const stale = await ota(['publish', '--broker', broker.url, '--bundle', stalePath, ...tlsArgs, '--wait-state', '15']);
  t.equal(stale.code, 1);
  t.match(stale.stdout, /rejected \(not-newer\): bundle version 1 is not newer than the running version 1/);
});
