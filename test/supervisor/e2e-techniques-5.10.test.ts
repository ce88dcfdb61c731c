// Today's techniques through the live supervisor on the 5.10 lab kernel: one boot (see techniques-live.ts).
import t from 'tap';
import { techniquesLive } from './techniques-live.js';

await techniquesLive(t, '5.10');
