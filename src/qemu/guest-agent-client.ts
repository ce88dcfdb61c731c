// qemu-guest-agent client. The agent answers one command at a time with no
// ids, so commands are queued; after a timeout or on connect the stream is
// resynchronised with guest-sync-delimited (its reply starts with 0xFF).
import type { Socket } from 'node:net';
import { randomInt } from 'node:crypto';
import { JsonLineDecoder, MAX_AGENT_LINE_BYTES, encodeJsonLine, isRecord } from './json-lines.js';
import { connectUnix } from './unix-socket.js';
import { sleep, withTimeout } from '../util/deadline.js';
import { NotReachableError, TimeoutError } from '../util/errors.js';

export class GuestAgentError extends Error {
  override readonly name = 'GuestAgentError';
  constructor(readonly command: string, readonly errorClass: string, readonly desc: string) {
    super(`guest agent ${command} failed: ${errorClass}: ${desc}`);
  }
}

export interface ExecResult {
  exitCode: number | undefined;
  signal: number | undefined;
  stdout: Buffer;
  stderr: Buffer;
  /** The agent truncates captured output at 16 MiB. */
  truncated: boolean;
}

export interface ExecOptions {
  timeoutMs?: number;
  input?: Buffer | string;
  env?: string[];
  /** Do not wait for the process to exit (daemons); the result has exitCode undefined. */
  detach?: boolean;
}

export const DEFAULT_AGENT_TIMEOUT_MS = 10_000;

type Waiter = { command: string; resolve: (v: unknown) => void; reject: (e: Error) => void };

export class GuestAgentClient {
  private readonly decoder = new JsonLineDecoder(MAX_AGENT_LINE_BYTES);
  private waiter: Waiter | undefined;
  private queue: Promise<unknown> = Promise.resolve();
  private inSync = false;
  private closed = false;

  private constructor(private readonly sock: Socket, readonly path: string) {
    sock.on('data', (d: Buffer) => this.onData(d));
    sock.on('error', () => undefined);
    sock.on('close', () => this.onClose());
  }

  /** Connects to the agent's socket. The first command syncs the stream. */
  static async connect(path: string, timeoutMs = DEFAULT_AGENT_TIMEOUT_MS): Promise<GuestAgentClient> {
    return new GuestAgentClient(await connectUnix(path, 'guest agent', timeoutMs), path);
  }

  get isClosed(): boolean { return this.closed; }

  close(): void {
    if (this.closed) return;
    this.sock.destroy();
    this.onClose();
  }

  /** Runs one command; commands are serialised, the stream is resynced first when needed. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>, timeoutMs = DEFAULT_AGENT_TIMEOUT_MS): Promise<T> {
    return this.enqueue(async () => {
      if (!this.inSync) await this.resync(timeoutMs);
      return this.roundTrip(command, args, timeoutMs);
    }) as Promise<T>;
  }

  /** Discards whatever is in flight and waits for the reply to a fresh sync id (queued like a command). */
  async sync(timeoutMs = DEFAULT_AGENT_TIMEOUT_MS): Promise<void> {
    await this.enqueue(() => this.resync(timeoutMs));
  }

  // One exchange at a time: the agent's replies carry no id, so a second
  // reader would take the first one's reply.
  private enqueue(run: () => Promise<unknown>): Promise<unknown> {
    const p = this.queue.then(run, run);
    this.queue = p.catch(() => undefined);
    return p;
  }

  async ping(timeoutMs?: number): Promise<void> {
    await this.execute('guest-ping', undefined, timeoutMs);
  }

  /** Runs a program in the guest and waits for it (unless detached), with its output. */
  exec(path: string, args: string[] = [], opts: ExecOptions = {}): Promise<ExecResult> {
    return agentExec((c, a, t) => this.execute(c, a, t), path, args, opts);
  }

  /** Runs a shell command line through the guest's /bin/sh; rejects on a non-zero exit. */
  shell(commandLine: string, opts: ExecOptions = {}): Promise<string> {
    return agentShell((c, a, t) => this.execute(c, a, t), commandLine, opts);
  }

  /**
   * Asks the guest OS to reboot, power down or halt. The agent sends no reply
   * on success, so success here means: no error came back within graceMs.
   */
  async shutdown(mode: 'reboot' | 'powerdown' | 'halt', graceMs = 1_000): Promise<void> {
    try {
      await this.execute('guest-shutdown', { mode }, graceMs);
    } catch (e) {
      if (e instanceof TimeoutError) {
        this.inSync = false;
        return;
      }
      throw e;
    }
  }

  private async resync(timeoutMs: number): Promise<void> {
    const id = randomInt(1, 2 ** 31);
    this.decoder.skipToDelimiter();
    const deadline = Date.now() + timeoutMs;
    this.send({ execute: 'guest-sync-delimited', arguments: { id } });
    // Stale replies of earlier commands may still arrive: read until ours. A timeout names the
    // whole wait, not the few ms left of it when the last wrong reply came.
    let others = 0;
    const timedOut = (): TimeoutError => new TimeoutError(
      `guest agent sync on ${this.path}${others > 0 ? ` (the agent only replies to other sync ids: ${others} such replies)` : ''}`, timeoutMs);
    for (;;) {
      const left = deadline - Date.now();
      if (left <= 0) throw timedOut();
      let v: unknown;
      try {
        v = await this.next(left, 'guest-sync-delimited');
      } catch (e) {
        throw e instanceof TimeoutError ? timedOut() : e;
      }
      if (v === id) break;
      others++;
    }
    this.inSync = true;
  }

