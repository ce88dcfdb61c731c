// The QMP handshake against a scripted peer on a real unix socket: a QEMU that
// dies between listening and greeting must give an error at once, not a wait.
import t from 'tap';
import { createServer, type Server, type Socket } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { QmpClient } from '../../src/qemu/qmp-client.js';
import { NotReachableError, TimeoutError } from '../../src/util/errors.js';

const dir = mkdtempSync(join(tmpdir(), 'iv-qmp-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

async function fakeQemu(name: string, onConnect: (sock: Socket) => void): Promise<{ path: string; server: Server }> {
  const path = join(dir, name);
  const server = createServer(onConnect);
  await new Promise<void>((r) => server.listen(path, r));
  t.teardown(() => server.close());
  return { path, server };
}

t.test('greets, negotiates capabilities, answers a command', async (t) => {
  const { path } = await fakeQemu('ok.sock', (sock) => {
    sock.write(JSON.stringify({ QMP: { version: {}, capabilities: [] } }) + '\n');
    sock.on('data', (d: Buffer) => {
      for (const line of d.toString().split('\n').filter(Boolean)) {
        const cmd = JSON.parse(line) as { execute: string; id: string };
        const ret = cmd.execute === 'query-status' ? { status: 'running', running: true } : {};
        sock.write(JSON.stringify({ return: ret, id: cmd.id }) + '\n');
      }
    });
  });
  const qmp = await QmpClient.connect(path, 2_000);
  t.same(await qmp.queryStatus(), { status: 'running', running: true });
  qmp.close();
});

t.test('the peer closes before greeting: rejected at once as not reachable', async (t) => {
  const { path } = await fakeQemu('dies.sock', (sock) => sock.destroy());
  const err = await QmpClient.connect(path, 5_000).then(() => null, (e: unknown) => e);
  t.type(err, NotReachableError);
  t.match(String(err), /closed before QEMU greeted/);
});

t.test('the peer never greets: a timeout that names the greeting', async (t) => {
  const { path } = await fakeQemu('mute.sock', () => undefined);
  const err = await QmpClient.connect(path, 300).then(() => null, (e: unknown) => e);
  t.type(err, TimeoutError);
  t.match(String(err), /QMP greeting on .*mute\.sock/);
});
