// A module that erases itself from the module list AND from /sys/module (kobject_del), as current
// LKM rootkits do, while its code keeps running: only carving the module area finds it (its struct
// module, by name), live and from a dump. Undo: a file in the guest brings it back, then rmmod.
import type { TechniqueBattery } from './context.js';
import type { Observation } from '../../../src/detectors/types.js';

const RESTORE = '/tmp/iv-erase-self-restore';
const said = (o: Observation): string => `${o.kind} ${String(o.evidence.module ?? o.evidence.start)}`;

export const eraseSelf: TechniqueBattery = {
  name: 'self-erasing module (off the module list and /sys/module)',
  async run(t, ctx) {
    // The clean guest: every executable page of the module area has an owner the kernel records.
    const clean = ctx.live.scan({ hashImage: false });
    const area = clean.moduleArea;
    t.ok(area, 'the scan carved the module area');
    t.same(area?.errors ?? [], [], 'module area walked without errors');
    t.same((area?.regions ?? []).filter((r) => r.owner === 'unknown').map((r) => `0x${r.start.toString(16)}+${r.size}`), [], 'clean: no executable memory without an owner');
    t.same(area?.hiddenModules ?? [], [], 'clean: no carved module off the lists');
    const owned = new Set((area?.regions ?? []).filter((r) => r.owner === 'module').map((r) => r.name));
    t.same(clean.modules.modules.filter((m) => !owned.has(m.name)).map((m) => m.name), [], `every listed module's text is an owned run (${owned.size} modules)`);
    t.comment(`module area: ${(area?.regions ?? []).map((r) => `${r.owner}${r.name ? `:${r.name}` : ''}`).join(' ')}`);

    // Legitimate instrumentation allocates executable memory there too (ftrace trampolines, kprobe
    // slots): each must have its owner. Function tracer and function graph through tracefs (filtered), and a
    // user's kprobe event at a function entry and inside a function, all on at once.
    const T = '/sys/kernel/tracing';
    const on = await ctx.shell(`mountpoint -q ${T} || mount -t tracefs nodev ${T}; ` +
      `echo 'p:ivcarve_entry vfs_read' >> ${T}/kprobe_events; ` +
      // Past the fentry nop (endbr64 + nop5 with IBT, nop5 without): a probe there takes an instruction slot.
      `for o in 9 5; do echo "p:ivcarve_body schedule+$o" >> ${T}/kprobe_events 2>/dev/null && break; done; ` +
      // Tracers filtered to a few functions: tracing every function stalls a TCG guest.
      `echo 1 > ${T}/events/kprobes/enable; echo 'vfs_read vfs_write' > ${T}/set_ftrace_filter; ` +
      `echo function > ${T}/current_tracer; sleep 0.3; cat ${T}/current_tracer; ` +
      `echo function_graph > ${T}/current_tracer; sleep 0.3; cat ${T}/current_tracer; grep -c ivcarve ${T}/kprobe_events; true`);
    t.match(on, /^function\nfunction_graph\n[12]\n/, `tracers and kprobe events on (${on.trim().split('\n').join(', ')})`);
    const traced = ctx.live.scan({ hashImage: false }).moduleArea;
    t.same((traced?.regions ?? []).filter((r) => r.owner === 'unknown').map((r) => `0x${r.start.toString(16)}+${r.size}`), [], 'instrumented: every executable run still has an owner');
    t.comment(`instrumented (${on.trim().split('\n')[2] ?? '0'} kprobe events): ${(traced?.regions ?? []).filter((r) => r.owner !== 'module').map((r) => `${r.owner}${r.name ? `:${r.name}` : ''}`).join(' ')}`);
    await ctx.shell(`echo nop > ${T}/current_tracer; echo > ${T}/set_ftrace_filter; echo 0 > ${T}/events/kprobes/enable; echo > ${T}/kprobe_events; true`);
    t.same(await ctx.persistent(), [], 'instrumentation off again: nothing persists');

    const ko = ctx.images.attackModules.eraseSelf;
    if (!ko) { t.fail('the lab image has no iv_erase_self.ko (rebuild with lab/build-images.sh)'); return; }
    await ctx.shell(`mkdir -p /tmp; rm -f ${RESTORE}`);
    const t0 = performance.now();
    await ctx.shell(`insmod ${ko}`);
    // Attack to first observation: one walk per try, as the supervisor's next module-area walk would.
    let firstMs = -1;
    for (let i = 0; i < 20 && firstMs < 0; i++) {
      if ((ctx.live.scan({ hashImage: false }).moduleArea?.hiddenModules ?? []).some((m) => m.name === 'iv_erase_self')) firstMs = performance.now() - t0;
    }
    t.ok(firstMs >= 0, `carved within 20 walks of insmod returning (${firstMs.toFixed(0)} ms from insmod; the supervisor adds up to 500 ms cadence and 2 more walks to confirm)`);
    const guestSees = await ctx.shell('grep -c "^iv_erase_self " /proc/modules; ls /sys/module | grep -c "^iv_erase_self$"; true');
    t.same(guestSees.trim().split('\n'), ['0', '0'], 'the guest itself no longer sees it: not in /proc/modules, not in /sys/module');

    const live = await ctx.persistent();
    t.same(live.map(said), ['hidden-module iv_erase_self'], 'live: exactly one hidden module, named');
    const o = live[0];
    t.same(o?.evidence.inViews, ['module-area'], 'found by carving the module area');
    t.same(o?.evidence.missingFrom, ['module-list', 'kobjects'], 'on neither the list nor /sys/module');
    t.equal(o?.evidence.state, 'live', 'its struct module says it is live');
    const snap = ctx.live.scan({ hashImage: false });
    const text = (snap.moduleArea?.regions ?? []).filter((r) => r.owner === 'module' && r.name === 'iv_erase_self');
    t.ok(text.length > 0, `its running text is attributed to it (${text.map((r) => `0x${r.start.toString(16)}+${r.size}`).join(', ')})`);

    const dump = await ctx.checkDump();
    t.same(dump.filter((x) => x.kind !== 'kernel-integrity-changed').map(said), ['hidden-module iv_erase_self'], 'dump: the same hidden module');

    await ctx.shell(`touch ${RESTORE}; for i in 1 2 3 4 5 6 7 8 9 10; do grep -q "^iv_erase_self " /proc/modules && break; sleep 0.3; done; rmmod iv_erase_self; rm -f ${RESTORE}`);
    t.equal((await ctx.shell('grep -c "^iv_erase_self " /proc/modules; true')).trim(), '0', 'restored and unloaded');
    t.same(await ctx.persistent(), [], 'undone: nothing left');
  },
};
