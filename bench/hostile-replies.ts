// What a hostile guest agent's reply costs the supervisor's one thread: the
// framing's refusal of a 20 MB deeply nested line and of 20 MB of tiny arrays,
// and the cost of a legitimate 21 MiB base64 guest-exec-status reply.
import { JsonLineDecoder, MAX_AGENT_LINE_BYTES } from '../src/qemu/json-lines.js';
import { median } from './stats.js';

const ms = (t0: bigint): number => Number(process.hrtime.bigint() - t0) / 1e6;

function time(line: Buffer, runs: number): { ms: number; outcome: string } {
  const times: number[] = [];
  let outcome = '';
  for (let i = 0; i < runs; i++) {
    const d = new JsonLineDecoder(MAX_AGENT_LINE_BYTES);
    const t0 = process.hrtime.bigint();
    const ev = [];
    for (let off = 0; off < line.length; off += 64 * 1024) for (const e of d.push(line.subarray(off, off + 64 * 1024))) ev.push(e);
    times.push(ms(t0));
    outcome = ev.map((e) => e.kind).join(',');
  }
  return { ms: median(times), outcome };
}

export async function bench(): Promise<void> {
  const D = 10 * 1024 * 1024;
  const cases: [string, Buffer][] = [
    ['20 MB nested 10M deep', Buffer.concat([Buffer.from('{"return": '), Buffer.alloc(D, '['), Buffer.alloc(D, ']'), Buffer.from('}\n')])],
    ['20 MB of 5M tiny arrays', Buffer.from('{"return": [' + '[1],'.repeat(5 * 1024 * 1024) + '1]}\n')],
    ['21 MiB base64 exec output', Buffer.from('{"return": {"exited": true, "exitcode": 0, "out-data": "' + 'QUJD'.repeat((16 * 1024 * 1024) / 3) + '"}}\n')],
  ];
  for (const [name, line] of cases) {
    const r = time(line, 5);
    console.log(`${name.padEnd(28)} ${r.ms.toFixed(1).padStart(8)} ms median of 5  (${r.outcome}; heap ${(process.memoryUsage().heapUsed / 1048576).toFixed(0)} MiB)`);
  }
}
