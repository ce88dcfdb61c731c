// Syscall integrity: every slot of every syscall table must hold its own
// handler in kernel text, and must equal the baseline recorded at the first
// clean scan. An observation per changed slot: old and new target, and the
// module that owns the new target if any.
import type { KernelSnapshot, SyscallEntry, SyscallTableView } from '../views/types.js';
import { slidAddresses, unrel, type KernelBaseline } from './baseline.js';
import { hex, type DetectorResult, type JsonValue, type Observation } from './types.js';

function ownerJson(e: SyscallEntry): JsonValue {
  switch (e.owner.kind) {
    case 'kernel': return { kind: 'kernel', symbol: e.owner.symbol };
    case 'module': return { kind: 'module', module: e.owner.module, symbol: e.owner.symbol };
    default: return { kind: 'unknown' };
  }
}

function ownerText(e: SyscallEntry): string {
  switch (e.owner.kind) {
    case 'kernel': return e.owner.symbol;
    case 'module': return `${e.owner.symbol ?? hex(e.target)} in module ${e.owner.module}`;
    default: return `${hex(e.target)} (no kernel symbol or module)`;
  }
}

/** Slots whose handler is not their own kernel handler. */
export function selfCheckViolations(t: SyscallTableView): SyscallEntry[] {
  return t.entries.filter((e) => e.owner.kind !== 'kernel' || (e.expected !== null && e.owner.symbol !== e.expected));
}

// The answer for one tables view (the views reuse an unchanged scan's object), baseline and slide.
const answered = new WeakMap<readonly SyscallTableView[], { readonly baseline: KernelBaseline | null; readonly slide: bigint; readonly result: DetectorResult }>();

export function detectSyscallChanges(snap: KernelSnapshot, baseline: KernelBaseline | null): DetectorResult {
  const kept = answered.get(snap.syscallTables);
  if (kept && kept.baseline === baseline && kept.slide === snap.kernel.kaslrSlide) return kept.result;
  const result = compareTables(snap, baseline);
  answered.set(snap.syscallTables, { baseline, slide: snap.kernel.kaslrSlide, result });
  return result;
}

function compareTables(snap: KernelSnapshot, baseline: KernelBaseline | null): DetectorResult {
  if (snap.syscallTables.length === 0 || snap.syscallTables.some((t) => t.errors.length > 0 && t.entries.length === 0)) {
    return { observations: [], undetermined: ['syscall-table-changed'] };
  }
  const slide = snap.kernel.kaslrSlide;
  const observations: Observation[] = [];
  for (const t of snap.syscallTables) {
    const base = baseline?.syscalls[t.table];
    const flagged = new Set<number>();
    const push = (e: SyscallEntry, why: string, old: bigint | null): void => {
      if (flagged.has(e.nr)) return;
      flagged.add(e.nr);
      const module = e.owner.kind === 'module' ? e.owner.module : null;
      observations.push({
        kind: 'syscall-table-changed',
        key: `${t.table}[${e.nr}]=${hex(e.target)}`,
        summary: `${t.table}[${e.nr}] points to ${ownerText(e)}${e.expected ? ` instead of ${e.expected}` : ''} (${why})`,
        target: null,
        evidence: {
          table: t.table, nr: e.nr, expected: e.expected, oldTarget: old === null ? null : hex(old), newTarget: hex(e.target),
          owner: ownerJson(e), module, reason: why,
        },
      });
    };
    for (const e of selfCheckViolations(t)) {
      const b = base?.[e.nr];
      push(e, 'not its own kernel handler', b ? unrel(b, slide) : null);
    }
    if (base) {
      const addrs = slidAddresses(base, slide);
      for (const e of t.entries) {
        const was = addrs[e.nr];
        if (was === undefined || was === null) continue;
        if (was !== e.target) push(e, 'differs from the baseline', was);
      }
    }
  }
  return Object.freeze({ observations: Object.freeze(observations), undetermined: [] });
}
