// TAP lines for the check programs that run inside a nested guest and report
// over its serial console (check-binding.js, chain-check.js); the scripts that
// boot the guest turn them into their own checks (nested_relay).
export class TapLines {
  private n = 0;
  private failed = 0;

  /** prefix: put before every description, e.g. the mode the program runs in. */
  constructor(private readonly prefix: string) {}

  /** Prints "ok N - prefix: what" or "not ok ..." with the detail as a comment; returns ok. */
  check(ok: boolean, what: string, detail?: unknown): boolean {
    this.n++;
    if (!ok) this.failed++;
    console.log(`${ok ? 'ok' : 'not ok'} ${this.n} - ${this.prefix}: ${what}`);
    if (!ok && detail !== undefined) {
      const text = typeof detail === 'string' ? detail : JSON.stringify(detail, (_, v: unknown) => (typeof v === 'bigint' ? `0x${v.toString(16)}` : v));
      console.log(`# ${text}`.slice(0, 2000));
    }
    return ok;
  }

  /** Prints the plan; true when there was at least one check and none failed. */
  plan(): boolean {
    console.log(`1..${this.n}`);
    return this.failed === 0 && this.n > 0;
  }
}
