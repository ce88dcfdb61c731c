// Dispatch integrity: on kernels that dispatch system calls through a switch
// (x64_sys_call and friends), every case must reach its own handler in kernel
// text. A rewritten call/jmp target is an observation naming the slot, the new
// target and its owner (kernel symbol, module, or memory no module owns). The
// check needs no baseline: the expected handler comes from the kernel's own
// symbols, as for the tables.
import type { DispatchSlot, DispatchView, KernelSnapshot } from '../views/types.js';
import { hex, type DetectorResult, type JsonValue, type Observation } from './types.js';

function owner(e: DispatchSlot): { text: string; json: JsonValue } {
  switch (e.owner.kind) {
    case 'kernel': return { text: e.owner.symbol, json: { kind: 'kernel', symbol: e.owner.symbol } };
    case 'module': return { text: `${hex(e.target)} in module ${e.owner.module}`, json: { kind: 'module', module: e.owner.module, symbol: e.owner.symbol } };
    default: return { text: `${hex(e.target)} (no kernel symbol or module)`, json: { kind: 'unknown' } };
  }
}

// The answer for one dispatch view (the views reuse an unchanged scan's object).
const answered = new WeakMap<readonly DispatchView[], DetectorResult>();

export function detectDispatchChanges(snap: KernelSnapshot): DetectorResult {
  if (!snap.dispatch) return checkSwitches([]);
  const kept = answered.get(snap.dispatch);
  if (kept) return kept;
  const result = checkSwitches(snap.dispatch);
  answered.set(snap.dispatch, result);
  return result;
}

function checkSwitches(dispatch: readonly DispatchView[]): DetectorResult {
  const observations: Observation[] = [];
  for (const d of dispatch) {
    for (const e of d.slots) {
      if (e.owner.kind === 'kernel' && (e.expected === null || e.owner.symbol === e.expected)) continue;
      const o = owner(e);
      observations.push({
        kind: 'syscall-table-changed',
        key: `${d.name}[${e.nr}]=${hex(e.target)}`,
        summary: `${d.name} sends syscall ${e.nr} to ${o.text}${e.expected ? ` instead of ${e.expected}` : ''}`,
        target: null,
        evidence: {
          dispatcher: d.name, nr: e.nr, expected: e.expected, newTarget: hex(e.target), owner: o.json,
          module: e.owner.kind === 'module' ? e.owner.module : null, reason: 'call target rewritten',
        },
      });
    }
  }
  // A switch that could not be decoded leaves its slots unchecked (its hash is still compared).
  const undecoded = dispatch.some((d) => d.slots.length === 0 && d.errors.length > 0);
  return Object.freeze({ observations: Object.freeze(observations), undetermined: undecoded ? ['syscall-table-changed'] as const : [] });
}
