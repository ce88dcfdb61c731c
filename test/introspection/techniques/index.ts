// Technique batteries the kernel matrix runs on each lab kernel, after its own attacks.
// One file per technique; add it here.
import type { TechniqueBattery } from './context.js';
import { eraseSelf } from './erase-self.js';

export const TECHNIQUES: readonly TechniqueBattery[] = [
  eraseSelf,
];
