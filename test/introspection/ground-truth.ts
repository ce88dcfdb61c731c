// Ground truth from inside a lab guest (through its agent) and comparisons
// against what the introspection engine rebuilt from RAM alone.
import { copyFileSync } from 'node:fs';
import type { QemuVm } from '../../src/vm/qemu-vm.js';
import type { KernelSnapshot } from '../../src/views/types.js';
import type { SymbolTable } from '../../src/profile/symbols.js';

export interface PsRow { pid: number; ppid: number; comm: string }

/** The guest's process list. Commands the agent runs for us (and their shells) are left out. */
export async function guestPs(vm: QemuVm): Promise<PsRow[]> {
  const text = await (await vm.agent()).shell('ps -o pid,ppid,comm');
  const rows = text.trim().split('\n').slice(1).map((l) => {
    const [pid, ppid, ...comm] = l.trim().split(/\s+/);
    return { pid: Number(pid), ppid: Number(ppid), comm: comm.join(' ') };
  });
  return withoutAgentCommands(rows);
}

/** Rows without qemu-ga's descendants: the sh -c and ps of the very call that listed them. */
export function withoutAgentCommands(rows: readonly PsRow[]): PsRow[] {
  const agentPids = new Set(rows.filter((r) => r.comm === 'qemu-ga').map((r) => r.pid));
  const byPid = new Map(rows.map((r) => [r.pid, r]));
  const underAgent = (r: PsRow): boolean => {
    for (let p = r.ppid, hops = 0; p > 0 && hops < 64; hops++) {
      if (agentPids.has(p)) return true;
      p = byPid.get(p)?.ppid ?? 0;
    }
    return false;
  };
  return rows.filter((r) => !underAgent(r));
}

/** procfs shows a kworker's current workqueue after its comm ("kworker/0:1-events"); the task's comm lacks it. */
export function sameComm(fromPs: string, fromMemory: string): boolean {
  return fromPs === fromMemory || (fromMemory.startsWith('kworker/') && fromPs.startsWith(fromMemory + '-')) || fromPs === fromMemory.slice(0, fromPs.length);
}

/** Differences between ps and the snapshot's task list (ignoring transient agent commands). */
export function compareProcesses(ps: PsRow[], snap: KernelSnapshot): string[] {
  const diffs: string[] = [];
  const mine = new Map(snap.tasks.tasks.map((t) => [t.pid, t]));
  for (const r of ps) {
    const t = mine.get(r.pid);
    if (!t) { diffs.push(`ps has pid ${r.pid} (${r.comm}), the task list does not`); continue; }
    if (!sameComm(r.comm, t.comm)) diffs.push(`pid ${r.pid}: ps comm "${r.comm}", memory "${t.comm}"`);
    if (t.ppid !== r.ppid) diffs.push(`pid ${r.pid}: ps ppid ${r.ppid}, memory ${t.ppid}`);
  }
  const psPids = new Set(ps.map((r) => r.pid));
  for (const t of snap.tasks.tasks) {
    // Tasks spawned for our own agent calls may have exited since ps ran.
    if (!psPids.has(t.pid) && !['sh', 'ps', 'cat', 'base64', 'insmod', 'rmmod'].includes(t.comm)) diffs.push(`memory has pid ${t.pid} (${t.comm}), ps does not`);
  }
  return diffs;
}

/** Kernel (not module) lines of /proc/kallsyms, as "addr type name". */
export async function guestKallsyms(vm: QemuVm): Promise<string[]> {
  const text = await (await vm.agent()).shell('cat /proc/kallsyms', { timeoutMs: 60_000 });
  return text.split('\n').filter((l) => l !== '' && !l.includes('\t['));
}

export function kallsymsLines(s: SymbolTable): string[] {
  return s.names.map((n, i) => `${(s.addresses[i] as bigint).toString(16).padStart(16, '0')} ${s.types[i]} ${n}`);
}

/** Names of the modules /proc/modules lists. */
export async function guestModules(vm: QemuVm): Promise<string[]> {
  return (await (await vm.agent()).shell('cat /proc/modules')).trim().split('\n').filter(Boolean).map((l) => l.split(' ')[0] as string).sort();
}

/** The guest's /sys/kernel/btf/vmlinux bytes. */
export async function guestBtf(vm: QemuVm): Promise<Buffer> {
  const r = await (await vm.agent()).exec('/bin/cat', ['/sys/kernel/btf/vmlinux'], { timeoutMs: 60_000 });
  if (r.exitCode !== 0 || r.truncated) throw new Error(`reading the guest's BTF failed (exit ${String(r.exitCode)}, truncated ${r.truncated})`);
  return r.stdout;
}

/** A raw dump: the RAM file copied while the guest is paused. */
export async function dumpRam(vm: QemuVm, to: string): Promise<void> {
  await vm.qmp.execute('stop');
  try {
    copyFileSync(vm.ramPath, to);
  } finally {
    await vm.qmp.execute('cont');
  }
}

/** Runs fn with the guest paused, so a scan sees one consistent state. */
export async function paused<T>(vm: QemuVm, fn: () => T): Promise<T> {
  await vm.qmp.execute('stop');
  try {
    return fn();
  } finally {
    await vm.qmp.execute('cont');
  }
}

/** Entries of a clean sys_call_table that do not hold their own handler. */
export function foreignSyscalls(snap: KernelSnapshot): string[] {
  const t = snap.syscallTables.find((x) => x.table === 'sys_call_table');
  if (!t) return ['no sys_call_table'];
  return t.entries
    .filter((e) => e.owner.kind !== 'kernel' || e.owner.symbol !== e.expected)
    .map((e) => `${e.nr}: ${JSON.stringify(e.owner)} expected ${String(e.expected)}`);
}