  private async roundTrip(command: string, args: Record<string, unknown> | undefined, timeoutMs: number): Promise<unknown> {
    this.send(args ? { execute: command, arguments: args } : { execute: command });
    try {
      return await this.next(timeoutMs, command);
    } catch (e) {
      if (e instanceof TimeoutError || e instanceof NotReachableError) this.inSync = false;
      throw e;
    }
  }

  private send(msg: Record<string, unknown>): void {
    if (this.closed) throw new NotReachableError(`guest agent at ${this.path}: connection closed`);
    this.sock.write(encodeJsonLine(msg));
  }

  private next(timeoutMs: number, command: string): Promise<unknown> {
    if (this.closed) return Promise.reject(new NotReachableError(`guest agent ${command}: connection to ${this.path} closed`));
    const p = new Promise<unknown>((resolve, reject) => { this.waiter = { command, resolve, reject }; });
    return withTimeout(p, timeoutMs, `guest agent ${command} on ${this.path}`, () => { this.waiter = undefined; });
  }

  private onData(d: Buffer): void {
    for (const ev of this.decoder.push(d)) {
      const w = this.waiter;
      if (ev.kind === 'garbage') {
        // A line over a bound was the reply (the agent answers one command at a time): say so now,
        // not at the timeout. Unparsable bytes (a restarting agent's leftovers) are skipped as before.
        if (!w || !ev.bound) continue;
        this.waiter = undefined;
        this.inSync = false;
        w.reject(new Error(`guest agent ${w.command} on ${this.path}: reply refused: ${ev.reason}`));
        continue;
      }
      if (!isRecord(ev.value)) continue;
      if (!w) continue; // a late reply to a command that timed out
      this.waiter = undefined;
      const msg = ev.value;
      if ('return' in msg) w.resolve(msg.return);
      else if (isRecord(msg.error)) w.reject(new GuestAgentError(w.command, String(msg.error.class), String(msg.error.desc)));
      else w.reject(new Error(`guest agent ${w.command}: malformed reply`));
    }
  }

  private onClose(): void {
    if (this.closed) return;
    this.closed = true;
    this.waiter?.reject(new NotReachableError(`guest agent at ${this.path}: connection closed`));
    this.waiter = undefined;
  }
}

/** One agent command and its reply's `return`: over the agent's socket, or through libvirt's agent passthrough. */
export type AgentExecute = (command: string, args: Record<string, unknown> | undefined, timeoutMs: number) => Promise<unknown>;

/** Runs a program in the guest through `execute` (guest-exec, then guest-exec-status until it exits), with its output. */
export async function agentExec(execute: AgentExecute, path: string, args: string[] = [], opts: ExecOptions = {}): Promise<ExecResult> {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const started = Date.now();
  const execArgs: Record<string, unknown> = { path, arg: args, 'capture-output': !opts.detach };
  if (opts.env) execArgs.env = opts.env;
  if (opts.input !== undefined) execArgs['input-data'] = Buffer.from(opts.input).toString('base64');
  const r = await execute('guest-exec', execArgs, timeoutMs);
  if (!isRecord(r) || typeof r.pid !== 'number') throw new Error(`guest agent guest-exec ${path}: unexpected reply`);
  const pid = r.pid;
  if (opts.detach) return { exitCode: undefined, signal: undefined, stdout: Buffer.alloc(0), stderr: Buffer.alloc(0), truncated: false };
  for (let delay = 20; ; delay = Math.min(delay * 2, 250)) {
    const left = timeoutMs - (Date.now() - started);
    if (left <= 0) throw new TimeoutError(`guest agent exec ${path} (guest pid ${pid})`, timeoutMs);
    const s = await execute('guest-exec-status', { pid }, Math.max(left, 1));
    if (!isRecord(s) || typeof s.exited !== 'boolean') throw new Error('guest agent guest-exec-status: unexpected reply');
    if (s.exited) {
      return {
        exitCode: typeof s.exitcode === 'number' ? s.exitcode : undefined,
        signal: typeof s.signal === 'number' ? s.signal : undefined,
        stdout: typeof s['out-data'] === 'string' ? Buffer.from(s['out-data'], 'base64') : Buffer.alloc(0),
        stderr: typeof s['err-data'] === 'string' ? Buffer.from(s['err-data'], 'base64') : Buffer.alloc(0),
        truncated: s['out-truncated'] === true || s['err-truncated'] === true,
      };
    }
    await sleep(Math.min(delay, left));
  }
}

/** Runs a shell command line through the guest's /bin/sh; rejects on a non-zero exit. */
export async function agentShell(execute: AgentExecute, commandLine: string, opts: ExecOptions = {}): Promise<string> {
  const r = await agentExec(execute, '/bin/sh', ['-c', commandLine], opts);
  if (r.exitCode !== 0) {
    throw new Error(`guest command "${commandLine}" exited ${r.exitCode ?? `by signal ${r.signal}`}: ${r.stderr.toString().trim().slice(0, 500)}`);
  }
  return r.stdout.toString('utf8');
}
