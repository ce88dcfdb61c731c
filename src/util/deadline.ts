import { TimeoutError } from './errors.js';

/** Races a promise against a timer; the timer never keeps the process alive. */
export function withTimeout<T>(p: Promise<T>, timeoutMs: number, what: string, onTimeout?: () => void): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => {
      onTimeout?.();
      reject(new TimeoutError(what, timeoutMs));
    }, timeoutMs);
    timer.unref();
    p.then(
      (v) => { clearTimeout(timer); resolve(v); },
      (e: unknown) => { clearTimeout(timer); reject(e); },
    );
  });
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Whether p settles (either way) within timeoutMs. Unlike a race against sleep(), the timer
 * is cleared when p settles, so a process that is otherwise done does not wait it out.
 */
export function settlesWithin(p: Promise<unknown>, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), timeoutMs);
    const done = (): void => { clearTimeout(timer); resolve(true); };
    p.then(done, done);
  });
}
