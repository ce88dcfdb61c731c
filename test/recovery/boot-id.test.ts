// waitForNewBoot with a scripted agent shell: a reboot is over only when a different boot id answers.
import t from 'tap';
import { readBootId, waitForNewBoot } from '../../src/recovery/boot-id.js';

const A = '11111111-2222-3333-4444-555555555555';
const B = '66666666-7777-8888-9999-000000000000';

function scripted(answers: (string | Error)[]): { shell: (c: string, ms: number) => Promise<string>; calls: string[] } {
  const calls: string[] = [];
  return {
    calls,
    shell: async (c) => {
      calls.push(c);
      const a = answers.length > 1 ? answers.shift() : answers[0];
      if (a instanceof Error) throw a;
      return `${a ?? ''}\n`;
    },
  };
}

t.test('the old boot and agent errors are waited out; the new id is the answer', async (t) => {
  const s = scripted([A, new Error('connection closed'), A, B]);
  const id = await waitForNewBoot({ shell: s.shell, who: 'guest g', before: A, deadline: Date.now() + 10_000, what: 'OS reboot', readTimeoutMs: 1_000, pollMs: 10 });
  t.equal(id, B);
  t.equal(s.calls.length, 4);
  t.match(s.calls[0], /boot_id/);
});

t.test('any boot when nothing was known before', async (t) => {
  t.equal(await waitForNewBoot({ shell: scripted([A]).shell, who: 'guest g', before: null, deadline: Date.now() + 5_000, what: 'boot', readTimeoutMs: 1_000, pollMs: 10 }), A);
});

t.test('a guest that never comes back: a timeout naming the guest, what, and the last answer', async (t) => {
  await t.rejects(waitForNewBoot({ shell: scripted([A]).shell, who: 'guest g', before: A, deadline: Date.now() + 800, what: 'VM reset', readTimeoutMs: 200, pollMs: 50 }),
    /guest g: VM reset: the guest did not come back \(still the old boot\)/);
});

t.test('a boot id that is not a UUID is an error quoting what was read', async (t) => {
  await t.rejects(readBootId(scripted(['<script>x</script>']).shell, 'guest g', 1_000), /guest g: \/proc\/sys\/kernel\/random\/boot_id reads "<script>x<\/script>"/);
});
