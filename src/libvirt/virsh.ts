// libvirt through its own client, virsh: libvirt owns a domain's QMP monitor
// and guest-agent sockets, so monitor commands, agent commands, lifecycle and
// events all go through it. Every call is a spawned virsh with a deadline and a
// bound on what it may print; replies are parsed as hostile JSON.
import { spawn, type ChildProcess } from 'node:child_process';
import { jsonShapeRefusal, isRecord } from '../qemu/json-lines.js';
import { NotReachableError, TimeoutError } from '../util/errors.js';

/** The system libvirtd's connection. */
export const DEFAULT_LIBVIRT_URI = 'qemu:///system';
/** Where the system libvirtd's QEMU driver keeps each running domain's pid file (<dom>.pid). */
export const DEFAULT_LIBVIRT_STATE_DIR = '/run/libvirt/qemu';

/** An agent reply carries a guest-exec's output, base64: the agent caps that at 16 MiB per stream. */
export const MAX_VIRSH_REPLY_BYTES = 48 * 1024 * 1024;
const MAX_EVENT_LINE_BYTES = 4096;

/** virsh ran and said no (an unknown domain, a guest agent that is not connected, a refused command). */
export class VirshError extends Error {
  override readonly name = 'VirshError';
  constructor(readonly args: readonly string[], readonly code: number | null, readonly stderr: string) {
    super(`virsh ${args.slice(0, 2).join(' ')}: ${stderr.replace(/^error: /gm, '').replace(/\s+/g, ' ').trim().slice(0, 500) || `exited ${code}`}`);
  }
  /** libvirtd itself did not answer (as opposed to refusing this command). */
  get unreachable(): boolean {
    return /failed to connect to the hypervisor|Failed to connect socket|No such file or directory.*sock|Connection refused|End of file while reading data/i.test(this.stderr);
  }
}

export interface LibvirtConnection {
  readonly uri: string;
  /** The QEMU driver's run folder: <stateDir>/<domain>.pid is the domain's QEMU pid. */
  readonly stateDir: string;
}

export class Virsh {
  constructor(readonly conn: LibvirtConnection, private readonly program = 'virsh') {}

