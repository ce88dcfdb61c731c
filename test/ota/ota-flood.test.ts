// An outsider flooding policy/set cannot flood the journal: 30,000 garbage
// messages (distinct ones on the device topic, one replayed on a group topic)
// become a bounded, exact number of events and outbox rows in a real SQLite
// store, and a good bundle after the flood (once the rate allows) still applies.
// The clock is the agent's injected one so the count is exact: the flood takes
// 2.5 s of it, as the reported 30,000 in 3 s did.
import t from 'tap';
import { createPrivateKey } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EventStore } from '../../src/store/event-store.js';
import { Keyring, generateSigningKey } from '../../src/ota/keyring.js';
import { createBundle } from '../../src/ota/bundle.js';
import { FilePolicyStore } from '../../src/ota/policy-store.js';
import { OTA_BURST, OtaAgent } from '../../src/ota/ota-agent.js';
import { validatePolicy } from '../../src/policy/schema.js';
import type { Policy } from '../../src/policy/types.js';

const DEVICE = 'dev-flood';
const GROUP = 'fleet';

t.test('30,000 garbage policy/set messages: a bounded, exact number of events and rows', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'iv-ota-flood-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const key = generateSigningKey();
  mkdirSync(join(dir, 'keyring'));
  writeFileSync(join(dir, 'keyring', 'ops.pub'), key.publicPem);
  const store = new EventStore({ path: join(dir, 'events.db'), deviceId: DEVICE });
  t.teardown(() => store.close());
  const policies = FilePolicyStore.open<Policy>(join(dir, 'policy'), validatePolicy, { document: { version: 1 }, source: 'file' });
  let clock = 1_000_000;
  const published: string[] = [];
  const agent = new OtaAgent<Policy>({
    deviceId: DEVICE, groups: [GROUP], keyring: Keyring.loadDir(join(dir, 'keyring')), store: policies, sink: store, validatePolicy,
    publishRetained: (_topic, msg) => { published.push(msg); }, now: () => clock,
  });
  t.teardown(() => agent.close());
  const device = agent.topics.policySet;
  const group = agent.topics.groupPolicySet(GROUP);
  const dbBefore = statSync(join(dir, 'events.db')).size;

  const N = 30_000;
  const pending: Promise<unknown>[] = [];
  for (let i = 0; i < N; i++) {
    clock = 1_000_000 + (i * 2500) / N; // 30,000 messages in 2.5 s
    // Even: distinct garbage on the device topic. Odd: one message replayed on the group topic.
    pending.push(i % 2 === 0 ? agent.handle(device, Buffer.from(`garbage ${i} ${'x'.repeat(i % 97)}`)) : agent.handle(group, Buffer.from('{"replayed": true}')));
  }
  await Promise.all(pending);
  agent.flush();

  const changes = store.events({ kinds: ['policy-change'], limit: 1000, newestFirst: false });
  const reasons = changes.map((c) => (c.kind === 'policy-change' ? c.payload.reason ?? '' : ''));
  // Each topic is its own source: OTA_BURST (60) at once, then one a second: 60 + 2 in 2.5 s.
  const admitted = OTA_BURST + 2;
  const deviceRejections = reasons.filter((r) => r.startsWith('not-json'));
  const groupRejections = reasons.filter((r) => r.startsWith('bad-envelope'));
  t.equal(deviceRejections.length, admitted, `${admitted} distinct garbage messages journaled, each once`);
  t.equal(groupRejections.length, 1, 'the replayed message journaled once');
  t.match(reasons.filter((r) => r.includes('more identical messages')), [`${admitted - 1} more identical messages rejected since`]);
  t.same(reasons.filter((r) => r.startsWith('rate-limited')).map((r) => r.replace(/ since \S+/, '')).sort(), [
    `rate-limited: ${N / 2 - admitted} messages on ${device} dropped unread (at most 60 at once, then 1 a second)`,
    `rate-limited: ${N / 2 - admitted} messages on ${group} dropped unread (at most 60 at once, then 1 a second)`,
  ].sort());
  // 62 + 1 + 1 + 2 instead of 30,000.
  t.equal(changes.length, admitted + 4, `${changes.length} events for ${N} messages`);
  t.equal(store.outboxStats().pending, admitted + 4, 'as many outbox rows');
  t.equal(published.length, admitted + 1, 'one retained state per message read and not folded');
  t.ok(statSync(join(dir, 'events.db')).size - dbBefore < 1024 * 1024, 'the database grew by less than 1 MiB');

  // After the flood, once the rate allows, a good bundle still applies.
  clock += 10_000;
  const good = createBundle({ version: 2, target: { device: DEVICE }, issuedAtMs: Math.floor(clock), policy: { version: 1 } }, createPrivateKey(key.privatePem));
  const state = await agent.handle(device, Buffer.from(JSON.stringify(good)));
  t.equal(state?.payload.status, 'applied', `applied: ${state?.payload.reason ?? ''}`);
});
