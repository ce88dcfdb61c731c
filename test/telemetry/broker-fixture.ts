// A real mosquitto broker for tests: free 127.0.0.1 port, temp config,
// optional TLS with a CA, server and client certificates made by openssl here,
// optional persistence so it can be stopped and started again on the same port.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, readFileSync, openSync, closeSync } from 'node:fs';
import { createServer, connect as tcpConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import { run } from '../../src/util/exec.js';
import type { BrokerConfig, BrokerTls } from '../../src/telemetry/broker.js';

export interface TlsFiles extends BrokerTls { readonly certPath: string; readonly keyPath: string; readonly caKeyPath: string; readonly dir: string }

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const a = srv.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/** A CA, a server certificate for IP 127.0.0.1 and a client certificate, all fresh. */
export async function makeCertificates(dir: string, clientCn = 'introvisor-device'): Promise<TlsFiles> {
  const f = (n: string): string => join(dir, n);
  const ossl = (...args: string[]): Promise<unknown> => run('openssl', args, 30_000);
  await ossl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2', '-subj', '/CN=introvisor-test-ca', '-keyout', f('ca.key'), '-out', f('ca.crt'));
  writeFileSync(f('server.ext'), 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n');
  writeFileSync(f('client.ext'), 'basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n');
  for (const [name, cn, ext] of [['server', '127.0.0.1', 'server.ext'], ['client', clientCn, 'client.ext']] as const) {
    await ossl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-subj', `/CN=${cn}`, '-keyout', f(`${name}.key`), '-out', f(`${name}.csr`));
    await ossl('x509', '-req', '-in', f(`${name}.csr`), '-CA', f('ca.crt'), '-CAkey', f('ca.key'), '-CAcreateserial', '-days', '2', '-extfile', f(ext), '-out', f(`${name}.crt`));
  }
  return { dir, caPath: f('ca.crt'), certPath: f('client.crt'), keyPath: f('client.key'), caKeyPath: f('ca.key') };
}

export interface MosquittoOptions { readonly tls?: boolean; readonly persistence?: boolean }

export class Mosquitto {
  readonly dir: string;
  port = 0;
  tls: TlsFiles | null = null;
  private child: ChildProcess | null = null;

  private constructor(private readonly opts: MosquittoOptions) {
    this.dir = mkdtempSync(join(tmpdir(), 'iv-mosq-'));
  }

  static async start(opts: MosquittoOptions = {}): Promise<Mosquitto> {
    const m = new Mosquitto(opts);
    m.port = await freePort();
    if (opts.tls) m.tls = await makeCertificates(m.dir);
    await m.resume();
    return m;
  }

  get url(): string { return `${this.tls ? 'mqtts' : 'mqtt'}://127.0.0.1:${this.port}`; }

  brokerConfig(clientId: string): BrokerConfig {
    return this.tls
      ? { url: this.url, clientId, tls: { caPath: this.tls.caPath, certPath: this.tls.certPath, keyPath: this.tls.keyPath }, connectTimeoutMs: 3000 }
      : { url: this.url, clientId, connectTimeoutMs: 3000 };
  }

  /** (Re)starts the broker on the same port and waits until it accepts connections. */
  async resume(): Promise<void> {
    if (this.child) return;
    const conf = [
      `listener ${this.port} 127.0.0.1`,
      'allow_anonymous true',
      'user root',
      'max_queued_messages 0',
      'max_inflight_messages 100',
      `persistence ${this.opts.persistence ? 'true' : 'false'}`,
      `persistence_location ${this.dir}/`,
      'autosave_interval 0',
      'log_dest stderr',
      'log_type error',
      'log_type warning',
    ];
    if (this.tls) {
      conf.push(`cafile ${this.tls.caPath}`, `certfile ${join(this.tls.dir, 'server.crt')}`, `keyfile ${join(this.tls.dir, 'server.key')}`,
        'require_certificate true', 'use_identity_as_username true', 'tls_version tlsv1.2');
    }
    writeFileSync(join(this.dir, 'mosquitto.conf'), conf.join('\n') + '\n');
    const log = openSync(join(this.dir, 'mosquitto.log'), 'a');
    const child = spawn('/usr/sbin/mosquitto', ['-c', join(this.dir, 'mosquitto.conf')], { stdio: ['ignore', log, log] });
    closeSync(log);
    this.child = child;
    const deadline = Date.now() + 10_000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`mosquitto exited ${child.exitCode}: ${this.log()}`);
      if (await portOpen(this.port)) return;
      if (Date.now() > deadline) throw new Error(`mosquitto did not listen on 127.0.0.1:${this.port} within 10 s: ${this.log()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Stops the broker (SIGTERM, so a persistent broker saves its queues) and waits for it to exit. */
  async pause(): Promise<void> {
    const c = this.child;
    if (!c) return;
    this.child = null;
    if (c.exitCode !== null) return;
    // SIGCONT too: a frozen broker (freeze()) handles no SIGTERM until it runs again.
    await new Promise<void>((resolve) => { c.once('exit', () => resolve()); c.kill('SIGTERM'); c.kill('SIGCONT'); });
  }

  /** SIGSTOP: the broker keeps its sockets open and answers nothing (a wedged broker). */
  freeze(): void { this.child?.kill('SIGSTOP'); }

  /** SIGCONT after freeze(). */
  thaw(): void { this.child?.kill('SIGCONT'); }

  log(): string {
    try { return readFileSync(join(this.dir, 'mosquitto.log'), 'utf8').slice(-2000); } catch { return '(no log)'; }
  }

  async stop(): Promise<void> {
    await this.pause();
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** A test-side MQTT client (the "central" consumer), with the test's client certificate when TLS is on. */
  async client(clientId: string, extra: mqtt.IClientOptions = {}): Promise<MqttClient> {
    const opts: mqtt.IClientOptions = { clientId, reconnectPeriod: 200, connectTimeout: 3000, ...extra };
    if (this.tls) Object.assign(opts, { ca: readFileSync(this.tls.caPath), cert: readFileSync(this.tls.certPath), key: readFileSync(this.tls.keyPath), rejectUnauthorized: true });
    const c = mqtt.connect(this.url, opts);
    await new Promise<void>((resolve, reject) => {
      c.once('connect', () => resolve());
      c.once('error', reject);
    });
    return c;
  }
}

function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = tcpConnect(port, '127.0.0.1');
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('error', () => resolve(false));
  });
}

export async function subscribeAll(c: MqttClient, topics: string[]): Promise<void> {
  await new Promise<void>((resolve, reject) => c.subscribe(topics, { qos: 1 }, (err) => (err ? reject(err) : resolve())));
}
