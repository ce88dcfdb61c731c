// JSON views of a guest's latest observation, for the control socket, the CLI
// and the page. Pure: addresses become "0x..." strings, task states ps letters,
// and the processes are crossed: the kernel's task list (outside, from memory)
// against the guest's own ps (inside, through its agent).
import { hex } from '../detectors/types.js';
import { taskStateLetter } from '../views/task-state.js';
import type { GuestObservation } from './types.js';

export interface ProcessRow {
  readonly pid: number;
  readonly ppid: number | null;
  readonly comm: string;
  /** ps letter from the task_struct (outside); null when the kernel's task list lacks the pid. */
  readonly outside: string | null;
  /** ps letter from the guest's /proc (inside); null when the guest does not list it. */
  readonly inside: string | null;
  readonly kernelThread: boolean;
  /** Seen on one side only: what the cross view is for. */
  readonly mismatch: boolean;
}

export interface ProcessView {
  readonly atMs: number | null;
  /** Why a side is missing (agent down, kernel unreadable). */
  readonly outsideError: string | null;
  readonly insideError: string | null;
  readonly rows: readonly ProcessRow[];
}

export function processView(o: GuestObservation | null): ProcessView {
  if (!o) return { atMs: null, outsideError: 'no scan yet', insideError: 'no scan yet', rows: [] };
  const rows = new Map<number, { pid: number; ppid: number | null; comm: string; outside: string | null; inside: string | null; kernelThread: boolean }>();
  for (const t of o.snapshot?.tasks.tasks ?? []) {
    rows.set(t.pid, { pid: t.pid, ppid: t.ppid, comm: t.comm, outside: taskStateLetter(t.state), inside: null, kernelThread: t.kernelThread });
  }
  const inside = o.report.agent === 'ok' ? o.report.processes : [];
  for (const p of inside) {
    const r = rows.get(p.pid);
    if (r) r.inside = p.state;
    else rows.set(p.pid, { pid: p.pid, ppid: p.ppid, comm: p.comm, outside: null, inside: p.state, kernelThread: false });
  }
  const both = o.snapshot !== null && o.report.agent === 'ok';
  return {
    atMs: o.startedAtMs,
    outsideError: o.snapshot ? null : o.snapshotError ?? 'no kernel snapshot',
    insideError: o.report.agent === 'ok' ? null : o.report.error,
    rows: [...rows.values()].sort((a, b) => a.pid - b.pid)
      // Only when both sides were read can a one-sided row mean anything.
      .map((r) => ({ ...r, mismatch: both && (r.outside === null || r.inside === null) })),
  };
}

export interface ModuleRow { readonly name: string; readonly address: string; readonly coreBase: string; readonly coreSize: number; readonly onList: boolean; readonly inSysfs: boolean; readonly mismatch: boolean }

export function moduleView(o: GuestObservation | null): { atMs: number | null; error: string | null; rows: ModuleRow[] } {
  const snap = o?.snapshot;
  if (!o || !snap) return { atMs: o?.startedAtMs ?? null, error: o?.snapshotError ?? 'no scan yet', rows: [] };
  const rows = new Map<string, ModuleRow>();
  const add = (m: { name: string; address: bigint; coreBase: bigint; coreSize: number }, side: 'onList' | 'inSysfs'): void => {
    const key = hex(m.address);
    const r = rows.get(key) ?? { name: m.name, address: key, coreBase: hex(m.coreBase), coreSize: m.coreSize, onList: false, inSysfs: false, mismatch: false };
    rows.set(key, { ...r, [side]: true });
  };
  for (const m of snap.modules.modules) add(m, 'onList');
  for (const m of snap.modules.kobjects) add(m, 'inSysfs');
  return {
    atMs: o.startedAtMs,
    error: snap.modules.errors.map((e) => `${e.where}: ${e.message}`).join('; ') || null,
    rows: [...rows.values()].map((r) => ({ ...r, mismatch: r.onList !== r.inSysfs })).sort((a, b) => a.name.localeCompare(b.name)),
  };
}

export interface SyscallRow { readonly nr: number; readonly target: string; readonly owner: string; readonly expected: string | null; readonly suspicious: boolean }

/** Each table's slots; a slot is suspicious when it points outside the kernel or not at the handler it should. */
export function syscallView(o: GuestObservation | null, all = false): { atMs: number | null; error: string | null; tables: { table: string; address: string; entries: number; suspicious: number; rows: SyscallRow[]; errors: string[] }[] } {
  const snap = o?.snapshot;
  if (!o || !snap) return { atMs: o?.startedAtMs ?? null, error: o?.snapshotError ?? 'no scan yet', tables: [] };
  return {
    atMs: o.startedAtMs,
    error: null,
    tables: snap.syscallTables.map((t) => {
      const rows = t.entries.map((e) => {
        const owner = e.owner.kind === 'kernel' ? e.owner.symbol : e.owner.kind === 'module' ? `${e.owner.module}:${e.owner.symbol ?? '?'}` : 'unknown';
        const suspicious = e.owner.kind !== 'kernel' || (e.expected !== null && e.owner.symbol !== e.expected);
        return { nr: e.nr, target: hex(e.target), owner, expected: e.expected, suspicious };
      });
      const bad = rows.filter((r) => r.suspicious);
      return { table: t.table, address: hex(t.address), entries: rows.length, suspicious: bad.length, rows: all ? rows : bad, errors: t.errors.map((e) => `${e.where}: ${e.message}`) };
    }),
  };
}

export function findingView(o: GuestObservation | null): { atMs: number | null; findings: { id: string; kind: string; severity: string; summary: string; target: string | null; firstSeenMs: number; evidence: unknown }[] } {
  return {
    atMs: o?.startedAtMs ?? null,
    findings: (o?.findings ?? []).map((f) => ({ id: f.id, kind: f.kind, severity: f.severity, summary: f.summary, target: f.target, firstSeenMs: f.firstSeenMs, evidence: f.evidence })),
  };
}
