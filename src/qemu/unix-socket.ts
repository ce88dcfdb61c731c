import { connect, type Socket } from 'node:net';
import { NotReachableError } from '../util/errors.js';
import { withTimeout } from '../util/deadline.js';

/** Connects to a unix socket, turning the usual failures into one clear error. */
export async function connectUnix(path: string, what: string, timeoutMs: number): Promise<Socket> {
  const sock = connect({ path });
  const connected = new Promise<Socket>((resolve, reject) => {
    sock.once('connect', () => resolve(sock));
    sock.once('error', (err: NodeJS.ErrnoException) => {
      const why =
        err.code === 'ENOENT' ? 'socket does not exist (is the guest running?)'
        : err.code === 'ECONNREFUSED' ? 'nothing is listening (is the guest running?)'
        : err.message;
      reject(new NotReachableError(`${what} at ${path}: ${why}`));
    });
  });
  return withTimeout(connected, timeoutMs, `${what}: connect to ${path}`, () => sock.destroy());
}
