// introvisor-ota: the operator's tool for policy bundles (docs/OTA.md).
//   keygen  --out DIR --name NAME
//   sign    --key KEY --policy FILE --version N (--device ID | --group NAME) [--out FILE]
//   inspect --bundle FILE
//   verify  --bundle FILE --keyring DIR --device ID [--groups A,B] [--current-version N]
//   publish --broker URL --bundle FILE [--ca F --cert F --key F] [--no-retain] [--wait-state S --device ID]
import { chmodSync, mkdirSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import mqtt from 'mqtt';
import { parseArgs, intFlag, UsageError, type ParsedArgs } from './args.js';
import { errorMessage } from '../util/errors.js';
import { validatePolicy } from '../policy/schema.js';
import { createBundle, verifyBundle, DEFAULT_MAX_BUNDLE_BYTES, type BundleEnvelope, type SignedContent } from '../ota/bundle.js';
import { Keyring, generateSigningKey } from '../ota/keyring.js';
import { mqttOptions, type BrokerConfig } from '../telemetry/broker.js';
import { checkTopicSegment, topicsFor } from '../events/topics.js';
import { parsePolicyState } from '../ota/ota-agent.js';

export const usage = `usage: introvisor-ota <command> [options]
  keygen  --out DIR --name NAME                     new ed25519 signing key: DIR/NAME.key (keep secret), DIR/NAME.pub (for device keyrings)
  sign    --key KEY --policy FILE --version N (--device ID | --group NAME) [--out FILE]
                                                    check the policy against the schema and sign it into a bundle
  inspect --bundle FILE                             print a bundle's key id, target, version and policy
  verify  --bundle FILE --keyring DIR --device ID [--groups A,B] [--current-version N]
                                                    check a bundle as a device would
  publish --broker URL --bundle FILE [--ca F --cert F --key F] [--no-retain] [--wait-state SECONDS]
                                                    publish to the bundle's target topic (retained, QoS 1); with
                                                    --wait-state, wait for the device's policy/state answer`;

const str = (a: ParsedArgs, name: string): string => {
  const v = a.flags.get(name);
  if (typeof v !== 'string') throw new UsageError(`--${name} is required`);
  return v;
};
const opt = (a: ParsedArgs, name: string): string | undefined => {
  const v = a.flags.get(name);
  return typeof v === 'string' ? v : undefined;
};
const readText = (path: string, what: string): string => {
  try { return readFileSync(path, 'utf8'); } catch (e) { throw new Error(`${what} ${path}: ${errorMessage(e)}`); }
};

function decode(envelope: BundleEnvelope): SignedContent {
  return JSON.parse(Buffer.from(envelope.signed, 'base64').toString('utf8')) as SignedContent;
}

async function keygen(argv: string[]): Promise<number> {
  const a = parseArgs(argv, { boolean: ['force'], valued: ['out', 'name'] });
  const dir = str(a, 'out');
  const name = checkTopicSegment(str(a, 'name'), 'key name');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const keyPath = join(dir, `${name}.key`);
  if (existsSync(keyPath) && !a.flags.has('force')) throw new Error(`${keyPath} exists (use --force to replace it)`);
  const k = generateSigningKey();
  writeFileSync(keyPath, k.privatePem, { mode: 0o600 });
  chmodSync(keyPath, 0o600);
  writeFileSync(join(dir, `${name}.pub`), k.publicPem);
  console.log(`key id ${k.keyId}\n  private ${keyPath} (keep secret)\n  public  ${join(dir, `${name}.pub`)} (copy into each device's keyring directory)`);
  return 0;
}

async function signCmd(argv: string[]): Promise<number> {
  const a = parseArgs(argv, { boolean: [], valued: ['key', 'policy', 'version', 'device', 'group', 'out'] });
  const version = intFlag(a, 'version', 0, 1, Number.MAX_SAFE_INTEGER);
  if (!a.flags.has('version')) throw new UsageError('--version is required');
  const device = opt(a, 'device');
  const group = opt(a, 'group');
  if ((device === undefined) === (group === undefined)) throw new UsageError('give exactly one of --device or --group');
  const policyPath = str(a, 'policy');
  let policy: unknown;
  try { policy = JSON.parse(readText(policyPath, 'policy')); } catch (e) { throw new Error(`policy ${policyPath}: ${errorMessage(e)}`); }
  const v = validatePolicy(policy);
  if (!v.ok) throw new Error(`policy ${policyPath} would be refused by devices: ${v.errors.join('; ')}`);
  const target = device !== undefined ? { device: checkTopicSegment(device, 'device id') } : { group: checkTopicSegment(group as string, 'group') };
  const bundle = createBundle({ version, target, issuedAtMs: Date.now(), policy }, readText(str(a, 'key'), 'signing key'));
  const text = JSON.stringify(bundle);
  if (Buffer.byteLength(text) > DEFAULT_MAX_BUNDLE_BYTES) throw new Error(`bundle is ${Buffer.byteLength(text)} bytes; devices refuse more than ${DEFAULT_MAX_BUNDLE_BYTES}`);
  const out = opt(a, 'out');
  if (out) {
    writeFileSync(out, text + '\n');
    console.error(`signed version ${version} for ${device !== undefined ? `device ${device}` : `group ${group}`} with key ${bundle.keyId} -> ${out}`);
  } else {
    process.stdout.write(text + '\n');
  }
  return 0;
}

function readBundle(path: string): { raw: Buffer; envelope: BundleEnvelope } {
  const raw = Buffer.from(readText(path, 'bundle').trim());
  try {
    return { raw, envelope: JSON.parse(raw.toString()) as BundleEnvelope };
  } catch (e) {
    throw new Error(`bundle ${path}: ${errorMessage(e)}`);
  }
}

async function inspect(argv: string[]): Promise<number> {
  const a = parseArgs(argv, { boolean: [], valued: ['bundle'] });
  const { envelope } = readBundle(str(a, 'bundle'));
  const c = decode(envelope);
  console.log(JSON.stringify({ format: envelope.format, keyId: envelope.keyId, version: c.version, target: c.target, issuedAt: new Date(c.issuedAtMs).toISOString(), policy: c.policy }, null, 2));
  return 0;
}

async function verifyCmd(argv: string[]): Promise<number> {
  const a = parseArgs(argv, { boolean: [], valued: ['bundle', 'keyring', 'device', 'groups', 'current-version'] });
  const { raw } = readBundle(str(a, 'bundle'));
  const current = a.flags.has('current-version') ? intFlag(a, 'current-version', 0, 0, Number.MAX_SAFE_INTEGER) : null;
  const r = verifyBundle(raw, {
    keyring: Keyring.loadDir(str(a, 'keyring')), deviceId: str(a, 'device'),
    groups: (opt(a, 'groups') ?? '').split(',').filter((g) => g !== ''), currentVersion: current,
    maxBytes: DEFAULT_MAX_BUNDLE_BYTES, validatePolicy,
  });
  if (r.ok) { console.log(`ok: version ${r.bundle.version}, key ${r.bundle.keyId}`); return 0; }
  console.log(`refused (${r.code}): ${r.reason}`);
  return 1;
}

async function publish(argv: string[]): Promise<number> {
  const a = parseArgs(argv, { boolean: ['no-retain'], valued: ['broker', 'bundle', 'ca', 'cert', 'key', 'wait-state', 'client-id'] });
  const { raw, envelope } = readBundle(str(a, 'bundle'));
  const c = decode(envelope);
  const topic = 'device' in c.target ? topicsFor(c.target.device).policySet : topicsFor('x').groupPolicySet(c.target.group);
  const ca = opt(a, 'ca');
  const cfg: BrokerConfig = {
    url: str(a, 'broker'), clientId: opt(a, 'client-id') ?? `introvisor-ota-${process.pid}`, connectTimeoutMs: 10_000,
    ...(ca ? { tls: { caPath: ca, ...(opt(a, 'cert') ? { certPath: opt(a, 'cert') as string } : {}), ...(opt(a, 'key') ? { keyPath: opt(a, 'key') as string } : {}) } } : {}),
  };
  const waitS = a.flags.has('wait-state') ? intFlag(a, 'wait-state', 0, 1, 3600) : 0;
  const targetDevice = 'device' in c.target ? c.target.device : null;
  if (waitS > 0 && targetDevice === null) throw new UsageError('--wait-state needs a bundle for one device (a group has many answers)');
  const client = mqtt.connect(cfg.url, mqttOptions(cfg, null));
  try {
    await new Promise<void>((resolve, reject) => {
      client.once('connect', () => resolve());
      client.once('error', (e) => reject(new Error(`broker ${cfg.url}: ${e.message}`)));
    });
    const sha = createHash('sha256').update(raw).digest('hex');
    if (waitS > 0 && targetDevice !== null) {
      // Subscribe before publishing so the device's answer cannot slip past.
      await new Promise<void>((resolve, reject) => client.subscribe(topicsFor(targetDevice).policyState, { qos: 1 }, (e) => (e ? reject(e) : resolve())));
    }
    const answer = waitS > 0 ? new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no policy/state answer for this bundle within ${waitS} s`)), waitS * 1000);
      client.on('message', (t, payload) => {
        try {
          const s = parsePolicyState(JSON.parse(payload.toString()), t);
          if (s.payload.received?.sha256 !== sha) return;
          clearTimeout(timer);
          resolve(s.payload.status === 'applied' ? `applied: device runs version ${String(s.payload.activeVersion)}` : `${s.payload.status} (${String(s.payload.code)}): ${String(s.payload.reason)}; device runs version ${String(s.payload.activeVersion)}`);
        } catch { /* not an answer we can read; keep waiting */ }
      });
    }) : null;
    await new Promise<void>((resolve, reject) => client.publish(topic, raw, { qos: 1, retain: !a.flags.has('no-retain') }, (e) => (e ? reject(e) : resolve())));
    console.log(`published version ${c.version} to ${topic}`);
    if (answer) {
      const text = await answer;
      console.log(text);
      return text.startsWith('applied') ? 0 : 1;
    }
    return 0;
  } finally {
    await new Promise<void>((resolve) => client.end(false, {}, () => resolve()));
  }
}

const commands: Record<string, (argv: string[]) => Promise<number>> = { keygen, sign: signCmd, inspect, verify: verifyCmd, publish };

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === 'help' || name === '--help') { console.log(usage); return name === undefined ? 2 : 0; }
  const cmd = commands[name];
  if (!cmd) throw new UsageError(`unknown command "${name}"\n${usage}`);
  return cmd(rest);
}

/** Runs the command line and sets the exit code (used by ota/introvisor-ota and when this file is run directly). */
export function runMain(): void {
  main(process.argv.slice(2)).then(
    (code) => { process.exitCode = code; },
    (e: unknown) => { console.error(`introvisor-ota: ${errorMessage(e)}`); process.exitCode = e instanceof UsageError ? 2 : 1; },
  );
}

if (process.argv[1] && /[\\/]ota[\\/]cli\.js$/.test(process.argv[1])) runMain();
