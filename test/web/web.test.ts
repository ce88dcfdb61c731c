// The operator page in a real headless Chromium (Debian's chromium through
// playwright-core), served from a real event store: it shows the guest, the
// finding, the ladder, the action and the refused write this test recorded,
// renders guest-controlled strings as text, and the API wants a token when one
// is configured (and always off loopback).
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext } from 'playwright-core';
import { EventStore } from '../../src/store/event-store.js';
import { startWebServer, isLoopback } from '../../src/web/server.js';
import { parseSince } from '../../src/util/time.js';
import { sampleEvents } from '../telemetry/sample-events.js';

const dir = mkdtempSync(join(tmpdir(), 'iv-web-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

// A fresh profile each time (playwright passes it as --user-data-dir).
async function launch(): Promise<BrowserContext> {
  return chromium.launchPersistentContext(mkdtempSync(join(dir, 'chromium-')), {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
}

const XSS = '<img src=x onerror="document.title=\'pwned\'">';

t.test('the page shows a guest, a finding, a ladder, an action and a refused write', async (t) => {
  const store = new EventStore({ path: join(dir, 'page.db'), deviceId: 'appliance-7', outboxLimit: 0 });
  t.teardown(() => store.close());
  for (const e of sampleEvents('web-guest-1')) store.record(e);
  // A hidden-process finding whose name comes from the guest, with markup in it.
  store.record({ kind: 'finding', payload: { guest: 'web-guest-1', findingId: 'hidden-process:pid=4242', fault: 'hidden-process', state: 'raised', severity: 'warning', summary: `pid 4242 ${XSS} is on the run queue but not on the task list`, evidence: { pid: 4242 } } });
  store.record({ kind: 'action', payload: { guest: 'web-guest-1', actionId: 'a-2', action: 'reboot-os', fault: 'hidden-process', target: null, outcome: 'failed', error: 'guest agent did not answer', startedAtMs: Date.now(), durationMs: 30000 } });

  const web = await startWebServer({ host: '127.0.0.1', port: 0, data: store, status: () => ({ policyVersion: 4, telemetry: { connected: false } }) });
  t.teardown(() => web.close());
  const browser = await launch();
  t.teardown(() => browser.close());
  const page = await browser.newPage();
  const consoleErrors: string[] = [];
  page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
  page.on('pageerror', (e) => consoleErrors.push(e.message));
  await page.goto(web.url);
  await page.waitForSelector('body[data-loaded]', { timeout: 15_000 });

  const text = async (sel: string): Promise<string> => (await page.locator(sel).innerText()).replace(/\s+/g, ' ');
  const guests = await text('#guests tbody');
  t.match(guests, /web-guest-1 recovering 1 /, `guest row: ${guests}`);
  const findings = await text('#findings tbody');
  t.match(findings, /web-guest-1 syscall-table-changed critical sys_call_table\[39\] \(getpid\) points into module iv_syscall_hook/, 'finding shown');
  t.ok(findings.includes(`pid 4242 ${XSS} is on the run queue`), 'guest-controlled markup shown as text');
  t.equal(await page.locator('#findings img').count(), 0, 'and not turned into elements');
  t.not(await page.title(), 'pwned');
  t.match(await text('#ladders tbody'), /web-guest-1 syscall-table-changed 0 restore-image 1 syscall table changed/, 'ladder state shown');
  const actions = await text('#actions tbody');
  t.match(actions, /web-guest-1 restore-image syscall-table-changed ok 7012 ms/, 'action shown');
  t.match(actions, /reboot-os hidden-process failed: guest agent did not answer 30000 ms/, 'failed action with its error');
  t.match(await text('#refused tbody'), /web-guest-1 0 sys_call_table 39 0x2a001138 0xffffffffc0a01234 8 e0a1a0c0ffffffff #GP emulated 0/, 'refused write shown');
  t.match(await text('#status'), /outbox: 0 undelivered · policy v4 · broker disconnected/);
  t.match(await text('#device'), /appliance-7/);
  t.same(consoleErrors, [], 'no script errors (strict CSP, no inline script)');
});

t.test('the API: JSON, strict parameters, token when configured', async (t) => {
  const store = new EventStore({ path: join(dir, 'api.db'), deviceId: 'appliance-8', outboxLimit: 0 });
  t.teardown(() => store.close());
  for (const e of sampleEvents('g1')) store.record(e);
  const token = 'a-long-enough-token-0123456789';
  const web = await startWebServer({ host: '127.0.0.1', port: 0, data: store, token });
  t.teardown(() => web.close());
  const get = (path: string, auth?: string): Promise<Response> => fetch(new URL(path, web.url), auth ? { headers: { authorization: `Bearer ${auth}` } } : {});

  t.equal((await get('/api/guests')).status, 401, 'no token: 401');
  t.equal((await get('/api/guests', 'wrong-token-wrong-token')).status, 401, 'wrong token: 401');
  const ok = await get('/api/guests', token);
  t.equal(ok.status, 200);
  t.equal(((await ok.json()) as { guest: string }[])[0]?.guest, 'g1');
  t.equal((await get('/')).status, 200, 'the page itself carries no data and loads without a token');
  t.equal((await get('/api/actions?limit=0', token)).status, 400, 'limit out of range');
  t.equal((await get('/api/events?kind=nope', token)).status, 400, 'unknown kind');
  t.equal((await get('/api/findings?guest=../etc', token)).status, 400, 'bad guest name');
  const since = await get(`/api/events?since=1h&kind=refused-write`, token);
  t.equal(((await since.json()) as unknown[]).length, 1);
  t.equal((await fetch(new URL('/api/guests', web.url), { method: 'POST', headers: { authorization: `Bearer ${token}` } })).status, 405, 'read-only');

  // The page with the token in its fragment shows data.
  const browser = await launch();
  t.teardown(() => browser.close());
  const page = await browser.newPage();
  await page.goto(`${web.url}#token=${token}`);
  await page.waitForSelector('body[data-loaded]', { timeout: 15_000 });
  t.match(await page.locator('#guests tbody').innerText(), /g1/);
  t.notMatch(page.url(), /token/, 'the token is taken out of the address bar');
});

t.test('off loopback the server refuses to start without a token', async (t) => {
  t.ok(isLoopback('127.0.0.1') && isLoopback('::1') && isLoopback('localhost') && isLoopback('127.1.2.3'));
  t.notOk(isLoopback('0.0.0.0') || isLoopback('192.168.1.10') || isLoopback('::'));
  const store = new EventStore({ path: join(dir, 'lan.db'), deviceId: 'appliance-9', outboxLimit: 0 });
  t.teardown(() => store.close());
  await t.rejects(startWebServer({ host: '0.0.0.0', port: 0, data: store }), /not loopback\) needs an access token/);
  await t.rejects(startWebServer({ host: '0.0.0.0', port: 0, data: store, token: 'short' }), /at least 16 characters/);
  t.equal(parseSince('2h', 10_000_000), 10_000_000 - 7_200_000);
  t.equal(parseSince('2026-01-01T00:00:00Z'), Date.parse('2026-01-01T00:00:00Z'));
  t.throws(() => parseSince('yesterday'), /not a time/);
});
