// The syscall numbering of a lab kernel as its own build made it: the generated
// arch/x86/include/generated/asm/syscalls_{32,64,x32}.h of its linux-headers package (5.10 writes
// __SYSCALL_I386 with #ifdef CONFIG_X86_32 branches, and the x32 calls in syscalls_64.h; 6.x writes
// __SYSCALL / __SYSCALL_WITH_COMPAT and a syscalls_x32.h). The ground truth the ia32/x32 checks of
// the kernel matrix compare with; the product derives its numbering from guest memory alone.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { KernelSnapshot } from '../../src/views/types.js';
import type { SymbolTable } from '../../src/profile/symbols.js';

const NI = /^(__(x64|ia32)_)?sys_ni_syscall$/;

export function generatedHeaders(abi: string): string | null {
  const cache = process.env.INTROVISOR_CACHE ?? '/var/cache/introvisor';
  for (const root of [`/usr/src/linux-headers-${abi}`, join(cache, 'headers', abi, 'usr/src', `linux-headers-${abi}`)]) {
    const dir = join(root, 'arch/x86/include/generated/asm');
    if (existsSync(join(dir, 'syscalls_32.h'))) return dir;
  }
  return null;
}

/** Skips the CONFIG_X86_32 branch of each #ifdef (the lab kernels are x86-64). */
function lines(file: string): string[] {
  const out: string[] = [];
  let skip = false;
  for (const l of readFileSync(file, 'utf8').split('\n')) {
    if (l.startsWith('#ifdef CONFIG_X86_32')) { skip = true; continue; }
    if (l.startsWith('#else')) { skip = false; continue; }
    if (l.startsWith('#endif')) { skip = false; continue; }
    if (!skip) out.push(l);
  }
  return out;
}

/** nr -> the kernel symbol of its handler for ia32 or x32; a number not listed is unassigned. */
export function headerNumbering(dir: string, abi: 'ia32' | 'x32'): Map<number, string> {
  const out = new Map<number, string>();
  const add = (nr: string, name: string): void => {
    const n = Number(nr);
    if (NI.test(name)) { out.set(n, 'sys_ni_syscall'); return; }
    const compat = name.startsWith('compat_sys_');
    out.set(n, abi === 'ia32' ? `__ia32_${name}` : compat ? `__x32_${name}` : `__x64_${name}`);
  };
  if (abi === 'ia32') {
    for (const l of lines(join(dir, 'syscalls_32.h'))) {
      const m = /^__SYSCALL(?:_I386|_NORETURN)?\((\d+), (\w+)\)/.exec(l) ?? /^__SYSCALL_WITH_COMPAT\((\d+), \w+, (\w+)\)/.exec(l);
      if (m) add(m[1] as string, m[2] as string);
    }
    return out;
  }
  const x32 = join(dir, 'syscalls_x32.h');
  if (existsSync(x32)) {
    for (const l of lines(x32)) {
      const m = /^__SYSCALL(?:_NORETURN)?\((\d+), (\w+)\)/.exec(l);
      if (m) add(m[1] as string, m[2] as string);
    }
    return out;
  }
  // 5.10: x32 takes the common and the x32 lines of syscalls_64.h.
  for (const l of lines(join(dir, 'syscalls_64.h'))) {
    const m = /^__SYSCALL_(?:COMMON|X32)\((\d+), (\w+)\)/.exec(l);
    if (m) add(m[1] as string, m[2] as string);
  }
  return out;
}

/**
 * ia32/x32 slots (tables and switches) that do not hold the handler the kernel's build numbered
 * there, or whose `expected` does not name it: "<where>[nr]: holds X, kernel says Y, expected Z".
 */
export function compatSlotMismatches(snap: KernelSnapshot, dir: string, symbols: SymbolTable): string[] {
  const out: string[] = [];
  const views: { where: string; abi: 'ia32' | 'x32'; slots: readonly { nr: number; target: bigint; owner: { kind: string; symbol?: string | null }; expected: string | null }[] }[] = [
    ...snap.syscallTables.filter((x) => x.table !== 'sys_call_table').map((x) => ({ where: x.table, abi: x.table.startsWith('ia32') ? 'ia32' as const : 'x32' as const, slots: x.entries })),
    ...(snap.dispatch ?? []).filter((d) => d.name !== 'x64_sys_call').map((d) => ({ where: d.name, abi: d.name.startsWith('ia32') ? 'ia32' as const : 'x32' as const, slots: d.slots })),
  ];
  const truth = { ia32: headerNumbering(dir, 'ia32'), x32: headerNumbering(dir, 'x32') };
  for (const v of views) {
    for (const e of v.slots) {
      const want = truth[v.abi].get(e.nr) ?? 'sys_ni_syscall';
      const held = e.owner.kind === 'kernel' ? e.owner.symbol ?? '?' : `(${e.owner.kind})`;
      // By address: aliases are one function (5.10's no-argument ia32 stubs are the x64 ones).
      const names = symbols.namesAt(e.target);
      // x32's own calls are __x32_compat_sys_* up to 5.x and __x64_compat_sys_* on 6.x.
      const ok = want === 'sys_ni_syscall' ? names.some((n) => NI.test(n))
        : names.includes(want) || (want.startsWith('__x32_compat_') && names.includes(want.replace('__x32_', '__x64_')));
      if (!ok || e.expected !== held) out.push(`${v.where}[${e.nr}]: holds ${held}, kernel says ${want}, expected ${String(e.expected)}`);
    }
  }
  return out;
}
