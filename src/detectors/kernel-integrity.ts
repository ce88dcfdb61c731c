// Kernel integrity beyond the syscall table: the syscall dispatchers' bodies
// (x64_sys_call, ia32_sys_call), kernel text and read-only data hashes, the
// IDT and MSR_LSTAR, each against the baseline; and hidden modules (in
// /sys/module's kobjects but not on the module list, or the reverse).
import type { KernelSnapshot } from '../views/types.js';
import { sameHashKind, slidAddresses, unrel, type KernelBaseline } from './baseline.js';
import { hex, type DetectorResult, type JsonValue, type Observation } from './types.js';
import { dispatcherSites, siteEvidence, siteText, textDiffTrusted } from './text-integrity.js';

export function detectKernelChanges(snap: KernelSnapshot, baseline: KernelBaseline | null): DetectorResult {
  const integ = snap.integrity;
  if (!baseline) return { observations: [], undetermined: [] };
  const slide = snap.kernel.kaslrSlide;
  const observations: Observation[] = [];
  const add = (what: string, was: string | null, now: string | null, explained?: { text: string; sites: JsonValue[] }): void => {
    observations.push({
      kind: 'kernel-integrity-changed',
      key: `${what}:${now ?? 'none'}`,
      summary: explained ? `${what} changed: ${explained.text}` : `${what} changed: ${was ?? 'none'} -> ${now ?? 'none'}`,
      target: null,
      evidence: explained ? { what, baseline: was, now, sites: explained.sites } : { what, baseline: was, now },
    });
  };
  for (const d of integ.dispatchers) {
    const was = baseline.dispatchers[d.name];
    if (was === undefined || was === d.hash) continue;
    // Explained instruction by instruction when the text-diff view holds the baseline's body.
    const sites = dispatcherSites(snap, d.name, was);
    if (sites !== null && sites.length === 0) continue; // only instrumentation (e.g. the function tracer's call at its entry)
    add(`${d.name} body`, was, d.hash, sites ? { text: sites.map(siteText).join('; '), sites: sites.map(siteEvidence) } : undefined);
  }
  // Text and rodata hashes include relocated addresses: comparable only within one boot (same slide).
  // A whole-region hash and a hash over page hashes (PAGED_HASH_PREFIX) are different measures of the same bytes.
  if (baseline.boot.slide === `0x${slide.toString(16)}`) {
    const differs = (was: string | null, now: string | null): boolean => was !== null && now !== null && sameHashKind(was, now) && was !== now;
    // With a trusted clean copy the changed instructions are judged one by one instead (text-integrity.ts).
    if (differs(baseline.boot.textHash, integ.textHash) && !textDiffTrusted(snap, baseline)) add('kernel text hash', baseline.boot.textHash, integ.textHash);
    if (differs(baseline.boot.rodataHash, integ.rodataHash)) add('kernel rodata hash', baseline.boot.rodataHash, integ.rodataHash);
  }
  if (baseline.idt.length > 0 && integ.idt.length === baseline.idt.length) {
    const gates = slidAddresses(baseline.idt, slide);
    integ.idt.forEach((a, vector) => {
      const was = gates[vector] as bigint;
      if (was !== a) add(`IDT vector ${vector}`, hex(was), hex(a));
    });
  }
  if (baseline.lstar !== null && integ.lstar !== null) {
    const was = unrel(baseline.lstar, slide);
    if (was !== integ.lstar) add('MSR_LSTAR', hex(was), hex(integ.lstar));
  }
  return { observations, undetermined: [] };
}

export function detectHiddenModules(snap: KernelSnapshot): DetectorResult {
  const m = snap.modules;
  if (m.errors.length > 0 && m.modules.length === 0) return { observations: [], undetermined: ['hidden-module'] };
  const onList = new Map(m.modules.map((x) => [x.address, x]));
  const observations: Observation[] = [];
  for (const k of m.kobjects) {
    if (onList.has(k.address)) continue;
    observations.push({
      kind: 'hidden-module',
      key: `${k.name}@${hex(k.address)}`,
      summary: `module ${k.name} is under /sys/module but not on the module list (lsmod does not show it)`,
      target: k.name,
      evidence: { module: k.name, address: hex(k.address), coreBase: hex(k.coreBase), coreSize: k.coreSize, inViews: ['kobjects'], missingFrom: ['module-list'] },
    });
  }
  // Syscall handlers in a module that is on neither list: code with no module to own it.
  const named = new Set([...m.modules, ...m.kobjects].map((x) => x.name));
  for (const t of snap.syscallTables) {
    for (const e of t.entries) {
      if (e.owner.kind !== 'module') continue;
      const name = e.owner.module;
      if (named.has(name)) continue;
      named.add(name);
      observations.push({
        kind: 'hidden-module',
        key: `${name}:syscall`,
        summary: `${t.table}[${e.nr}] runs code of module ${name}, which is on neither the module list nor /sys/module`,
        target: name,
        evidence: { module: name, inViews: ['syscall-owner'], missingFrom: ['module-list', 'kobjects'] },
      });
    }
  }
  return { observations, undetermined: [] };
}
