// Refused writes into the protected syscall tables (the KVM write trap,
// src/trap/): the write did not land, but something in the guest kernel tried
// to hook a syscall, so the guest counts as compromised until its kernel
// restarts. One observation per boot keeps the finding open until then.
import type { DetectorResult } from './types.js';

/** Refused writes seen in one boot of the guest (src/trap/syscall-table-trap.ts keeps it). */
export interface RefusedWriteTally {
  readonly bootGeneration: number;
  readonly count: number;
  /** Records the kernel's ring lost (the writes were still refused). */
  readonly lost: number;
  readonly firstAtMs: number;
  readonly lastRip: string | null;
  readonly lastGpa: string | null;
  readonly tables: readonly string[];
  /** Syscall slots hit (first 64). */
  readonly entries: readonly number[];
}

export function detectRefusedWrites(tally: RefusedWriteTally | null): DetectorResult {
  if (!tally || tally.count + tally.lost === 0) return { observations: [], undetermined: [] };
  const n = tally.count + tally.lost;
  return {
    observations: [{
      kind: 'syscall-write-refused',
      key: `boot-${tally.bootGeneration}`,
      summary: `${n} write${n === 1 ? '' : 's'} into ${tally.tables.join(', ') || 'a protected table'} refused by the write trap` +
        `${tally.entries.length > 0 ? ` (slots ${tally.entries.slice(0, 8).join(', ')}${tally.entries.length > 8 ? ', ...' : ''})` : ''}${tally.lastRip ? `, last from rip ${tally.lastRip}` : ''}`,
      target: null,
      evidence: {
        refused: tally.count, lost: tally.lost, firstAtMs: tally.firstAtMs, lastRip: tally.lastRip, lastGpa: tally.lastGpa,
        tables: [...tally.tables], entries: [...tally.entries],
      },
    }],
    undetermined: [],
  };
}
