// The MQTT adapter: one connection to the broker, as a small interface the
// telemetry core drives. mqtt.js's own reconnect and in-memory resend are
// switched off: the SQLite outbox is the only resend queue, so after any drop
// we reconnect with a fresh session and replay from the outbox in seq order.
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { readFileSync } from 'node:fs';
import { withTimeout } from '../util/deadline.js';

export interface BrokerTls {
  /** CA certificate(s) that signed the broker's certificate (PEM file). */
  readonly caPath: string;
  /** Client certificate and key (PEM files), when the broker wants client certificates. */
  readonly certPath?: string;
  readonly keyPath?: string;
}

export interface BrokerConfig {
  /** mqtt://host:port or mqtts://host:port */
  readonly url: string;
  readonly clientId: string;
  readonly tls?: BrokerTls;
  readonly username?: string;
  readonly password?: string;
  readonly keepaliveS?: number;
  readonly connectTimeoutMs?: number;
}

export interface Will { readonly topic: string; readonly payload: string; readonly retain: boolean }

export interface BrokerSession {
  /** Resolves when the broker acknowledged it (PUBACK for QoS 1); rejects if the connection closes first. */
  publish(topic: string, payload: string, opts: { qos: 0 | 1; retain: boolean }): Promise<void>;
  subscribe(topics: readonly string[]): Promise<void>;
  onMessage(fn: (topic: string, payload: Buffer) => void): void;
  /** Called once when the connection is gone, for whatever reason. */
  onClose(fn: (reason: string) => void): void;
  /** Graceful: DISCONNECT (no Last Will). force: drop the socket. */
  end(force: boolean): Promise<void>;
}

export type BrokerConnector = (cfg: BrokerConfig, will: Will | null) => Promise<BrokerSession>;

export function mqttOptions(cfg: BrokerConfig, will: Will | null): IClientOptions {
  const opts: IClientOptions = {
    clientId: cfg.clientId,
    clean: true,
    reconnectPeriod: 0,
    connectTimeout: cfg.connectTimeoutMs ?? 10_000,
    keepalive: cfg.keepaliveS ?? 30,
    protocolVersion: 4,
  };
  if (cfg.username !== undefined) opts.username = cfg.username;
  if (cfg.password !== undefined) opts.password = cfg.password;
  if (will) opts.will = { topic: will.topic, payload: Buffer.from(will.payload), qos: 1, retain: will.retain };
  if (cfg.tls) {
    const read = (p: string, what: string): Buffer => {
      try { return readFileSync(p); } catch (e) { throw new Error(`broker TLS ${what} ${p}: ${(e as Error).message}`); }
    };
    opts.ca = read(cfg.tls.caPath, 'CA');
    if (cfg.tls.certPath) opts.cert = read(cfg.tls.certPath, 'client certificate');
    if (cfg.tls.keyPath) opts.key = read(cfg.tls.keyPath, 'client key');
    opts.rejectUnauthorized = true;
  }
  return opts;
}

/** Connects once; rejects with the broker URL and the reason when it cannot. */
export const connectMqtt: BrokerConnector = (cfg, will) => {
  if (cfg.url.startsWith('mqtts:') !== (cfg.tls !== undefined)) {
    return Promise.reject(new Error(`broker ${cfg.url}: TLS settings ${cfg.tls ? 'given for a plain mqtt:// URL' : 'missing for mqtts://'}`));
  }
  const client: MqttClient = mqtt.connect(cfg.url, mqttOptions(cfg, will));
  const connected = new Promise<BrokerSession>((resolve, reject) => {
    let closed = false;
    const closeListeners: ((reason: string) => void)[] = [];
    let lastError = 'connection closed';
    client.on('error', (e) => { lastError = e.message; });
    client.on('close', () => {
      if (closed) return;
      closed = true;
      reject(new Error(`broker ${cfg.url}: ${lastError}`));
      for (const l of closeListeners) l(lastError);
    });
    client.once('connect', () => {
      resolve({
        publish: (topic, payload, o) => new Promise((res, rej) => {
          client.publish(topic, payload, { qos: o.qos, retain: o.retain }, (err) => (err ? rej(err) : res()));
        }),
        subscribe: (topics) => new Promise((res, rej) => {
          client.subscribe([...topics], { qos: 1 }, (err, granted) => {
            if (err) return rej(new Error(`broker ${cfg.url}: subscribe ${topics.join(', ')}: ${err.message}`));
            const refused = (granted ?? []).filter((g) => g.qos === 128);
            if (refused.length > 0) return rej(new Error(`broker ${cfg.url}: subscription refused: ${refused.map((g) => g.topic).join(', ')}`));
            res();
          });
        }),
        onMessage: (fn) => { client.on('message', (topic, payload) => fn(topic, payload)); },
        onClose: (fn) => { if (closed) fn(lastError); else closeListeners.push(fn); },
        end: (force) => new Promise<void>((res) => { client.end(force, {}, () => res()); }),
      });
    });
  });
  return withTimeout(connected, (cfg.connectTimeoutMs ?? 10_000) + 2_000, `broker ${cfg.url}: connect`, () => client.end(true));
};
