// The agent protocol against a scripted peer on a real unix socket: resync,
// the 0xFF delimiter, stale replies, timeouts and errors.
import t from 'tap';
import { createServer, type Socket } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GuestAgentClient, GuestAgentError } from '../../src/qemu/guest-agent-client.js';
import { NotReachableError, TimeoutError } from '../../src/util/errors.js';

const dir = mkdtempSync(join(tmpdir(), 'iv-qga-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

type Handler = (cmd: { execute: string; arguments?: Record<string, unknown> }, sock: Socket) => void;

async function fakeAgent(name: string, handler: Handler): Promise<{ path: string; received: Buffer[]; close: () => void }> {
  const path = join(dir, name);
  const received: Buffer[] = [];
  const server = createServer((sock) => {
    let buf = '';
    sock.on('data', (d: Buffer) => {
      received.push(d);
      buf += d.toString('utf8');
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        handler(JSON.parse(line), sock);
      }
    });
  });
  await new Promise<void>((r) => server.listen(path, r));
  return { path, received, close: () => server.close() };
}

const reply = (sock: Socket, v: unknown) => sock.write(JSON.stringify(v) + '\n');

t.test('syncs past stale output and strips the 0xFF delimiter', async (t) => {
  const agent = await fakeAgent('a.sock', (cmd, sock) => {
    if (cmd.execute === 'guest-sync-delimited') {
      // Leftovers from an earlier client, then the delimiter and our id.
      sock.write('{"return": {"pid": 7}}\n{"return": 99}\n');
      sock.write(Buffer.concat([Buffer.from([0xff]), Buffer.from(JSON.stringify({ return: cmd.arguments?.id }) + '\n')]));
    } else if (cmd.execute === 'guest-ping') reply(sock, { return: {} });
    else reply(sock, { error: { class: 'CommandNotFound', desc: `no ${cmd.execute}` } });
  });
  t.teardown(agent.close);
  const c = await GuestAgentClient.connect(agent.path);
  t.teardown(() => c.close());
  await c.ping();
  await t.rejects(c.execute('guest-nonsense'), GuestAgentError);
  await t.rejects(c.execute('guest-nonsense'), /CommandNotFound: no guest-nonsense/);
  t.equal(Buffer.concat(agent.received).indexOf(0xff), -1, 'the client never sends 0xFF');
});

t.test('a timed-out command is followed by a resync, so late replies are not misread', async (t) => {
  let syncs = 0;
  const agent = await fakeAgent('b.sock', (cmd, sock) => {
    if (cmd.execute === 'guest-sync-delimited') {
      syncs++;
      sock.write(Buffer.concat([Buffer.from([0xff]), Buffer.from(JSON.stringify({ return: cmd.arguments?.id }) + '\n')]));
    } else if (cmd.execute === 'guest-info') {
      setTimeout(() => reply(sock, { return: { version: 'late' } }), 150);
    } else if (cmd.execute === 'guest-ping') reply(sock, { return: { fresh: true } });
  });
  t.teardown(agent.close);
  const c = await GuestAgentClient.connect(agent.path);
  t.teardown(() => c.close());
  await t.rejects(c.execute('guest-info', undefined, 50), TimeoutError);
  await new Promise((r) => setTimeout(r, 200));
  t.same(await c.execute('guest-ping'), { fresh: true }, 'the late guest-info reply is not taken for the ping');
  t.equal(syncs, 2, 'one sync at connect, one after the timeout');
});

t.test('exec polls guest-exec-status and decodes output', async (t) => {
  let polls = 0;
  const agent = await fakeAgent('c.sock', (cmd, sock) => {
    if (cmd.execute === 'guest-sync-delimited') sock.write(Buffer.concat([Buffer.from([0xff]), Buffer.from(JSON.stringify({ return: cmd.arguments?.id }) + '\n')]));
    else if (cmd.execute === 'guest-exec') reply(sock, { return: { pid: 42 } });
    else if (cmd.execute === 'guest-exec-status') {
      polls++;
      reply(sock, polls < 3 ? { return: { exited: false } }
        : { return: { exited: true, exitcode: 0, 'out-data': Buffer.from('PID USER\n1 root\n').toString('base64') } });
    }
  });
  t.teardown(agent.close);
  const c = await GuestAgentClient.connect(agent.path);
  t.teardown(() => c.close());
  const r = await c.exec('/bin/ps');
  t.equal(r.exitCode, 0);
  t.equal(r.stdout.toString(), 'PID USER\n1 root\n');
  t.equal(polls, 3);
});

t.test('a missing socket is a clear NotReachableError', async (t) => {
  await t.rejects(GuestAgentClient.connect(join(dir, 'nope.sock')), NotReachableError);
  await t.rejects(GuestAgentClient.connect(join(dir, 'nope.sock')), /socket does not exist \(is the guest running\?\)/);
});
