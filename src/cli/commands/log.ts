// `introvisor log`: the event journal, oldest first, filtered by guest, time and kind.
import { EventStore } from '../../store/event-store.js';
import { defaultDatabasePath } from '../../util/paths.js';
import { EVENT_KINDS, type EventKind, type RecordedEvent } from '../../events/types.js';
import { parseSince } from '../../util/time.js';
import { parseArgs, intFlag, UsageError } from '../args.js';

export const usage = 'log [--guest NAME] [--since 15m|2h|7d|ISO] [--kind KIND[,KIND]] [--limit N] [--db FILE] [--json]   the event journal';

/** One line per event: what happened, in words an operator reads. */
export function describe(e: RecordedEvent): string {
  switch (e.kind) {
    case 'scan': return `scan ${e.payload.outcome} in ${Math.round(e.payload.durationMs)} ms, ${e.payload.findings} finding(s)${e.payload.error ? `: ${e.payload.error}` : ''}`;
    case 'finding': return `finding ${e.payload.state} ${e.payload.severity} ${e.payload.fault}: ${e.payload.summary}`;
    case 'ladder-step': return e.payload.step === null ? `ladder ${e.payload.fault} reset: ${e.payload.reason}` : `ladder ${e.payload.fault} -> step ${e.payload.step} ${String(e.payload.action)} (attempt ${e.payload.attempt}): ${e.payload.reason}`;
    case 'action': return `action ${e.payload.action}${e.payload.target ? ` ${e.payload.target}` : ''} ${e.payload.outcome}${e.payload.error ? `: ${e.payload.error}` : ''} (${Math.round(e.payload.durationMs)} ms)`;
    case 'refused-write': return `refused write to ${e.payload.table}${e.payload.entry !== null ? `[${e.payload.entry}]` : ''} gpa ${e.payload.gpa} len ${e.payload.length} from rip ${e.payload.rip} (vcpu ${e.payload.vcpu}) value ${e.payload.value}: ${e.payload.action === 'gp' ? '#GP' : 'dropped'} (${e.payload.source})${e.payload.lostBefore > 0 ? `, ${e.payload.lostBefore} lost before it` : ''}`;
    case 'policy-change': return `policy ${e.payload.outcome} version ${String(e.payload.version)} from ${e.payload.source}; running ${String(e.payload.activeVersion)}${e.payload.reason ? `: ${e.payload.reason}` : ''}`;
    case 'host-metrics': return `host cpu ${e.payload.cpuLoadPercent.toFixed(1)}% load ${e.payload.load1.toFixed(2)} mem ${(e.payload.memUsedBytes / 2 ** 30).toFixed(1)}/${(e.payload.memTotalBytes / 2 ** 30).toFixed(1)} GiB`;
    case 'guest-health': return `health ${e.payload.health}, ${e.payload.openFindings} open finding(s)${e.payload.note ? `: ${e.payload.note}` : ''}`;
    case 'outbox-dropped': return `telemetry outbox full (${e.payload.limit}): dropped ${e.payload.dropped} undelivered events, seq ${e.payload.firstSeq}..${e.payload.lastSeq}`;
    case 'device-state': return `device ${e.payload.state}`;
    case 'operator-action': return `operator ${e.payload.who}: ${e.payload.operation}${e.payload.detail ? ` ${e.payload.detail}` : ''} ${e.payload.outcome}${e.payload.error ? `: ${e.payload.error}` : ''} (${Math.round(e.payload.durationMs)} ms)`;
  }
}

export async function run(argv: string[]): Promise<number> {
  const args = parseArgs(argv, { boolean: ['json'], valued: ['guest', 'since', 'kind', 'limit', 'db'] });
  const kinds = ((args.flags.get('kind') as string | undefined) ?? '').split(',').filter((k) => k !== '');
  for (const k of kinds) if (!(EVENT_KINDS as readonly string[]).includes(k)) throw new UsageError(`--kind ${k}: not one of ${EVENT_KINDS.join(', ')}`);
  let sinceMs: number | undefined;
  const since = args.flags.get('since') as string | undefined;
  if (since !== undefined) {
    try { sinceMs = parseSince(since); } catch (e) { throw new UsageError(`--since: ${(e as Error).message}`); }
  }
  const limit = intFlag(args, 'limit', 200, 1, 100_000);
  const store = new EventStore({ path: (args.flags.get('db') as string | undefined) ?? defaultDatabasePath(), readOnly: true });
  try {
    const guest = args.flags.get('guest') as string | undefined;
    // Newest `limit` events, printed oldest first.
    const events = store.events({ limit, kinds: kinds as EventKind[], ...(guest !== undefined ? { guest } : {}), ...(sinceMs !== undefined ? { sinceMs } : {}) }).reverse();
    for (const e of events) {
      if (args.flags.has('json')) console.log(JSON.stringify(e));
      else console.log(`${new Date(e.atMs).toISOString()} #${e.seq} ${(e.guest ?? '-').padEnd(12)} ${describe(e)}`);
    }
    return 0;
  } finally {
    store.close();
  }
}
