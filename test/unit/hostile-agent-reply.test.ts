// A guest agent that answers with what no agent sends cannot stall the
// supervisor's one thread: a 20 MB line nested a million levels deep is refused
// by the framing (one linear pass, no JSON.parse), on a real unix socket the
// command fails at once naming the bound instead of at its timeout, and the
// heap does not grow by the gigabyte JSON.parse would take. Time is checked
// only against the seconds the old parse took (speed itself is in the bench).
import t from 'tap';
import { createServer, type Socket } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { JsonLineDecoder, MAX_AGENT_LINE_BYTES, MAX_QMP_LINE_BYTES, jsonShapeRefusal } from '../../src/qemu/json-lines.js';
import { GuestAgentClient } from '../../src/qemu/guest-agent-client.js';

const dir = mkdtempSync(join(tmpdir(), 'iv-hostile-qga-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

const DEPTH = 10 * 1024 * 1024;
/** {"return": [[[[...]]]]}: 20 MB, well under the 64 MiB bound the framing had. */
const deepLine = (): Buffer => Buffer.concat([Buffer.from('{"return": '), Buffer.alloc(DEPTH, '['), Buffer.alloc(DEPTH, ']'), Buffer.from('}\n')]);

t.test('the bounds: far below 64 MiB, and every legitimate reply fits', async (t) => {
  t.ok(MAX_AGENT_LINE_BYTES < 64 * 1024 * 1024 / 2);
  // qemu-ga captures at most 16 MiB of output; base64 of that plus the envelope must fit.
  t.ok(MAX_AGENT_LINE_BYTES > Math.ceil((16 * 1024 * 1024) / 3) * 4 + 4096);
  t.ok(MAX_QMP_LINE_BYTES <= MAX_AGENT_LINE_BYTES);
});

t.test('shape scan: strings and escapes do not count, depth and element count do', async (t) => {
  t.equal(jsonShapeRefusal(Buffer.from('{"a":[1,{"b":"[[[[\\"[[[,,,:::"}]}'), 3, 10), null);
  t.equal(jsonShapeRefusal(Buffer.from('{"a":"x\\\\","b":[[1]]}'), 2), 'JSON nested deeper than 2 levels (at byte 16 of a 21-byte line) refused', 'an escaped backslash ends the string');
  t.match(jsonShapeRefusal(Buffer.from('[[[[1]]]]'), 3), /deeper than 3 levels \(at byte 3 of/);
  t.equal(jsonShapeRefusal(Buffer.from('{"return": {"pid": 7, "out-data": "W1tb"}}')), null);
  t.match(jsonShapeRefusal(Buffer.from('[' + '[1],'.repeat(10) + '1]'), 64, 8), /more than 8 elements \(at byte \d+ of a 43-byte line\)/);
});

t.test('20 MB of five million tiny arrays (seconds in JSON.parse) is refused too', async (t) => {
  const d = new JsonLineDecoder(MAX_AGENT_LINE_BYTES);
  const events = d.push(Buffer.from('{"return": [' + '[1],'.repeat(5 * 1024 * 1024) + '1]}\n'));
  t.match(events, [{ kind: 'garbage', reason: /JSON with more than 262144 elements/ }]);
});

t.test('a 20 MB deeply nested line is refused with a clear reason, without parsing it', async (t) => {
  const d = new JsonLineDecoder(MAX_AGENT_LINE_BYTES);
  const line = deepLine();
  const heapBefore = process.memoryUsage().heapUsed;
  const started = process.hrtime.bigint();
  // Fed in socket-sized chunks, as it arrives.
  const events = [];
  for (let off = 0; off < line.length; off += 64 * 1024) events.push(...d.push(line.subarray(off, off + 64 * 1024)));
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  const grown = process.memoryUsage().heapUsed - heapBefore;
  t.equal(events.length, 1);
  t.match(events[0], { kind: 'garbage', reason: /JSON nested deeper than 64 levels \(at byte 74 of a 20971532-byte line\) refused/ });
  t.ok(ms < 2000, `refused in ${ms.toFixed(1)} ms (JSON.parse took seconds)`);
  t.ok(grown < 200 * 1024 * 1024, `heap grew ${(grown / 1048576).toFixed(1)} MiB`);
  t.same(d.push(Buffer.from('{"return": 1}\n')), [{ kind: 'message', value: { return: 1 } }], 'the next line is read as usual');
});

t.test('a line over the bound is dropped as it streams in, not buffered', async (t) => {
  const d = new JsonLineDecoder(1024);
  const out = [...d.push(Buffer.alloc(800, 'a')), ...d.push(Buffer.alloc(800, 'a')), ...d.push(Buffer.alloc(5000, 'a'))];
  t.same(out.map((e) => e.kind), ['garbage'], 'one event for the whole over-long line');
  t.same(d.push(Buffer.from('aaa\n{"ok":1}\n')), [{ kind: 'message', value: { ok: 1 } }], 'its tail is not mistaken for a line');
});

async function fakeAgent(name: string, onCommand: (cmd: { execute: string; arguments?: { id?: number } }, sock: Socket) => void): Promise<{ path: string; close: () => void }> {
  const path = join(dir, name);
  const server = createServer((sock) => {
    let buf = '';
    sock.on('error', () => undefined);
    sock.on('data', (d: Buffer) => {
      buf += d.toString('utf8');
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        onCommand(JSON.parse(line), sock);
      }
    });
  });
  await new Promise<void>((r) => server.listen(path, r));
  return { path, close: () => server.close() };
}

t.test('on a real socket: the command fails at once naming the bound, and the client keeps working', async (t) => {
  let hostile = true;
  const agent = await fakeAgent('deep.sock', (cmd, sock) => {
    if (cmd.execute === 'guest-sync-delimited') sock.write(Buffer.concat([Buffer.from([0xff]), Buffer.from(JSON.stringify({ return: cmd.arguments?.id }) + '\n')]));
    else if (hostile) { hostile = false; sock.write(deepLine()); }
    else sock.write('{"return": {}}\n');
  });
  t.teardown(agent.close);
  const c = await GuestAgentClient.connect(agent.path);
  t.teardown(() => c.close());
  const started = Date.now();
  await t.rejects(c.execute('guest-ping', undefined, 5_000), /guest agent guest-ping on .*deep\.sock: reply refused: JSON nested deeper than 64 levels/);
  t.ok(Date.now() - started < 4_000, `failed after ${Date.now() - started} ms, not at the 5 s timeout`);
  await c.ping(5_000);
  t.pass('the next command resyncs and is answered');
});

t.test('an agent that only answers a sync with other ids: the error gives the whole wait', async (t) => {
  const agent = await fakeAgent('wrong-id.sock', (cmd, sock) => {
    if (cmd.execute !== 'guest-sync-delimited') return;
    const wrong = (cmd.arguments?.id ?? 0) + 1;
    const timer = setInterval(() => {
      if (sock.destroyed) return clearInterval(timer);
      sock.write(Buffer.concat([Buffer.from([0xff]), Buffer.from(JSON.stringify({ return: wrong }) + '\n')]));
    }, 1);
    sock.on('close', () => clearInterval(timer));
  });
  t.teardown(agent.close);
  const c = await GuestAgentClient.connect(agent.path);
  t.teardown(() => c.close());
  const err = await c.ping(600).then(() => null, (e: unknown) => e as Error);
  t.ok(err, 'the ping fails');
  t.match(err?.message, /guest agent sync on .*wrong-id\.sock \(the agent only replies to other sync ids: \d+ such replies\): no answer within 600 ms/);
  t.notMatch(err?.message, /within [0-9] ms|within [0-9]{2} ms/, 'never the few ms left of the wait');
  t.match(err?.message, /only replies to other sync ids/);
});
