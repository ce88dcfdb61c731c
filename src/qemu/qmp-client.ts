// QMP client: JSON over QEMU's monitor socket. Every call has a timeout;
// replies are matched by id, asynchronous events are emitted as 'event'.
import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import { JsonLineDecoder, MAX_QMP_LINE_BYTES, encodeJsonLine, isRecord } from './json-lines.js';
import { connectUnix } from './unix-socket.js';
import { withTimeout } from '../util/deadline.js';
import { NotReachableError } from '../util/errors.js';

export class QmpError extends Error {
  override readonly name = 'QmpError';
  constructor(readonly command: string, readonly errorClass: string, readonly desc: string) {
    super(`QMP ${command} failed: ${errorClass}: ${desc}`);
  }
}

export interface QmpEvent {
  event: string;
  data: Record<string, unknown>;
  timestamp: { seconds: number; microseconds: number } | undefined;
}

export interface QmpStatus {
  status: string;
  running: boolean;
}

interface Pending {
  command: string;
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
}

export const DEFAULT_QMP_TIMEOUT_MS = 10_000;

export class QmpClient extends EventEmitter {
  private readonly decoder = new JsonLineDecoder(MAX_QMP_LINE_BYTES);
  private readonly pending = new Map<string, Pending>();
  private nextId = 1;
  private closed = false;
  /** Waiting for QEMU's greeting; rejected if the socket closes first (QEMU died right after listening). */
  private greeting: Pending | undefined;

  private constructor(private readonly sock: Socket, readonly path: string) {
    super();
    sock.on('data', (d: Buffer) => this.onData(d));
    sock.on('error', () => undefined);
    sock.on('close', () => this.onClose());
  }

  /** Connects, waits for the greeting and negotiates capabilities. */
  static async connect(path: string, timeoutMs = DEFAULT_QMP_TIMEOUT_MS): Promise<QmpClient> {
    const sock = await connectUnix(path, 'QMP', timeoutMs);
    const client = new QmpClient(sock, path);
    try {
      await withTimeout(client.greeted(), timeoutMs, `QMP greeting on ${path}`);
      await client.execute('qmp_capabilities', undefined, timeoutMs);
    } catch (e) {
      client.close();
      throw e;
    }
    return client;
  }

  private greeted(): Promise<unknown> {
    if (this.closed) return Promise.reject(new NotReachableError(`QMP greeting: connection to ${this.path} closed`));
    return new Promise((resolve, reject) => { this.greeting = { command: 'greeting', resolve, reject }; });
  }

  execute<T = unknown>(command: string, args?: Record<string, unknown>, timeoutMs = DEFAULT_QMP_TIMEOUT_MS): Promise<T> {
    if (this.closed) return Promise.reject(new NotReachableError(`QMP ${command}: connection to ${this.path} is closed`));
    const id = `iv-${this.nextId++}`;
    const reply = new Promise<unknown>((resolve, reject) => this.pending.set(id, { command, resolve, reject }));
    this.sock.write(encodeJsonLine(args ? { execute: command, arguments: args, id } : { execute: command, id }));
    return withTimeout(reply, timeoutMs, `QMP ${command} on ${this.path}`, () => this.pending.delete(id)) as Promise<T>;
  }

  async queryStatus(timeoutMs?: number): Promise<QmpStatus> {
    const r = await this.execute('query-status', undefined, timeoutMs);
    if (!isRecord(r) || typeof r.status !== 'string' || typeof r.running !== 'boolean') {
      throw new Error(`QMP query-status: unexpected reply ${JSON.stringify(r).slice(0, 200)}`);
    }
    return { status: r.status, running: r.running };
  }

  /** Runs an HMP command (e.g. "info registers") and returns its text. */
  async hmp(commandLine: string, timeoutMs?: number): Promise<string> {
    const r = await this.execute('human-monitor-command', { 'command-line': commandLine }, timeoutMs);
    if (typeof r !== 'string') throw new Error(`QMP human-monitor-command "${commandLine}": reply is not text`);
    return r;
  }

  close(): void {
    if (this.closed) return;
    this.sock.destroy();
    this.onClose();
  }

  get isClosed(): boolean { return this.closed; }

  private onData(d: Buffer): void {
    for (const ev of this.decoder.push(d)) {
      if (ev.kind !== 'message' || !isRecord(ev.value)) continue;
      const msg = ev.value;
      if ('QMP' in msg) {
        this.greeting?.resolve(msg);
        this.greeting = undefined;
      } else if (typeof msg.event === 'string') {
        const ts = isRecord(msg.timestamp) && typeof msg.timestamp.seconds === 'number' && typeof msg.timestamp.microseconds === 'number'
          ? { seconds: msg.timestamp.seconds, microseconds: msg.timestamp.microseconds } : undefined;
        const event: QmpEvent = { event: msg.event, data: isRecord(msg.data) ? msg.data : {}, timestamp: ts };
        this.emit('event', event);
      } else if (typeof msg.id === 'string') {
        const p = this.pending.get(msg.id);
        if (!p) continue;
        this.pending.delete(msg.id);
        if ('return' in msg) p.resolve(msg.return);
        else if (isRecord(msg.error)) {
          p.reject(new QmpError(p.command, String(msg.error.class), String(msg.error.desc)));
        } else p.reject(new Error(`QMP ${p.command}: malformed reply`));
      }
    }
  }

  private onClose(): void {
    if (this.closed) return;
    this.closed = true;
    this.greeting?.reject(new NotReachableError(`QMP greeting: connection to ${this.path} closed before QEMU greeted`));
    this.greeting = undefined;
    for (const [, p] of this.pending) p.reject(new NotReachableError(`QMP ${p.command}: connection to ${this.path} closed`));
    this.pending.clear();
    this.emit('close');
  }
}
