// Technique batteries the kernel matrix runs on each lab kernel, after its own attacks.
// One file per technique; add it here.
import type { TechniqueBattery } from './context.js';
import { ebpfBattery } from './ebpf.js';
import { ftraceKprobe } from './ftrace-kprobe.js';
import { eraseSelf } from './erase-self.js';
import { textPatch } from './text-patch.js';
import { instrumentation } from './instrumentation.js';
import { tracepointHooks } from './tracepoint.js';

export const TECHNIQUES: readonly TechniqueBattery[] = [
  ebpfBattery,
  ftraceKprobe,
  eraseSelf,
  textPatch,
  tracepointHooks,
  instrumentation,
];
