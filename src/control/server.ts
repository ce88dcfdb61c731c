// The supervisor's control socket: a local unix socket, mode 0600 in the
// supervisor's run directory, so only root (the supervisor's user) can ask.
// One JSON request per line, one JSON reply per line, in order; a line over
// MAX_REQUEST_BYTES is refused and the connection closed.
import { chmodSync, existsSync, lstatSync, mkdirSync, unlinkSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { dirname } from 'node:path';
import { errorMessage } from '../util/errors.js';
import { MAX_REQUEST_BYTES, parseRequest, type ActionProgress, type ControlReply } from './protocol.js';
import type { ControlOperations } from './operations.js';
import { loadNative } from '../native/binding.js';

/** Connections served at once; more are closed at once. */
export const MAX_CONNECTIONS = 16;

export interface ControlServer {
  readonly path: string;
  close(): Promise<void>;
}

/** Whether something answers on a unix socket path (a live supervisor) or it is a leftover. */
function answers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(path);
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('error', () => resolve(false));
  });
}

/** The peer as the kernel recorded it when it connected (SO_PEERCRED), or null when it cannot be read. */
export interface Peer { readonly uid: number; readonly pid: number }

/**
 * SO_PEERCRED through the native addon on the connection's fd (Node exposes neither; the fd is
 * read from the socket's handle, which every unix socket of Node's has on Linux). null, and the
 * claim stays unverified, when either is missing; the socket's 0600 mode is the access control.
 */
export function peerOf(sock: Socket): Peer | null {
  const fd = (sock as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
  if (typeof fd !== 'number' || !Number.isInteger(fd) || fd < 0) return null;
  try {
    const c = loadNative().peerCredentials(fd);
    return Number.isInteger(c.uid) && Number.isInteger(c.pid) && c.pid > 0 ? { uid: c.uid, pid: c.pid } : null;
  } catch {
    return null;
  }
}

/**
 * Who is at the other end, in words: the verified uid and pid when the kernel told them, with the
 * channel the client names (cli, web); a pid the client claims that differs is shown as a claim.
 */
export function who(peer: Peer | null, claim: { name: string; pid?: number } | undefined): string {
  const channel = claim ? ` ${claim.name}` : '';
  if (peer) return `local${channel} uid ${peer.uid} pid ${peer.pid}${claim?.pid !== undefined && claim.pid !== peer.pid ? ` (claims pid ${claim.pid})` : ''}`;
  return `local${channel}${claim?.pid !== undefined ? ` pid ${claim.pid} (claimed)` : ''}`;
}

export async function startControlServer(path: string, ops: ControlOperations, log: (line: string) => void = () => undefined): Promise<ControlServer> {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  if (existsSync(path)) {
    if (!lstatSync(path).isSocket()) throw new Error(`control socket ${path}: a file that is not a socket is in the way`);
    if (await answers(path)) throw new Error(`control socket ${path}: another supervisor answers there`);
    unlinkSync(path);
  }
  const sockets = new Set<Socket>();
  const server: Server = createServer((sock) => {
    if (sockets.size >= MAX_CONNECTIONS) { sock.destroy(); return; }
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => undefined);
    serve(sock, ops);
  });
  // The socket is made with no access for others (umask) and then set to 0600: no moment where others may connect.
  const old = process.umask(0o177);
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e) => reject(new Error(`control socket ${path}: ${errorMessage(e)}`)));
      server.listen(path, () => resolve());
    });
  } finally {
    process.umask(old);
  }
  chmodSync(path, 0o600);
  log(`control socket: ${path}`);
  return {
    path,
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      try { unlinkSync(path); } catch { /* already gone */ }
    },
  };
}

function serve(sock: Socket, ops: ControlOperations): void {
  // Fixed by the kernel at connect: read once.
  const peer = peerOf(sock);
  let buf = Buffer.alloc(0);
  let chain: Promise<void> = Promise.resolve();
  const reply = (r: ControlReply): void => { if (!sock.destroyed) sock.write(`${JSON.stringify(r)}\n`); };
  sock.on('data', (d: Buffer) => {
    buf = Buffer.concat([buf, d]);
    for (let nl = buf.indexOf(0x0a); nl >= 0; nl = buf.indexOf(0x0a)) {
      const line = buf.subarray(0, nl).toString('utf8');
      buf = buf.subarray(nl + 1);
      if (nl > MAX_REQUEST_BYTES) { reply({ ok: false, error: `request longer than ${MAX_REQUEST_BYTES} bytes` }); sock.end(); return; }
      if (line.trim() === '') continue;
      // Replies go out in the order of the requests.
      chain = chain.then(async () => {
        let r: ControlReply;
        try {
          const req = parseRequest(line);
          // Progress lines go out while this request runs: replies are in order, so they are its own.
          const progress = (p: ActionProgress): void => { if (!sock.destroyed) sock.write(`${JSON.stringify({ progress: p })}\n`); };
          r = { ok: true, result: await ops.handle(req, who(peer, req.client), peer, progress) };
        } catch (e) {
          r = { ok: false, error: errorMessage(e) };
        }
        reply(r);
      });
    }
    if (buf.length > MAX_REQUEST_BYTES) { reply({ ok: false, error: `request longer than ${MAX_REQUEST_BYTES} bytes` }); sock.end(); buf = Buffer.alloc(0); }
  });
}
