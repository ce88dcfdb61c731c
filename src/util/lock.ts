// One owner per thing on this machine (a guest's run folder, a supervisor's
// database): a lock file made with an atomic link (it exists or it does not),
// holding the owner's pid and that process's start time. A lock whose owner is
// no longer alive (the pid is gone, or reused by a process that started later)
// is stale and taken over, so nothing held by a dead process blocks.
import { closeSync, linkSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { processAlive } from './pid.js';

export class LockHeldError extends Error {
  override readonly name = 'LockHeldError';
  constructor(message: string, readonly path: string, readonly ownerPid: number) { super(message); }
}

export interface HeldLock {
  readonly path: string;
  /** Removes the lock file if it is still ours. Idempotent. */
  release(): void;
}

/** Locks held by this process, by path: a second holder in the same process is refused too. */
const heldHere = new Map<string, string>();

/** A process's start time in clock ticks since boot (/proc/PID/stat field 22), or null. */
function startTicks(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = stat.slice(stat.lastIndexOf(') ') + 2).split(' ');
    return rest[19] ?? null; // fields from 3 (state) on; 22 is the 20th
  } catch {
    return null;
  }
}

interface Owner { pid: number; start: string | null; what: string }

function readOwner(path: string): Owner | null {
  let text: string;
  try { text = readFileSync(path, 'utf8'); } catch { return null; }
  const m = /^(\d+) (\S+) ?(.*)$/m.exec(text);
  if (!m) return { pid: 0, start: null, what: '' }; // torn or foreign content: nobody's
  return { pid: Number(m[1]), start: m[2] === '-' ? null : (m[2] as string), what: (m[3] ?? '').slice(0, 200) };
}

function ownerAlive(o: Owner): boolean {
  if (o.pid <= 0 || !processAlive(o.pid)) return false;
  // The same pid with another start time is a later process that reused the number.
  return o.start === null || startTicks(o.pid) === o.start;
}

/**
 * Takes the lock file at `path` for `what` (named in the refusal another process gets), or
 * throws LockHeldError naming the live owner's pid. A stale lock (dead owner) is taken over.
 */
export function acquireLock(path: string, what: string): HeldLock {
  const mine = `${process.pid} ${startTicks(process.pid) ?? '-'} ${what.replace(/\s+/g, ' ').slice(0, 200)}\n`;
  if (heldHere.has(path)) {
    throw new LockHeldError(`${what}: already owned by this process (pid ${process.pid}) for ${heldHere.get(path)} (lock ${path})`, path, process.pid);
  }
  // Written whole under a private name first, then linked into place: the lock never exists half-written.
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.${Date.now()}`);
  const fd = openSync(tmp, 'wx', 0o644);
  try { writeSync(fd, mine); } finally { closeSync(fd); }
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        linkSync(tmp, path);
        break;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw new Error(`${what}: cannot create lock ${path}: ${(e as Error).message}`);
      }
      const owner = readOwner(path);
      if (owner && ownerAlive(owner)) {
        throw new LockHeldError(`${what}: owned by pid ${owner.pid}${owner.what ? ` (${owner.what})` : ''}, which is running; refusing to touch it (lock ${path})`, path, owner.pid);
      }
      if (attempt >= 3) throw new Error(`${what}: lock ${path} keeps changing hands; giving up`);
      // Stale: its owner is gone. Another taker may race us here; the link above decides who wins.
      try { unlinkSync(path); } catch { /* someone else removed it */ }
    }
  } finally {
    try { unlinkSync(tmp); } catch { /* gone */ }
  }
  heldHere.set(path, what);
  let released = false;
  return {
    path,
    release: () => {
      if (released) return;
      released = true;
      heldHere.delete(path);
      // Only our own lock: a takeover after we were thought dead must not be undone.
      try { if (readFileSync(path, 'utf8') === mine) unlinkSync(path); } catch { /* gone */ }
    },
  };
}

/**
 * The lock of a supervisor's state: a file beside its SQLite database, so two supervisors
 * never write one database (and never both act on its guests).
 */
export function acquireStateLock(databasePath: string): HeldLock {
  return acquireLock(`${databasePath}.lock`, `supervisor state ${databasePath}`);
}
