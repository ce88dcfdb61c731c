// The kernel matrix on 6.12: one boot, the whole battery (see kernel-matrix.ts).
import t from 'tap';
import { kernelMatrix } from './kernel-matrix.js';

await kernelMatrix(t, '6.12');
