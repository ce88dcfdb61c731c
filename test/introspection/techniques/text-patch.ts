// Kernel text patches: an inline jmp hook at a kernel function's entry, and a call target
// rewritten inside the syscall dispatch switch. Each is found live (scans that hash the image,
// as the supervisor's do) and from a dump, explained: the function and offset, the new
// instruction, where it goes and which module owns that; undone, the guest is clean again.
import type { Test } from 'tap';
import { analyzeScan } from '../../../src/detectors/index.js';
import type { Observation } from '../../../src/detectors/types.js';
import type { ScanOptions } from '../../../src/views/scan.js';
import { guestPs, paused } from '../ground-truth.js';
import type { TechniqueBattery, TechniqueContext } from './context.js';

/** Observations that persist over n consecutive live scans taken with `opts` (a fresh ps before each). */
export async function persistentWith(ctx: TechniqueContext, opts: ScanOptions, n = 3): Promise<Observation[]> {
  let keep = new Map<string, Observation>();
  for (let i = 0; i < n; i++) {
    const ps = await guestPs(ctx.vm);
    const report = { takenAtMs: Date.now(), agent: 'ok' as const, processes: ps.map((r) => ({ ...r, state: 'S' })) };
    const snap = await paused(ctx.vm, () => ctx.live.scan(opts));
    const a = analyzeScan({ nowMs: Date.now(), snapshot: snap, snapshotError: null, report, critical: [], baseline: ctx.baseline });
    const now = new Map(a.observations.map((o) => [o.key, o]));
    keep = i === 0 ? now : new Map([...keep].filter((e) => now.has(e[0])));
  }
  return [...keep.values()];
}

const str = (v: unknown): string => (typeof v === 'string' || typeof v === 'number' ? String(v) : JSON.stringify(v));
const textSites = (obs: readonly Observation[]): string[] => obs.filter((o) => o.kind === 'kernel-integrity-changed' && o.evidence.what === 'kernel text')
  .map((o) => `${str(o.evidence.function)}+${str(o.evidence.offset)} ${str(o.evidence.instruction).split(' ')[0] ?? ''} ${str(o.evidence.module)}`);

export const textPatch: TechniqueBattery = {
  name: 'kernel text patches: inline hook, dispatch call patch',
  async run(t: Test, ctx: TechniqueContext): Promise<void> {
    const mods = ctx.images.attackModules;
    const inline = mods.inlineHook;
    if (!inline) { t.fail('the lab image has no iv_inline_hook module'); return; }
    // What the supervisor does: text hashed incrementally; the first such scan hashes every page.
    const live: ScanOptions = { hashImage: true, imageCoverageMs: 1, dispatchSwitches: false };
    t.same(await persistentWith(ctx, live), [], 'clean before the attacks');

    const victim = Number((await ctx.shell('sleep 600 </dev/null >/dev/null 2>&1 & echo $!')).trim());
    const t0 = performance.now();
    await ctx.shell(`insmod ${inline} target=__x64_sys_kill pid=${victim}`);
    t.match(await ctx.shell(`kill -0 ${victim} 2>&1; echo rc=$?`), /rc=1/, 'the hook runs: kill -0 on the victim fails');
    const found = await persistentWith(ctx, live);
    t.comment(`inline hook: attack to confirmed finding ${(performance.now() - t0).toFixed(0)} ms (3 scans)`);
    const entry = /^(0|4)$/;
    t.same(found.map((o) => o.kind), ['kernel-integrity-changed'], 'inline hook: one observation');
    const ev = found[0]?.evidence ?? {};
    t.equal(ev.function, '__x64_sys_kill', 'naming the hooked function');
    t.match(str(ev.offset), entry, `at its entry (+${str(ev.offset)})`);
    t.match(str(ev.instruction), /^jmp /, `the new instruction: ${str(ev.instruction)}`);
    t.equal(ev.module, 'iv_inline_hook', 'its destination owned by the module');
    t.match(found[0]?.summary ?? '', /__x64_sys_kill\+0x[04]: jmp .*module iv_inline_hook/, `summary: ${found[0]?.summary ?? ''}`);
    const dump = await ctx.checkDump();
    // Judged with the clean copy (this process) or, without it, by the function entries beside the plain text-hash change.
    t.same(textSites(dump), textSites(found), 'the same from a dump');
    t.same(dump.filter((o) => o.kind !== 'kernel-integrity-changed').map((o) => o.kind), [], 'and nothing else from the dump');
    await ctx.shell('rmmod iv_inline_hook');
    t.match(await ctx.shell(`kill -0 ${victim} 2>&1; echo rc=$?`), /rc=0/, 'unhooked: the victim is seen again');
    await ctx.shell(`kill ${victim}`);
    t.same(await persistentWith(ctx, live), [], 'rmmod restores the NOP: nothing left (image hashed)');
    t.same(await ctx.persistent(), [], 'nor in the periodic scans');

    // The dispatch switch: live scans do not decode it, its body hash is explained instruction by instruction.
    const x64 = ctx.live.kernel.profile.symbols.has('x64_sys_call');
    if (!x64 || !mods.dispatchHook) { t.comment(`no dispatch switch on ${ctx.images.kernelAbi}: dispatch goes through sys_call_table`); return; }
    await ctx.shell(`insmod ${mods.dispatchHook} nr=39 handler=__x64_sys_getpid`);
    const patched = await persistentWith(ctx, live);
    t.same(patched.map((o) => `${o.kind} ${str(o.evidence.what)}`), ['kernel-integrity-changed x64_sys_call body'], 'dispatch patch live: the body change (its text sites not counted twice)');
    const sites = patched[0]?.evidence.sites;
    const site = Array.isArray(sites) && sites.length === 1 ? (sites[0] as Record<string, unknown>) : {};
    t.equal(site.function, 'x64_sys_call', `explained at x64_sys_call+${str(site.offset)}`);
    t.match(str(site.instruction), /^(call|jmp) /, `the new instruction: ${str(site.instruction)}`);
    t.equal(site.module, 'iv_dispatch_hook', 'its new target owned by the module');
    t.match(patched[0]?.summary ?? '', /x64_sys_call\+0x[0-9a-f]+: (call|jmp) .*module iv_dispatch_hook\), was (call|jmp) 0x[0-9a-f]+ \(__x64_sys_getpid\)/, `summary: ${patched[0]?.summary ?? ''}`);
    // A dump judged without the clean copy (another process) also keeps the plain text-hash change beside these.
    const fromDump = (await ctx.checkDump()).filter((o) => o.evidence.what !== 'kernel text hash');
    t.same(fromDump.map((o) => `${o.kind} ${str(o.evidence.what ?? o.evidence.dispatcher)} ${str(o.evidence.module ?? '')}`).sort(),
      ['kernel-integrity-changed x64_sys_call body ', 'syscall-table-changed x64_sys_call iv_dispatch_hook'], 'from a dump: the slot (decoded) and the explained body');
    await ctx.shell('rmmod iv_dispatch_hook');
    t.same(await persistentWith(ctx, live), [], 'rmmod restores the call: nothing left');
  },
};
