// `introvisor status`: the appliance at a glance, read from the event store
// (works next to a running supervisor: the store is opened read-only).
import { existsSync } from 'node:fs';
import { EventStore } from '../../store/event-store.js';
import { defaultDatabasePath, defaultPolicyDir } from '../../util/paths.js';
import { FilePolicyStore } from '../../ota/policy-store.js';
import { validatePolicy } from '../../policy/schema.js';
import { parseArgs } from '../args.js';

export const usage = 'status [--db FILE] [--policy-dir DIR] [--json]   guests, open findings, ladders, outbox and policy (exit 3 when findings are open)';

const ago = (ms: number | null, now: number): string => {
  if (ms === null) return 'never';
  const s = Math.max(0, Math.round((now - ms) / 1000));
  return s < 120 ? `${s} s ago` : s < 7200 ? `${Math.round(s / 60)} min ago` : `${Math.round(s / 3600)} h ago`;
};

export async function run(argv: string[]): Promise<number> {
  const args = parseArgs(argv, { boolean: ['json'], valued: ['db', 'policy-dir'] });
  const db = (args.flags.get('db') as string | undefined) ?? defaultDatabasePath();
  const policyDir = (args.flags.get('policy-dir') as string | undefined) ?? defaultPolicyDir();
  const store = new EventStore({ path: db, readOnly: true });
  try {
    const policy = existsSync(policyDir) ? FilePolicyStore.open(policyDir, validatePolicy).currentStored() : null;
    const now = Date.now();
    const status = {
      device: store.deviceId,
      database: db,
      lastEvent: store.events({ limit: 1 })[0] ?? null,
      guests: store.guests(),
      findings: store.openFindings(),
      ladders: store.ladders(),
      outbox: store.outboxStats(),
      policy: policy ? { version: policy.version, source: policy.source, appliedAtMs: policy.appliedAtMs, keyId: policy.keyId } : null,
    };
    if (args.flags.has('json')) { console.log(JSON.stringify(status, null, 2)); return 0; }
    console.log(`device ${status.device}  (${db})`);
    console.log(`policy ${status.policy ? `version ${status.policy.version} from ${status.policy.source}, applied ${new Date(status.policy.appliedAtMs).toISOString()}` : `none in ${policyDir}`}`);
    console.log(`outbox ${status.outbox.pending} undelivered${status.outbox.droppedTotal ? `, ${status.outbox.droppedTotal} dropped since the store was created` : ''}; last event ${ago(status.lastEvent?.atMs ?? null, now)}`);
    console.log(`guests (${status.guests.length}):`);
    for (const g of status.guests) console.log(`  ${g.guest.padEnd(16)} ${g.health.padEnd(10)} ${g.openFindings} open finding(s), last scan ${ago(g.lastScanAtMs, now)}${g.note ? `  ${g.note}` : ''}`);
    console.log(`open findings (${status.findings.length}):`);
    for (const f of status.findings) console.log(`  ${f.guest.padEnd(16)} ${f.severity.padEnd(8)} ${f.fault}: ${f.summary}`);
    console.log(`active ladders (${status.ladders.length}):`);
    for (const l of status.ladders) console.log(`  ${l.guest.padEnd(16)} ${l.fault}: step ${String(l.step)} ${String(l.action)} attempt ${l.attempt} (${l.reason})`);
    return status.findings.length > 0 ? 3 : 0;
  } finally {
    store.close();
  }
}
