// A boot told apart by the guest's own boot id (a random UUID the kernel makes at each boot), read
// through the guest agent: how a controller knows a reboot or reset really happened.
import { sleep, withTimeout } from '../util/deadline.js';
import { TimeoutError, errorMessage } from '../util/errors.js';

const BOOT_ID = '/proc/sys/kernel/random/boot_id';

/** Runs one shell command in the guest through its agent and answers its output. */
export type GuestShell = (command: string, timeoutMs: number) => Promise<string>;

/** The guest's boot id; anything but a UUID is an error naming what was read. */
export async function readBootId(shell: GuestShell, who: string, timeoutMs: number): Promise<string> {
  const id = (await shell(`cat ${BOOT_ID}`, timeoutMs)).trim();
  if (!/^[0-9a-f-]{36}$/.test(id)) throw new Error(`${who}: ${BOOT_ID} reads ${JSON.stringify(id.slice(0, 60))}`);
  return id;
}

export interface WaitForNewBootOptions {
  readonly shell: GuestShell;
  /** Names the guest in errors. */
  readonly who: string;
  /** The boot id before the reboot, or null for any boot. */
  readonly before: string | null;
  readonly deadline: number;
  /** What was waited for, for the error. */
  readonly what: string;
  /** How long one read may take (an agent just restarting is slow to answer). */
  readonly readTimeoutMs: number;
  readonly pollMs: number;
}

/** Waits until the agent answers from a boot other than `before`: the guest really came back. */
export async function waitForNewBoot(o: WaitForNewBootOptions): Promise<string> {
  let last = 'no answer yet';
  // Give the old kernel a moment to go down, so its agent is not mistaken for the new one.
  await sleep(500);
  while (Date.now() < o.deadline) {
    try {
      const id = await withTimeout(readBootId(o.shell, o.who, o.readTimeoutMs), o.readTimeoutMs + Math.max(1_000, o.readTimeoutMs / 2), `${o.who} boot id`);
      if (o.before === null || id !== o.before) return id;
      last = 'still the old boot';
    } catch (e) {
      last = errorMessage(e);
    }
    await sleep(o.pollMs);
  }
  throw new TimeoutError(`${o.who}: ${o.what}: the guest did not come back (${last})`, Math.max(0, o.deadline - Date.now()));
}
