// Technique batteries the kernel matrix runs on each lab kernel, after its own attacks.
// One file per technique; add it here.
import type { TechniqueBattery } from './context.js';
import { textPatch } from './text-patch.js';
import { instrumentation } from './instrumentation.js';

export const TECHNIQUES: readonly TechniqueBattery[] = [textPatch, instrumentation];
