// Error kinds shared by the adapters: each names what failed and where.

/** A call that did not answer in time. */
export class TimeoutError extends Error {
  override readonly name = 'TimeoutError';
  constructor(what: string, readonly timeoutMs: number) {
    super(`${what}: no answer within ${timeoutMs} ms`);
  }
}

/** Something on the other end of a socket is not there. */
export class NotReachableError extends Error {
  override readonly name = 'NotReachableError';
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Input from outside (a CLI flag, a query parameter, a file) that is not what it must be; the message says what and where. */
export class InputError extends Error {
  override readonly name = 'InputError';
}
