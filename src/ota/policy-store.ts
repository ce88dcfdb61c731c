// The running policy, on disk and live. Applying a new one is atomic
// (write a temp file, fsync, rename over current.json, fsync the directory,
// after saving the running one as previous.json), then the watchdog's
// listeners load it; if one of them refuses it, the previous policy is put
// back on disk and handed to the listeners again (rollback).
import { mkdirSync, readFileSync, renameSync, existsSync } from 'node:fs';
import { fsyncDir, writeFileDurably } from '../util/fs.js';
import { join } from 'node:path';
import type { ActivePolicy, PolicyListener, PolicySource, PolicyValidator } from '../events/sink.js';
import { errorMessage } from '../util/errors.js';

/** What current.json / previous.json hold. */
export interface StoredPolicy {
  readonly version: number;
  readonly appliedAtMs: number;
  readonly source: string;
  readonly keyId: string | null;
  /** sha256 of the bundle signature it came in, when it came in a bundle. */
  readonly digest: string | null;
  readonly document: unknown;
}

export interface PolicyCandidate {
  readonly version: number;
  readonly source: string;
  readonly keyId: string | null;
  readonly digest: string | null;
  readonly document: unknown;
}

export type ApplyResult =
  | { readonly ok: true; readonly version: number; readonly previousVersion: number | null }
  | { readonly ok: false; readonly rolledBack: boolean; readonly reason: string; readonly activeVersion: number | null };

export class FilePolicyStore<P> implements PolicySource<P> {
  private active: (ActivePolicy<P> & { stored: StoredPolicy }) | null = null;
  private readonly listeners = new Set<PolicyListener<P>>();
  private queue: Promise<unknown> = Promise.resolve();
  /** Problems met while opening (a corrupt current.json, ...), for the log. */
  readonly openProblems: string[] = [];

  private constructor(readonly dir: string, private readonly validate: PolicyValidator<P>) {}

  get currentPath(): string { return join(this.dir, 'current.json'); }
  get previousPath(): string { return join(this.dir, 'previous.json'); }

  /**
   * Opens the policy directory: the running policy is current.json, or
   * previous.json when current.json is unreadable or invalid, or `initial`
   * (installed as version 0) when neither exists.
   */
  static open<P>(dir: string, validate: PolicyValidator<P>, initial?: { document: unknown; source: string }): FilePolicyStore<P> {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const store = new FilePolicyStore(dir, validate);
    for (const path of [store.currentPath, store.previousPath]) {
      if (!existsSync(path)) continue;
      const loaded = store.readStored(path);
      if (typeof loaded === 'string') { store.openProblems.push(loaded); continue; }
      store.active = loaded;
      break;
    }
    if (!store.active && initial) {
      const v = validate(initial.document);
      if (!v.ok) throw new Error(`policy store ${dir}: the initial policy (${initial.source}) is invalid: ${v.errors.join('; ')}`);
      const stored: StoredPolicy = { version: 0, appliedAtMs: Date.now(), source: initial.source, keyId: null, digest: null, document: initial.document };
      writeFileDurably(store.currentPath, JSON.stringify(stored, null, 2));
      fsyncDir(dir);
      store.active = { version: 0, policy: v.policy, appliedAtMs: stored.appliedAtMs, source: stored.source, stored };
    }
    return store;
  }

  private readStored(path: string): (ActivePolicy<P> & { stored: StoredPolicy }) | string {
    let stored: StoredPolicy;
    try {
      stored = JSON.parse(readFileSync(path, 'utf8')) as StoredPolicy;
    } catch (e) {
      return `${path}: ${errorMessage(e)}`;
    }
    if (typeof stored !== 'object' || stored === null || !Number.isInteger(stored.version) || typeof stored.source !== 'string') return `${path}: not a stored policy`;
    const v = this.validate(stored.document);
    if (!v.ok) return `${path}: ${v.errors.join('; ')}`;
    return { version: stored.version, policy: v.policy, appliedAtMs: stored.appliedAtMs, source: stored.source, stored };
  }

  current(): ActivePolicy<P> | null {
    if (!this.active) return null;
    const { version, policy, appliedAtMs, source } = this.active;
    return { version, policy, appliedAtMs, source };
  }

  currentStored(): StoredPolicy | null { return this.active?.stored ?? null; }

  subscribe(listener: PolicyListener<P>): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Applies a candidate (one at a time); the candidate's version must already have been checked by the caller. */
  apply(candidate: PolicyCandidate): Promise<ApplyResult> {
    const run = this.queue.then(() => this.applyNow(candidate));
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async applyNow(c: PolicyCandidate): Promise<ApplyResult> {
    const v = this.validate(c.document);
    const activeVersion = this.active?.version ?? null;
    if (!v.ok) return { ok: false, rolledBack: false, reason: `policy document: ${v.errors.join('; ')}`, activeVersion };
    const before = this.active;
    const stored: StoredPolicy = { version: c.version, appliedAtMs: Date.now(), source: c.source, keyId: c.keyId, digest: c.digest, document: c.document };
    try {
      if (before) writeFileDurably(this.previousPath, JSON.stringify(before.stored, null, 2));
      writeFileDurably(this.currentPath, JSON.stringify(stored, null, 2));
      fsyncDir(this.dir);
    } catch (e) {
      return { ok: false, rolledBack: false, reason: `writing ${this.currentPath}: ${errorMessage(e)}`, activeVersion };
    }
    const next = { version: c.version, policy: v.policy, appliedAtMs: stored.appliedAtMs, source: c.source, stored };
    this.active = next;
    const failure = await this.notify(next);
    if (failure === null) return { ok: true, version: c.version, previousVersion: before?.version ?? null };
    // Roll back: the previous policy goes back on disk and to every listener.
    this.active = before;
    try {
      if (before) writeFileDurably(this.currentPath, JSON.stringify(before.stored, null, 2));
      fsyncDir(this.dir);
    } catch (e) {
      return { ok: false, rolledBack: true, reason: `failed to load: ${failure}; and restoring ${this.currentPath} failed: ${errorMessage(e)}`, activeVersion: before?.version ?? null };
    }
    if (before) await this.notify(before);
    return { ok: false, rolledBack: true, reason: `failed to load: ${failure}`, activeVersion: before?.version ?? null };
  }

  private async notify(p: ActivePolicy<P>): Promise<string | null> {
    const view: ActivePolicy<P> = { version: p.version, policy: p.policy, appliedAtMs: p.appliedAtMs, source: p.source };
    for (const l of this.listeners) {
      try {
        await l(view);
      } catch (e) {
        return errorMessage(e);
      }
    }
    return null;
  }
}
