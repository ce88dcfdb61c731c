// The kernel matrix on 5.10: one boot, the whole battery (see kernel-matrix.ts).
import t from 'tap';
import { kernelMatrix } from './kernel-matrix.js';

await kernelMatrix(t, '5.10');
