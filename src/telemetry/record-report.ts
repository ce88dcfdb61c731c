// The record/report side as one service the supervisor starts: the policy
// store (PolicySource for the watchdog), MQTT telemetry from the outbox, OTA
// policy updates, host metrics and the local web page. The supervisor owns
// the EventStore (it shares the database) and hands it in.
import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { Ajv } from 'ajv';
import type { EventStore } from '../store/event-store.js';
import type { PolicySource } from '../events/sink.js';
import { formatAjvErrors } from '../events/schemas.js';
import { validatePolicy } from '../policy/schema.js';
import type { Policy } from '../policy/types.js';
import { FilePolicyStore } from '../ota/policy-store.js';
import { Keyring } from '../ota/keyring.js';
import { OtaAgent } from '../ota/ota-agent.js';
import { DEFAULT_MAX_BUNDLE_BYTES } from '../ota/bundle.js';
import { startWebServer, type WebServer } from '../web/server.js';
import { Telemetry } from './telemetry.js';
import { startHostMetrics } from './host-metrics.js';
import { checkTopicSegment } from './topics.js';
import { errorMessage } from '../util/errors.js';

export interface RecordReportConfig {
  /** Where the running policy lives (current.json, previous.json). */
  readonly policyDir: string;
  /** Policy document to start from when policyDir holds none; the built-in defaults when absent. */
  readonly initialPolicy?: string;
  readonly groups?: readonly string[];
  readonly mqtt?: {
    readonly url: string;
    readonly clientId?: string;
    readonly tls?: { readonly ca: string; readonly cert?: string; readonly key?: string };
    readonly username?: string;
    /** A file holding the password (not the password itself, so configs can be shared). */
    readonly passwordFile?: string;
    readonly window?: number;
  };
  readonly ota?: { readonly keyringDir: string; readonly maxBundleBytes?: number };
  readonly web?: { readonly host: string; readonly port: number; readonly tokenFile?: string };
  /** 0 turns host metrics off; default 60. */
  readonly hostMetricsIntervalSec?: number;
}

const path = { type: 'string', minLength: 1, maxLength: 4096 };
const name = { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$' };
export const RECORD_REPORT_CONFIG_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['policyDir'],
  properties: {
    policyDir: path,
    initialPolicy: path,
    groups: { type: 'array', maxItems: 32, items: name },
    mqtt: {
      type: 'object', additionalProperties: false, required: ['url'],
      properties: {
        url: { type: 'string', pattern: '^mqtts?://[^/]+$' },
        clientId: { type: 'string', minLength: 1, maxLength: 128 },
        tls: { type: 'object', additionalProperties: false, required: ['ca'], properties: { ca: path, cert: path, key: path } },
        username: { type: 'string', maxLength: 256 },
        passwordFile: path,
        window: { type: 'integer', minimum: 1, maximum: 10000 },
      },
    },
    ota: { type: 'object', additionalProperties: false, required: ['keyringDir'], properties: { keyringDir: path, maxBundleBytes: { type: 'integer', minimum: 1024, maximum: 16777216 } } },
    web: { type: 'object', additionalProperties: false, required: ['host', 'port'], properties: { host: { type: 'string', minLength: 1, maxLength: 255 }, port: { type: 'integer', minimum: 0, maximum: 65535 }, tokenFile: path } },
    hostMetricsIntervalSec: { type: 'number', minimum: 0, maximum: 86400 },
  },
} as const;
const checkConfig = new Ajv({ allErrors: true, strict: true }).compile<RecordReportConfig>(RECORD_REPORT_CONFIG_SCHEMA);

/** Checks a config section and resolves its relative paths against baseDir. */
export function parseRecordReportConfig(raw: unknown, where: string, baseDir: string): RecordReportConfig {
  if (!checkConfig(raw)) throw new Error(`${where}: ${formatAjvErrors(checkConfig.errors, 20)}`);
  const abs = (p: string): string => (isAbsolute(p) ? p : resolve(baseDir, p));
  const c = raw;
  if (c.mqtt && c.mqtt.url.startsWith('mqtts:') !== (c.mqtt.tls !== undefined)) throw new Error(`${where}: /mqtt/tls is ${c.mqtt.tls ? 'given for mqtt://' : 'required for mqtts://'}`);
  if (c.mqtt?.tls && (c.mqtt.tls.cert === undefined) !== (c.mqtt.tls.key === undefined)) throw new Error(`${where}: /mqtt/tls needs both cert and key, or neither`);
  return {
    ...c,
    policyDir: abs(c.policyDir),
    ...(c.initialPolicy ? { initialPolicy: abs(c.initialPolicy) } : {}),
    ...(c.mqtt ? { mqtt: { ...c.mqtt, ...(c.mqtt.passwordFile ? { passwordFile: abs(c.mqtt.passwordFile) } : {}), ...(c.mqtt.tls ? { tls: { ca: abs(c.mqtt.tls.ca), ...(c.mqtt.tls.cert ? { cert: abs(c.mqtt.tls.cert) } : {}), ...(c.mqtt.tls.key ? { key: abs(c.mqtt.tls.key) } : {}) } } : {}) } } : {}),
    ...(c.ota ? { ota: { ...c.ota, keyringDir: abs(c.ota.keyringDir) } } : {}),
    ...(c.web ? { web: { ...c.web, ...(c.web.tokenFile ? { tokenFile: abs(c.web.tokenFile) } : {}) } } : {}),
  };
}

