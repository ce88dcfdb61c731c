// The record/report services the supervisor wires around its store: the policy
// store (the running policy, updated over the air), MQTT telemetry from the
// outbox, OTA policy updates, host metrics and the local web page. Each is an
// adapter of its own folder; this file only connects them, from a resolved
// ReportConfig (src/supervisor/config.ts).
import { readFileSync } from 'node:fs';
import type { EventStore } from '../store/event-store.js';
import { validatePolicy } from '../policy/schema.js';
import type { Policy } from '../policy/types.js';
import { FilePolicyStore } from '../ota/policy-store.js';
import { Keyring } from '../ota/keyring.js';
import { OtaAgent } from '../ota/ota-agent.js';
import { startWebServer, type WebServer } from '../web/server.js';
import { consoleRoutes, type ConsoleBackend } from '../web/console.js';
import { Telemetry } from '../telemetry/telemetry.js';
import { startHostMetrics } from '../telemetry/host-metrics.js';
import { errorMessage } from '../util/errors.js';
import type { ReportConfig } from './config.js';
import type { StoreHealth } from './recorder.js';
import type { StatusMessage } from '../events/schemas.js';

export interface Services {
  /** The running policy: the watchdog reads it here, and OTA updates it. */
  readonly policy: FilePolicyStore<Policy>;
  readonly telemetry: Telemetry | null;
  readonly web: WebServer | null;
  /** Says on MQTT (retained store/state) that the store refuses writes, or takes them again. */
  storeHealthChanged(h: StoreHealth): void;
  stop(): Promise<void>;
}

const readSecret = (p: string, what: string): string => {
  try { return readFileSync(p, 'utf8').trim(); } catch (e) { throw new Error(`${what} ${p}: ${errorMessage(e)}`); }
};

export async function startServices(store: EventStore, cfg: ReportConfig, opts: { softwareVersion: string; log: (line: string) => void; storeHealth: () => StoreHealth; operations?: ConsoleBackend }): Promise<Services> {
  let initial: unknown = { version: 1 };
  if (cfg.initialPolicy) {
    try { initial = JSON.parse(readFileSync(cfg.initialPolicy, 'utf8')); } catch (e) { throw new Error(`initial policy ${cfg.initialPolicy}: ${errorMessage(e)}`); }
  }
  const policy = FilePolicyStore.open<Policy>(cfg.policyDir, validatePolicy, { document: initial, source: cfg.initialPolicy ? `file:${cfg.initialPolicy}` : 'defaults' });
  for (const p of policy.openProblems) opts.log(`policy store: ${p} (using the previous policy)`);

  let telemetry: Telemetry | null = null;
  const agent = cfg.ota ? new OtaAgent<Policy>({
    deviceId: store.deviceId, groups: cfg.groups, keyring: Keyring.loadDir(cfg.ota.keyringDir), store: policy, sink: store, validatePolicy,
    maxBytes: cfg.ota.maxBundleBytes,
    publishRetained: (topic, msg) => telemetry?.setRetained(topic, msg),
  }) : null;
  if (cfg.mqtt) {
    const m = cfg.mqtt;
    const t = new Telemetry({
      store, softwareVersion: opts.softwareVersion, subscriptions: agent?.subscriptions() ?? [],
      policyVersion: () => policy.current()?.version ?? null,
      log: (line) => opts.log(`telemetry: ${line}`),
      ...(m.window !== null ? { window: m.window } : {}),
      broker: {
        url: m.url, clientId: m.clientId,
        ...(m.tls ? { tls: { caPath: m.tls.ca, ...(m.tls.cert ? { certPath: m.tls.cert } : {}), ...(m.tls.key ? { keyPath: m.tls.key } : {}) } } : {}),
        ...(m.username !== null ? { username: m.username } : {}),
        ...(m.passwordFile ? { password: readSecret(m.passwordFile, 'MQTT password file') } : {}),
      },
    });
    telemetry = t;
    t.on('connected', () => opts.log(`telemetry: connected to ${m.url}; ${t.status().pending} events to send`));
    t.on('disconnected', (reason) => opts.log(`telemetry: disconnected from ${m.url}: ${reason}`));
    if (agent) {
      t.on('message', (topic, payload) => {
        agent.handle(topic, payload).then(
          (s) => { if (s) opts.log(`policy update on ${topic}: ${s.payload.status}${s.payload.reason ? ` (${s.payload.code}: ${s.payload.reason})` : ''}; running version ${String(s.payload.activeVersion)}`); },
          (e: unknown) => opts.log(`policy update on ${topic}: ${errorMessage(e)}`),
        );
      });
    }
  }
  agent?.announce();
  telemetry?.start();

  const stopMetrics = cfg.hostMetricsIntervalMs > 0 ? startHostMetrics(store, cfg.hostMetricsIntervalMs, opts.log) : () => undefined;

  let web: WebServer | null = null;
  if (cfg.web) {
    const token = cfg.web.tokenFile ? readSecret(cfg.web.tokenFile, 'web token file') : undefined;
    const tel = telemetry;
    web = await startWebServer({
      host: cfg.web.host, port: cfg.web.port, allowedHosts: cfg.web.allowedHosts, data: store, ...(token !== undefined ? { token } : {}),
      status: () => ({ policyVersion: policy.current()?.version ?? null, telemetry: tel ? tel.status() : null, store: opts.storeHealth() }),
      ...(opts.operations ? { console: consoleRoutes({ ops: opts.operations, data: store, token: token ?? null }) } : {}),
    });
    opts.log(`web: ${web.url}`);
  }

  return {
    policy, telemetry, web,
    storeHealthChanged(h) {
      if (!telemetry) return;
      const msg: StatusMessage<'store-state', StoreHealth> = { v: 1, device: store.deviceId, kind: 'store-state', atMs: Date.now(), payload: h };
      telemetry.setRetained(telemetry.topics.storeState, JSON.stringify(msg));
    },
    async stop() {
      // Records the counts of rejections it was still folding.
      agent?.close();
      stopMetrics();
      await web?.close();
      await telemetry?.stop();
    },
  };
}
