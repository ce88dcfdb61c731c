// The module area, judged: executable kernel memory that no module, ftrace trampoline, kprobe
// slot page or BPF image accounts for (kernel code nobody owns), and struct modules carved from
// memory that are on neither the module list nor /sys/module (a module that erased itself).
// Ownership comes from the kernel's own records (src/views/module-area.ts), never from names.
import type { CodeRegion, KernelSnapshot } from '../views/types.js';
import { hex, type DetectorResult, type JsonValue, type Observation } from './types.js';

const MAX_POINTERS = 16;
const STATES = ['live', 'coming', 'going', 'unformed'];

/** Code pointers the snapshot holds, by where they were read: syscall slots, dispatch calls, IDT, LSTAR, ftrace and kprobe handlers, tracepoint probes. */
function codePointers(snap: KernelSnapshot): { from: string; target: bigint }[] {
  const out: { from: string; target: bigint }[] = [];
  for (const t of snap.syscallTables) for (const e of t.entries) if (e.owner.kind !== 'kernel') out.push({ from: `${t.table}[${e.nr}]`, target: e.target });
  for (const d of snap.dispatch ?? []) for (const s of d.slots) if (s.owner.kind !== 'kernel') out.push({ from: `${d.name}[${s.nr}]`, target: s.target });
  snap.integrity.idt.forEach((a, v) => out.push({ from: `IDT vector ${v}`, target: a }));
  if (snap.integrity.lstar !== null) out.push({ from: 'MSR_LSTAR', target: snap.integrity.lstar });
  const seen = new Set<string>();
  for (const o of snap.ftrace?.ops ?? []) { seen.add(`ftrace ops ${hex(o.address)} func`); out.push({ from: `ftrace ops ${hex(o.address)} func`, target: o.func }); }
  for (const r of snap.moduleArea?.references ?? []) if (!seen.has(r.from)) out.push(r);
  for (const k of snap.kprobes?.probes ?? []) {
    const at = k.symbol ?? hex(k.addr);
    out.push({ from: `kprobe on ${at} pre_handler`, target: k.preHandler });
    out.push({ from: `kprobe on ${at} post_handler`, target: k.postHandler });
  }
  for (const tp of snap.tracepoints?.tracepoints ?? []) {
    for (const p of tp.probes) if (p.owner.kind !== 'kernel') out.push({ from: `tracepoint ${tp.name ?? hex(tp.address)} probe`, target: p.func });
  }
  return out;
}

const inside = (r: CodeRegion, a: bigint): boolean => a >= r.start && a < r.start + BigInt(r.size);

export function detectUnownedCode(snap: KernelSnapshot): DetectorResult {
  const area = snap.moduleArea;
  // Not walked this scan (it has its own cadence): neither clean nor not; streaks carry over.
  if (!area) return { observations: [], undetermined: ['unowned-kernel-code', 'hidden-module'] };
  // A walk that read nothing judges nothing.
  if (area.errors.length > 0 && area.regions.length === 0) return { observations: [], undetermined: ['unowned-kernel-code', 'hidden-module'] };
  const observations: Observation[] = [];
  const pointers = codePointers(snap);
  for (const r of area.regions) {
    if (r.owner !== 'unknown') continue;
    const from: JsonValue[] = pointers.filter((p) => inside(r, p.target)).slice(0, MAX_POINTERS).map((p) => `${p.from} -> ${hex(p.target)}`);
    const end = r.start + BigInt(r.size);
    observations.push({
      kind: 'unowned-kernel-code',
      key: `unowned:${hex(r.start)}`,
      summary: `executable kernel memory ${hex(r.start)}-${hex(end)} (${r.size >> 10} KiB) belongs to no module, trampoline, kprobe slot or BPF image` +
        (from.length > 0 ? `; reached from ${from.join(', ')}` : ''),
      target: null,
      evidence: { start: hex(r.start), end: hex(end), size: r.size, pointedFrom: from },
    });
  }
  for (const m of area.hiddenModules) {
    const text = snap.moduleArea?.regions.filter((r) => r.owner === 'module' && r.name === m.name) ?? [];
    if (m.state !== undefined && m.state !== 0) {
      // Coming, going or unformed: a module being loaded or unloaded is off both lists for a moment
      // (a failed init, an rmmod's RCU grace period; udev makes many at boot). Its code is judged as
      // code nobody owns, which confirms over walks, so a module that only claims such a state is
      // still seen while a passing one is not.
      for (const r of text) {
        const end = r.start + BigInt(r.size);
        observations.push({
          kind: 'unowned-kernel-code',
          key: `unowned:${hex(r.start)}`,
          summary: `executable kernel memory ${hex(r.start)}-${hex(end)} (${r.size >> 10} KiB) belongs to module ${m.name}, which is ${STATES[m.state] ?? String(m.state)} and on neither the module list nor /sys/module`,
          target: null,
          evidence: { start: hex(r.start), end: hex(end), size: r.size, module: m.name, state: STATES[m.state] ?? String(m.state), pointedFrom: [] },
        });
      }
      continue;
    }
    const from: JsonValue[] = pointers.filter((p) => text.some((r) => inside(r, p.target))).slice(0, MAX_POINTERS).map((p) => `${p.from} -> ${hex(p.target)}`);
    const state = m.state !== undefined ? STATES[m.state] ?? String(m.state) : 'unknown';
    observations.push({
      kind: 'hidden-module',
      key: `${m.name}@${hex(m.address)}`,
      summary: `module ${m.name} (struct module at ${hex(m.address)}, text ${hex(m.coreBase)}, state ${state}) is in the module area but on neither the module list nor /sys/module` +
        (from.length > 0 ? `; reached from ${from.join(', ')}` : ''),
      target: m.name,
      evidence: { module: m.name, address: hex(m.address), coreBase: hex(m.coreBase), coreSize: m.coreSize, state, inViews: ['module-area'], missingFrom: ['module-list', 'kobjects'], pointedFrom: from },
    });
  }
  return { observations, undetermined: [] };
}