export function loadRecordReportConfigFile(file: string): RecordReportConfig {
  let raw: unknown;
  try { raw = JSON.parse(readFileSync(file, 'utf8')); } catch (e) { throw new Error(`config ${file}: ${errorMessage(e)}`); }
  return parseRecordReportConfig(raw, `config ${file}`, dirname(file));
}

export interface RecordReport {
  /** The watchdog reads its policy here and subscribes to OTA changes. */
  readonly policy: PolicySource<Policy> & FilePolicyStore<Policy>;
  readonly telemetry: Telemetry | null;
  readonly web: WebServer | null;
  stop(): Promise<void>;
}

const readSecret = (p: string, what: string): string => {
  try { return readFileSync(p, 'utf8').trim(); } catch (e) { throw new Error(`${what} ${p}: ${errorMessage(e)}`); }
};

export async function startRecordReport(store: EventStore, cfg: RecordReportConfig, opts: { softwareVersion: string; log: (line: string) => void }): Promise<RecordReport> {
  const groups = (cfg.groups ?? []).map((g) => checkTopicSegment(g, 'group'));
  let initial: unknown = { version: 1 };
  if (cfg.initialPolicy) {
    try { initial = JSON.parse(readFileSync(cfg.initialPolicy, 'utf8')); } catch (e) { throw new Error(`initial policy ${cfg.initialPolicy}: ${errorMessage(e)}`); }
  }
  const policy = FilePolicyStore.open<Policy>(cfg.policyDir, validatePolicy, { document: initial, source: cfg.initialPolicy ? `file:${cfg.initialPolicy}` : 'defaults' });
  for (const p of policy.openProblems) opts.log(`policy store: ${p} (using the previous policy)`);

  let telemetry: Telemetry | null = null;
  let agent: OtaAgent<Policy> | null = null;
  if (cfg.ota) {
    agent = new OtaAgent<Policy>({
      deviceId: store.deviceId, groups, keyring: Keyring.loadDir(cfg.ota.keyringDir), store: policy, sink: store, validatePolicy,
      maxBytes: cfg.ota.maxBundleBytes ?? DEFAULT_MAX_BUNDLE_BYTES,
      publishRetained: (topic, msg) => telemetry?.setRetained(topic, msg),
    });
  }
  if (cfg.mqtt) {
    const m = cfg.mqtt;
    telemetry = new Telemetry({
      store, softwareVersion: opts.softwareVersion, subscriptions: agent?.subscriptions() ?? [],
      policyVersion: () => policy.current()?.version ?? null,
      ...(m.window ? { window: m.window } : {}),
      broker: {
        url: m.url, clientId: m.clientId ?? `introvisor-${store.deviceId}`,
        ...(m.tls ? { tls: { caPath: m.tls.ca, ...(m.tls.cert ? { certPath: m.tls.cert } : {}), ...(m.tls.key ? { keyPath: m.tls.key } : {}) } } : {}),
        ...(m.username !== undefined ? { username: m.username } : {}),
        ...(m.passwordFile ? { password: readSecret(m.passwordFile, 'MQTT password file') } : {}),
      },
    });
    const t = telemetry;
    t.on('connected', () => opts.log(`telemetry: connected to ${m.url}; ${t.status().pending} events to send`));
    t.on('disconnected', (reason) => opts.log(`telemetry: disconnected from ${m.url}: ${reason}`));
    if (agent) {
      const a = agent;
      t.on('message', (topic, payload) => {
        a.handle(topic, payload).then(
          (s) => { if (s) opts.log(`policy update on ${topic}: ${s.payload.status}${s.payload.reason ? ` (${s.payload.code}: ${s.payload.reason})` : ''}; running version ${String(s.payload.activeVersion)}`); },
          (e: unknown) => opts.log(`policy update on ${topic}: ${errorMessage(e)}`),
        );
      });
    }
  }
  agent?.announce();
  telemetry?.start();

  const intervalS = cfg.hostMetricsIntervalSec ?? 60;
  const stopMetrics = intervalS > 0 ? startHostMetrics(store, intervalS * 1000, opts.log) : () => undefined;

  let web: WebServer | null = null;
  if (cfg.web) {
    const token = cfg.web.tokenFile ? readSecret(cfg.web.tokenFile, 'web token file') : undefined;
    web = await startWebServer({
      host: cfg.web.host, port: cfg.web.port, data: store, ...(token !== undefined ? { token } : {}),
      status: () => ({ policyVersion: policy.current()?.version ?? null, telemetry: telemetry ? telemetry.status() : null }),
    });
    opts.log(`web: ${web.url}`);
  }

  return {
    policy, telemetry, web,
    async stop() {
      stopMetrics();
      await web?.close();
      await telemetry?.stop();
    },
  };
}