  /** Runs one virsh command against the connection; resolves with stdout, rejects with VirshError/TimeoutError. */
  run(args: readonly string[], timeoutMs: number, maxBytes = 1024 * 1024): Promise<string> {
    const argv = ['-q', '-c', this.conn.uri, ...args];
    return new Promise((resolve, reject) => {
      let child: ChildProcess;
      try {
        // Its own process group, so a deadline kills whatever it started too (ssh for a remote URI).
        child = spawn(this.program, argv, { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
      } catch (e) {
        reject(new NotReachableError(`virsh: ${(e as Error).message}`));
        return;
      }
      const out: Buffer[] = [];
      let outBytes = 0;
      let err = '';
      let failure: Error | null = null;
      const fail = (e: Error): void => {
        if (failure) return;
        failure = e;
        clearTimeout(timer);
        try { process.kill(-(child.pid as number), 'SIGKILL'); } catch { child.kill('SIGKILL'); }
        child.stdout?.destroy();
        child.stderr?.destroy();
        reject(e);
      };
      const timer = setTimeout(() => fail(new TimeoutError(`virsh ${args.slice(0, 2).join(' ')}`, timeoutMs)), timeoutMs);
      child.stdout?.on('data', (d: Buffer) => {
        outBytes += d.length;
        if (outBytes > maxBytes) fail(new Error(`virsh ${args.slice(0, 2).join(' ')}: reply over ${maxBytes} bytes refused`));
        else out.push(d);
      });
      child.stderr?.on('data', (d: Buffer) => { if (err.length < 8192) err += d.toString('utf8'); });
      child.on('error', (e) => fail(new NotReachableError(`virsh (apt-get install libvirt-clients): ${e.message}`)));
      child.on('close', (code) => {
        clearTimeout(timer);
        if (failure) return;
        if (code === 0) resolve(Buffer.concat(out).toString('utf8'));
        else reject(new VirshError(args, code, err));
      });
    });
  }

  /** A QMP command through libvirt's monitor passthrough; the reply's `return`. */
  async qmp(domain: string, command: string, args: Record<string, unknown> | undefined, timeoutMs: number): Promise<unknown> {
    const msg = JSON.stringify(args ? { execute: command, arguments: args } : { execute: command });
    const text = await this.run(['qemu-monitor-command', domain, msg], timeoutMs);
    return replyReturn(text, `QMP ${command} of domain ${domain}`);
  }

  /** An HMP command (the introspection engine reads CR3/CR4 with `info registers`). */
  hmp(domain: string, command: string, timeoutMs: number): Promise<string> {
    return this.run(['qemu-monitor-command', domain, '--hmp', command], timeoutMs);
  }

  /** A guest-agent command through libvirt's agent passthrough; the reply's `return`. */
  async agent(domain: string, command: string, args: Record<string, unknown> | undefined, timeoutMs: number): Promise<unknown> {
    const msg = JSON.stringify(args ? { execute: command, arguments: args } : { execute: command });
    // virsh's own agent timeout (whole seconds) under ours, so libvirt gives the agent up first.
    const sec = Math.max(1, Math.floor(timeoutMs / 1000) - 1);
    const text = await this.run(['qemu-agent-command', domain, msg, '--timeout', String(sec)], timeoutMs + 2_000, MAX_VIRSH_REPLY_BYTES);
    return replyReturn(text, `guest agent ${command} of domain ${domain}`);
  }

  /** The domain's state word (`running`, `paused`, `shut off`, ...). */
  async state(domain: string, timeoutMs: number): Promise<string> {
    return (await this.run(['domstate', domain], timeoutMs)).trim().split('\n')[0]?.trim() ?? '';
  }

  /** The domain's XML: the running definition, or the persistent one with `inactive`. */
  dumpXml(domain: string, opts: { inactive: boolean }, timeoutMs: number): Promise<string> {
    return this.run(['dumpxml', domain, ...(opts.inactive ? ['--inactive'] : [])], timeoutMs, 4 * 1024 * 1024);
  }

  /**
   * Follows a domain's events (`virsh event --loop`): each event's name to `onEvent`. Lines are
   * bounded; the watcher ends when virsh does (libvirtd went away) and says so through onEnd.
   */
  watchEvents(domain: string, onEvent: (name: string, detail: string) => void, onEnd: (why: string) => void): { close(): void; readonly alive: boolean } {
    const child = spawn(this.program, ['-q', '-c', this.conn.uri, 'event', '--domain', domain, '--loop', '--all'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let buf = '';
    let alive = true;
    let err = '';
    child.stdout.on('data', (d: Buffer) => {
      buf += d.toString('utf8');
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        const m = /^event '([a-z-]+)' for domain '[^']*'(?::\s*(.*))?$/.exec(line.trim());
        if (m) onEvent(m[1] as string, (m[2] ?? '').slice(0, 200));
      }
      if (buf.length > MAX_EVENT_LINE_BYTES) buf = '';
    });
    child.stderr.on('data', (d: Buffer) => { if (err.length < 2048) err += d.toString('utf8'); });
    child.on('error', (e) => { err += e.message; });
    child.on('close', (code) => {
      alive = false;
      onEnd(`virsh event exited ${code}${err ? `: ${err.trim().slice(0, 300)}` : ''}`);
    });
    return {
      close: () => { if (alive) child.kill('SIGTERM'); },
      get alive() { return alive; },
    };
  }
}

/** The `return` of a QMP/agent reply virsh printed; an `error` in it, or anything else, is an Error. */
export function replyReturn(text: string, what: string): unknown {
  const buf = Buffer.from(text.trim(), 'utf8');
  if (buf.length === 0) throw new Error(`${what}: empty reply`);
  const refusal = jsonShapeRefusal(buf);
  if (refusal) throw new Error(`${what}: reply refused: ${refusal}`);
  let v: unknown;
  try {
    v = JSON.parse(buf.toString('utf8'));
  } catch {
    throw new Error(`${what}: reply is not JSON: ${JSON.stringify(text.slice(0, 100))}`);
  }
  if (!isRecord(v)) throw new Error(`${what}: reply is not an object`);
  if ('return' in v) return v.return;
  if (isRecord(v.error)) throw new Error(`${what}: ${String(v.error.class).slice(0, 60)}: ${String(v.error.desc).slice(0, 300)}`);
  throw new Error(`${what}: malformed reply`);
}
