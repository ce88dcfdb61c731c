// The eBPF helper scan on hand-assembled instructions and the bpf-hook rules on program records:
// what a program can do decides, not its name.
import t from 'tap';
import { helperCalls } from '../../src/views/bpf.js';
import { bpfRisks, detectBpfHooks } from '../../src/detectors/bpf-hooks.js';
import type { BpfProgramInfo, KernelSnapshot } from '../../src/views/types.js';

const callBase = 0xffff_ffff_8120_0000n;
const syms = new Map<bigint, string>([
  [callBase + 0x1000n, 'bpf_probe_write_user'],
  [callBase - 0x2000n, 'bpf_get_current_pid_tgid'],
  [callBase + 0x3000n, 'bpf_override_return'],
]);
const insn = (code: number, src: number, imm: number): Buffer => {
  const b = Buffer.alloc(8);
  b[0] = code;
  b[1] = src << 4;
  b.writeInt32LE(imm, 4);
  return b;
};

t.test('helper calls: helpers and kfuncs resolved from imm + __bpf_call_base; bpf-to-bpf calls and ld_imm64 halves skipped', async (t) => {
  const prog = Buffer.concat([
    insn(0x85, 0, -0x2000), // call bpf_get_current_pid_tgid
    insn(0x18, 0, 0), insn(0x85, 0, 0x3000), // ld_imm64 whose second half looks like a call: not one
    insn(0x85, 1, 0x3000), // bpf-to-bpf call: a relative jump, not a helper
    insn(0x85, 2, 0x1000), // kfunc call
    insn(0x85, 0, 0x1000), // the same helper again: listed once
    insn(0x85, 0, 0x4444), // no symbol there: kept as hex
    insn(0x95, 0, 0), // exit
    Buffer.from([0x85, 0, 0]), // a truncated tail is ignored
  ]);
  const names = helperCalls(prog, callBase, (va) => syms.get(va) ?? null);
  t.same(names, ['0xffffffff81204444', 'bpf_get_current_pid_tgid', 'bpf_probe_write_user']);
  t.same(helperCalls(Buffer.alloc(8 * 100, 0x85), callBase, () => null).length <= 64, true, 'bounded');
});

const prog = (over: Partial<BpfProgramInfo>): BpfProgramInfo => ({
  id: 7, address: 0xffff_8880_0100_0000n, type: 'BPF_PROG_TYPE_KPROBE', attachType: null, name: 'anything',
  attachTo: 'kprobe:do_sys_openat2', helpers: [], kprobeOverride: false, jited: { start: 0xffff_ffff_c000_0000n, size: 64 }, ...over,
});

t.test('risks: altering helpers, override bit, fmod_ret, LSM, freplace; read-only tracing is none', async (t) => {
  t.same(bpfRisks(prog({ helpers: ['bpf_get_current_pid_tgid', 'bpf_perf_event_output', 'bpf_probe_read_kernel', 'htab_map_update_elem'] })), [], 'tracing that reads, counts and emits');
  t.same(bpfRisks(prog({ type: 'BPF_PROG_TYPE_TRACING', attachType: 'BPF_TRACE_FENTRY', attachTo: 'vfs_read' })), [], 'fentry is tracing');
  t.match(bpfRisks(prog({ helpers: ['bpf_probe_write_user'] })), [/bpf_probe_write_user/]);
  t.match(bpfRisks(prog({ helpers: ['bpf_override_return'], kprobeOverride: true })), [/bpf_override_return/], 'the override once');
  t.match(bpfRisks(prog({ kprobeOverride: true })), [/kprobe_override/]);
  t.match(bpfRisks(prog({ helpers: ['bpf_send_signal'] })), [/signal/]);
  t.match(bpfRisks(prog({ type: 'BPF_PROG_TYPE_TRACING', attachType: 'BPF_MODIFY_RETURN', attachTo: 'security_sb_statfs' })), [/fmod_ret/]);
  t.match(bpfRisks(prog({ type: 'BPF_PROG_TYPE_LSM', attachType: 'BPF_LSM_MAC' })), [/LSM/]);
  t.match(bpfRisks(prog({ type: 'BPF_PROG_TYPE_EXT' })), [/extension/]);
});

t.test('detector: one observation per risky program, naming it; an unreadable IDR leaves the kind undetermined', async (t) => {
  const snap = (programs: BpfProgramInfo[], errors: { where: string; message: string }[] = []): KernelSnapshot =>
    ({ bpf: { programs, errors } }) as unknown as KernelSnapshot;
  const r = detectBpfHooks(snap([prog({ name: 'reader' }), prog({ id: 9, name: 'hider', helpers: ['bpf_probe_write_user'] })]));
  t.same(r.observations.map((o) => [o.kind, o.key]), [['bpf-hook', 'bpf:9:hider']]);
  t.match(r.observations[0]?.summary, /eBPF program 9 "hider" \(BPF_PROG_TYPE_KPROBE on kprobe:do_sys_openat2\).*bpf_probe_write_user/);
  t.same(r.undetermined, []);
  t.same(detectBpfHooks(snap([], [{ where: 'bpf: prog_idr', message: 'not mapped' }])).undetermined, ['bpf-hook']);
  t.same(detectBpfHooks(snap([], [{ where: 'bpf: kprobe attachments: profile', message: 'x' }])).undetermined, [], 'attach names missing: programs still judged');
  t.same(detectBpfHooks({} as KernelSnapshot), { observations: [], undetermined: [] }, 'no view: nothing');
});
