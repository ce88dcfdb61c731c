// The ia32/x32 numbering comes from the kernel itself (the first contents seen of its table or
// switch), resolved to the guest's own handler symbols; x32's slots below 512 must agree with the
// 64-bit numbering; x64 slots past the known numbering (a newer kernel) take the kernel's own.
// Pure logic on a synthetic symbol table and table memory.
import t from 'tap';
import { SymbolTable } from '../../src/profile/symbols.js';
import { abiNumbering, readSyscallTables } from '../../src/views/syscall-tables.js';
import { X64_SYSCALL_ENTRIES } from '../../src/views/syscall-names.js';
import type { KernelContext } from '../../src/views/kernel-context.js';

const TEXT = 0xffff_ffff_8100_0000n;
const TABLE = 0xffff_ffff_8220_0000n;

function context(handlers: string[], tableSlots: number, tableMemory: (nr: number) => bigint): { ctx: KernelContext; at: (name: string) => bigint } {
  const names = ['_stext', ...handlers, 'commit_creds', '_etext', 'sys_call_table', 'after_table'];
  const addresses = BigUint64Array.from(names.map((n, i) =>
    n === 'sys_call_table' ? TABLE : n === 'after_table' ? TABLE + BigInt(8 * tableSlots) : TEXT + BigInt(0x40 * i)));
  const types = names.map((n) => (n === 'sys_call_table' || n === 'after_table' ? 'D' : 'T')).join('');
  const symbols = new SymbolTable(names, types, addresses);
  const at = (name: string): bigint => { const a = symbols.address(name); if (a === undefined) throw new Error(name); return a; };
  const space = {
    read(va: bigint, len: number): Buffer {
      const b = Buffer.alloc(len);
      for (let i = 0; i < len / 8; i++) b.writeBigUInt64LE(tableMemory(Number((va - TABLE) / 8n) + i), 8 * i);
      return b;
    },
  };
  return { ctx: { profile: { symbols }, space } as unknown as KernelContext, at };
}

t.test('ia32: names of the first contents; later changes are checked against them', async (t) => {
  const { ctx, at } = context(['__ia32_sys_restart_syscall', '__ia32_sys_exit', '__ia32_sys_fork', '__ia32_compat_sys_open', 'sys_ni_syscall'], 0, () => 0n);
  const first = abiNumbering(ctx, 'ia32', [at('__ia32_sys_restart_syscall'), at('__ia32_sys_exit'), at('sys_ni_syscall'), at('__ia32_compat_sys_open'), at('commit_creds'), 0xffff_ffff_c000_1000n]);
  t.same(first, ['__ia32_sys_restart_syscall', '__ia32_sys_exit', 'sys_ni_syscall', '__ia32_compat_sys_open', null, null],
    'handlers of the ABI are named; a non-handler or module target has no expected name');
  const later = abiNumbering(ctx, 'ia32', [at('__ia32_sys_restart_syscall'), at('__ia32_sys_fork')]);
  t.equal(later[1], '__ia32_sys_exit', 'slot 1 still expects what the kernel booted with');
});

t.test('ia32: a handler under an alias (5.10\'s no-argument ia32 stubs are the x64 ones) is named as its owner is', async (t) => {
  const names = ['_stext', '__x64_sys_getpid', '__ia32_sys_getpid', 'commit_creds', '_etext'];
  const addresses = BigUint64Array.from([TEXT, TEXT + 0x40n, TEXT + 0x40n, TEXT + 0x80n, TEXT + 0xc0n]);
  const symbols = new SymbolTable(names, 'TTTTT', addresses);
  const ctx = { profile: { symbols } } as unknown as KernelContext;
  t.same(symbols.namesAt(TEXT + 0x40n).sort(), ['__ia32_sys_getpid', '__x64_sys_getpid']);
  const owner = symbols.lookup(TEXT + 0x40n)?.name;
  t.same(abiNumbering(ctx, 'ia32', [TEXT + 0x40n, TEXT + 0x80n]), [owner, null], 'the alias counts; commit_creds does not');
});

t.test('x32: below 512 the 64-bit call of that number or unassigned; 512+ its own', async (t) => {
  const { ctx, at } = context(['__x64_sys_read', '__x64_sys_write', '__x64_sys_rt_sigprocmask', '__x64_sys_ni_syscall', '__x32_compat_sys_rt_sigaction'], 0, () => 0n);
  const targets: bigint[] = Array.from({ length: 513 }, () => at('__x64_sys_ni_syscall'));
  targets[0] = at('__x64_sys_write'); // swapped: x32 0 is read
  targets[1] = at('__x64_sys_write');
  targets[14] = at('__x64_sys_rt_sigprocmask');
  targets[512] = at('__x32_compat_sys_rt_sigaction');
  const n = abiNumbering(ctx, 'x32', targets);
  t.equal(n[0], '__x64_sys_read', 'a slot holding another 64-bit call expects the one the 64-bit numbering gives');
  t.equal(n[1], '__x64_sys_write');
  t.equal(n[13], '__x64_sys_ni_syscall', 'unassigned for x32 (rt_sigaction is 64-bit only)');
  t.equal(n[14], '__x64_sys_rt_sigprocmask');
  t.equal(n[512], '__x32_compat_sys_rt_sigaction');
});

t.test('x64 slots past the known numbering take the kernel\'s own handlers', async (t) => {
  const known = X64_SYSCALL_ENTRIES.length;
  const count = known + 2;
  const handlers = ['__x64_sys_read', '__x64_sys_ni_syscall', '__x64_sys_future_a', '__x64_sys_future_b'];
  let at: (name: string) => bigint = () => 0n;
  const made = context(handlers, count, (nr) => (nr === 0 ? at('__x64_sys_read') : nr === known ? at('__x64_sys_future_a') : nr === known + 1 ? at('__x64_sys_future_b') : at('__x64_sys_ni_syscall')));
  at = made.at;
  const [tb] = readSyscallTables(made.ctx, []);
  t.ok(tb, 'sys_call_table read');
  if (!tb) return;
  t.equal(tb.entries.length, count, `${count} slots, from the extent`);
  t.equal(tb.entries[0]?.expected, '__x64_sys_read');
  t.equal(tb.entries[known]?.expected, '__x64_sys_future_a');
  t.equal(tb.entries[known + 1]?.expected, '__x64_sys_future_b');
  t.equal(tb.entries[1]?.expected, '__x64_sys_ni_syscall', 'a known number whose handler the kernel lacks: its sys_ni_syscall');
});
