// The web server against outsiders, on real sockets: a Host name it was not
// configured with is refused (DNS rebinding: a page whose own name points at
// this address must not read the API), and a flood of half-open connections is
// capped per address and in total and timed out, after which a client is
// served again.
import t from 'tap';
import { connect, type Socket } from 'node:net';
import { request } from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EventStore } from '../../src/store/event-store.js';
import { startWebServer, hostHeaderName } from '../../src/web/server.js';
import { sleep } from '../../src/util/deadline.js';

const dir = mkdtempSync(join(tmpdir(), 'iv-web-limits-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const store = new EventStore({ path: join(dir, 'e.db'), deviceId: 'dev-web' });
t.teardown(() => store.close());

function get(url: string, host: string | null): Promise<{ status: number; body: string }> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = host === null ? {} : { host };
    const req = request({ host: u.hostname, port: u.port, path: '/api/status', headers, setHost: host !== null }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => { body += d.toString(); });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

t.test('Host names', async (t) => {
  t.equal(hostHeaderName('LocalHost:8080'), 'localhost');
  t.equal(hostHeaderName('[::1]:80'), '::1');
  t.equal(hostHeaderName('appliance.lan.'), 'appliance.lan');
  t.equal(hostHeaderName('a b'), null);
  const web = await startWebServer({ host: '127.0.0.1', port: 0, data: store, allowedHosts: ['appliance.lan'] });
  t.teardown(() => web.close());
  const port = new URL(web.url).port;
  t.equal((await get(web.url, `127.0.0.1:${port}`)).status, 200, 'the address itself');
  t.equal((await get(web.url, `localhost:${port}`)).status, 200, 'localhost');
  t.equal((await get(web.url, `appliance.lan:${port}`)).status, 200, 'a configured name');
  const rebound = await get(web.url, `attacker.example:${port}`);
  t.equal(rebound.status, 421, 'a rebound name is refused');
  t.match(rebound.body, /does not answer to the name \\"attacker.example\\"/);
  t.notMatch(rebound.body, /dev-web/, 'and sees nothing of the API');
  t.equal((await get(web.url, null)).status, 400, 'no Host header');
});

function openIdle(port: number, localAddress: string): Promise<Socket> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port, localAddress });
    s.on('error', () => undefined);
    s.once('connect', () => resolve(s));
    s.once('close', () => resolve(s));
  });
}

t.test('half-open connection flood: capped per address and in total, then timed out', async (t) => {
  const web = await startWebServer({ host: '127.0.0.1', port: 0, data: store, maxConnections: 40, maxConnectionsPerIp: 16, headersTimeoutMs: 1_000 });
  t.teardown(() => web.close());
  const port = Number(new URL(web.url).port);
  const socks: Socket[] = [];
  t.teardown(() => { for (const s of socks) s.destroy(); });
  // 100 from one address, then 20 each from four more: connections that never send a byte.
  for (let i = 0; i < 100; i++) socks.push(await openIdle(port, '127.0.0.1'));
  await sleep(100);
  t.ok((await web.connections()) <= 16, `one address holds ${await web.connections()} connections (cap 16)`);
  for (const a of ['127.0.0.2', '127.0.0.3', '127.0.0.4', '127.0.0.5']) for (let i = 0; i < 20; i++) socks.push(await openIdle(port, a));
  await sleep(100);
  const held = await web.connections();
  t.ok(held <= 40, `all addresses hold ${held} connections (cap 40)`);
  t.ok(held >= 16, 'the caps, not a crash, bound them');
  // Nothing was sent on them: the header timeout ends them.
  const until = Date.now() + 5_000;
  while ((await web.connections()) > 0 && Date.now() < until) await sleep(100);
  t.equal(await web.connections(), 0, 'the idle connections were timed out');
  for (const s of socks) s.destroy();
  t.equal((await get(web.url, `127.0.0.1:${port}`)).status, 200, 'a client is served again');
});
