// From one scan's observations to confirmed findings: an observation counts
// once it was seen in policy.faults[kind].confirmScans consecutive scans
// (a process that starts or exits between two views does not persist). The
// confirmed observations of one kind make one finding; findings are raised
// and cleared as that set changes. A kind the scan could not judge keeps its
// state (neither confirmed further nor cleared).
import { createHash } from 'node:crypto';
import type { FaultKind } from '../policy/types.js';
import type { DetectorResult, Finding, Observation } from './types.js';

export const SEVERITY: Readonly<Record<FaultKind, Finding['severity']>> = {
  'critical-process-missing': 'critical',
  'hidden-process': 'critical',
  'syscall-table-changed': 'critical',
  'kernel-integrity-changed': 'critical',
  'hidden-module': 'critical',
  'agent-down': 'warning',
  'syscall-write-refused': 'critical',
  'introspection-failed': 'critical',
  'guest-report-malformed': 'warning',
  'unowned-kernel-code': 'critical',
  'ftrace-hook': 'critical',
  'kprobe-hook': 'critical',
  'tracepoint-hook': 'critical',
  'bpf-hook': 'critical',
};

interface Streak { count: number; firstSeenMs: number; obs: Observation }

export interface TrackerUpdate {
  /** Every confirmed finding after this scan. */
  readonly findings: readonly Finding[];
  readonly raised: readonly Finding[];
  readonly cleared: readonly Finding[];
}

export class FindingTracker {
  private streaks = new Map<string, Streak>();
  private open = new Map<FaultKind, Finding>();

  constructor(private readonly confirmScans: (kind: FaultKind) => number) {}

  /**
   * The guest booted again: an observation not confirmed yet was about the previous boot's kernel
   * and processes (a new boot gives its early processes the same pids), so it counts afresh; a
   * confirmed one stands until a scan of the new boot lacks it.
   */
  newBoot(): void {
    for (const [k, s] of this.streaks) if (s.count < Math.max(1, this.confirmScans(s.obs.kind))) this.streaks.delete(k);
  }

  update(result: DetectorResult, nowMs: number): TrackerUpdate {
    const undetermined = new Set(result.undetermined);
    const next = new Map<string, Streak>();
    for (const o of result.observations) {
      const k = `${o.kind}\u0000${o.key}`;
      if (next.has(k)) continue;
      const prev = this.streaks.get(k);
      next.set(k, { count: (prev?.count ?? 0) + 1, firstSeenMs: prev?.firstSeenMs ?? nowMs, obs: o });
    }
    for (const [k, s] of this.streaks) if (undetermined.has(s.obs.kind) && !next.has(k)) next.set(k, s);
    this.streaks = next;

    const byKind = new Map<FaultKind, Streak[]>();
    for (const s of next.values()) {
      if (s.count < Math.max(1, this.confirmScans(s.obs.kind))) continue;
      const list = byKind.get(s.obs.kind) ?? [];
      list.push(s);
      byKind.set(s.obs.kind, list);
    }
    const raised: Finding[] = [];
    const cleared: Finding[] = [];
    const open = new Map<FaultKind, Finding>();
    for (const [kind, prev] of this.open) {
      if (undetermined.has(kind) && !byKind.has(kind)) open.set(kind, prev);
      else if (!byKind.has(kind)) cleared.push(prev);
    }
    for (const [kind, list] of byKind) {
      list.sort((a, b) => (a.obs.key < b.obs.key ? -1 : a.obs.key > b.obs.key ? 1 : 0));
      const id = `${kind}:${createHash('sha256').update(list.map((s) => s.obs.key).join('\n')).digest('hex').slice(0, 16)}`;
      const prev = this.open.get(kind);
      if (prev && prev.id === id) {
        open.set(kind, prev);
        continue;
      }
      const targets = [...new Set(list.map((s) => s.obs.target).filter((x): x is string => x !== null))];
      const f: Finding = {
        kind,
        id,
        severity: SEVERITY[kind],
        summary: list.length === 1 ? (list[0] as Streak).obs.summary : `${list.length} ${kind} discrepancies: ${list.slice(0, 3).map((s) => s.obs.summary).join('; ')}${list.length > 3 ? '; ...' : ''}`,
        target: targets.length > 0 ? targets.join(',') : null,
        evidence: { count: list.length, items: list.slice(0, 64).map((s) => ({ key: s.obs.key, ...s.obs.evidence })) },
        // A loop, not Math.min(...spread): the guest sets how many observations there are.
        firstSeenMs: list.reduce((m, s) => Math.min(m, s.firstSeenMs), Infinity),
      };
      if (prev) cleared.push(prev);
      raised.push(f);
      open.set(kind, f);
    }
    this.open = open;
    return { findings: [...open.values()], raised, cleared };
  }
}
