// Times as people write them on the command line and in queries.
import { InputError } from './errors.js';

/** since: milliseconds since the epoch, an ISO date, or a duration back from now like 15m, 2h, 7d. */
export function parseSince(v: string, now = Date.now()): number {
  const rel = /^(\d+)(s|m|h|d)$/.exec(v);
  if (rel) return now - Number(rel[1]) * { s: 1e3, m: 60e3, h: 3600e3, d: 86400e3 }[rel[2] as 's' | 'm' | 'h' | 'd'];
  if (/^\d+$/.test(v)) return Number(v);
  const t = Date.parse(v);
  if (Number.isNaN(t)) throw new InputError(`since "${v.slice(0, 40)}" is not a time (ms, ISO date, or 15m/2h/7d)`);
  return t;
}
