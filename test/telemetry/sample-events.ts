// One realistic event of every recordable kind, shaped like what the watchdog
// and the write trap produce for a lab guest. Used by store, telemetry and web tests.
import type { EventInput } from '../../src/events/types.js';

export function sampleEvents(guest = 'lab1', at = Date.now()): EventInput[] {
  return [
    { kind: 'scan', payload: { guest, startedAtMs: at - 120, durationMs: 118.5, outcome: 'faults', findings: 1, error: null, policyVersion: 3, stats: { tasks: 87, modules: 31, syscalls: 451 } } },
    { kind: 'finding', payload: { guest, findingId: 'syscall-table-changed:sys_call_table', fault: 'syscall-table-changed', state: 'raised', severity: 'critical', summary: 'sys_call_table[39] (getpid) points into module iv_syscall_hook', evidence: { slots: [39, 62], table: 'sys_call_table', owner: 'iv_syscall_hook' } } },
    { kind: 'ladder-step', payload: { guest, fault: 'syscall-table-changed', findingId: 'syscall-table-changed:sys_call_table', step: 0, action: 'restore-image', attempt: 1, reason: 'syscall table changed: restore from image at once' } },
    { kind: 'action', payload: { guest, actionId: 'a-0001', action: 'restore-image', fault: 'syscall-table-changed', target: null, outcome: 'ok', error: null, startedAtMs: at - 50, durationMs: 7012 } },
    { kind: 'refused-write', payload: { guest, refusedAtMs: at - 10, vcpu: 0, gpa: '0x2a001138', gva: '0xffffffff82001138', length: 8, action: 'gp', source: 'emulated', trapSeq: 1, lostBefore: 0, rip: '0xffffffffc0a01234', instruction: '48890cc2', value: 'e0a1a0c0ffffffff', table: 'sys_call_table', entry: 39 } },
    { kind: 'policy-change', payload: { outcome: 'applied', version: 4, previousVersion: 3, activeVersion: 4, source: 'ota:introvisor/dev1/policy/set', keyId: '0123456789abcdef', reason: null } },
    { kind: 'host-metrics', payload: { cpuLoadPercent: 12.5, load1: 0.4, load5: 0.3, load15: 0.2, memTotalBytes: 25769803776, memUsedBytes: 4294967296, memAvailableBytes: 21474836480, disks: [{ mount: '/', sizeBytes: 270553174016, usedBytes: 26778587136 }], temperaturesC: null, uptimeS: 3600 } },
    { kind: 'guest-health', payload: { guest, health: 'recovering', openFindings: 1, lastScanAtMs: at, ladders: [{ fault: 'syscall-table-changed', step: 0, action: 'restore-image', attempt: 1 }], note: null } },
  ];
}
