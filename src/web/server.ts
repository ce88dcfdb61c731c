// The operator's local page and its JSON API (plain node:http). Everything
// shown comes from the event store. Off loopback an access token is required;
// with a token configured it is required everywhere. Guest-controlled strings
// (process names, module names) reach the page only as JSON and are put in
// the DOM as text, never as HTML.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createHash, timingSafeEqual } from 'node:crypto';
import { isIP } from 'node:net';
import type { AddressInfo } from 'node:net';
import { EVENT_KINDS, type EventKind, type RecordedEvent } from '../events/types.js';
import type { EventQuery, OutboxStats } from '../store/event-store.js';
import { PAGE_HTML, PAGE_JS, PAGE_CSS } from './page.js';
import { errorMessage, InputError } from '../util/errors.js';
import { parseSince } from '../util/time.js';
import type { ConsoleRoutes } from './console.js';

/** What the web server reads; EventStore provides all of it. */
export interface WebDataSource {
  readonly deviceId: string;
  guests(): unknown[];
  openFindings(guest?: string): unknown[];
  ladders(guest?: string): unknown[];
  refusedWrites(q: { guest?: string; limit?: number }): unknown[];
  events(q: EventQuery): RecordedEvent[];
  outboxStats(): OutboxStats;
}

export interface WebServerOptions {
  readonly host: string;
  readonly port: number;
  /** Required unless host is a loopback address. */
  readonly token?: string;
  readonly data: WebDataSource;
  /** Extra status shown on the page (policy version, telemetry connection, ...). */
  readonly status?: () => Record<string, unknown>;
  /**
   * Names this server answers to in the Host: header besides loopback names, IP addresses and
   * `host` itself (e.g. the appliance's DNS name). Any other name is refused (421): a page on
   * another site cannot reach the API by pointing its own name at this address (DNS rebinding).
   */
  readonly allowedHosts?: readonly string[];
  /** Open connections at once, all clients (default 256) and from one address (default 32). */
  readonly maxConnections?: number;
  readonly maxConnectionsPerIp?: number;
  /** A client must send its request headers within this (default 10 s); idle keep-alive ends after 5 s. */
  readonly headersTimeoutMs?: number;
  /** The per-guest console (./console.ts): its own routes, auth and CSRF rules. */
  readonly console?: ConsoleRoutes;
}

export const WEB_MAX_CONNECTIONS = 256;
export const WEB_MAX_CONNECTIONS_PER_IP = 32;

/** The host name of a Host header value ("name:port", "[v6]:port"), lower case; null when malformed. */
export function hostHeaderName(value: string): string | null {
  const v = value.trim().toLowerCase();
  const m = /^(\[[0-9a-f:.]+\]|[a-z0-9._-]+)(?::(\d{1,5}))?$/.exec(v);
  if (!m) return null;
  const name = m[1] as string;
  return name.startsWith('[') ? name.slice(1, -1) : name.replace(/\.$/, '');
}

export interface WebServer {
  readonly url: string;
  /** Connections open now (what the caps bound). */
  connections(): Promise<number>;
  close(): Promise<void>;
}

export function isLoopback(host: string): boolean {
  if (host === 'localhost') return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  if (isIP(host) === 6) return host === '::1' || host === '0:0:0:0:0:0:0:1';
  return false;
}

const digest = (s: string): Buffer => createHash('sha256').update(s).digest();

class HttpError extends Error {
  constructor(readonly status: number, message: string) { super(message); }
}

const guestPattern = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

function queryInt(u: URL, name: string, dflt: number, min: number, max: number): number {
  const v = u.searchParams.get(name);
  if (v === null) return dflt;
  const n = Number(v);
  if (!/^\d+$/.test(v) || n < min || n > max) throw new HttpError(400, `${name} must be a whole number from ${min} to ${max}`);
  return n;
}

function queryGuest(u: URL): string | undefined {
  const g = u.searchParams.get('guest');
  if (g === null || g === '') return undefined;
  if (!guestPattern.test(g)) throw new HttpError(400, 'guest must be 1-64 of [A-Za-z0-9._-]');
  return g;
}

export function startWebServer(opts: WebServerOptions): Promise<WebServer> {
  const loopback = isLoopback(opts.host);
  const names = new Set(['localhost', opts.host.toLowerCase(), ...(opts.allowedHosts ?? []).map((h) => h.toLowerCase().replace(/\.$/, ''))]);
  // IP literals cannot be rebound; a name must be one this server was configured with.
  const hostAllowed = (name: string): boolean => isIP(name) !== 0 || names.has(name) || name.endsWith('.localhost');
  if (!loopback && (opts.token === undefined || opts.token.length < 16)) {
    return Promise.reject(new Error(`web: listening on ${opts.host} (not loopback) needs an access token of at least 16 characters`));
  }
  const tokenDigest = opts.token !== undefined ? digest(opts.token) : null;
  const authorized = (req: IncomingMessage): boolean => {
    if (tokenDigest === null) return true;
    const h = req.headers.authorization ?? '';
    const m = /^Bearer (.+)$/.exec(h);
    return m !== null && timingSafeEqual(digest(m[1] as string), tokenDigest);
  };

  const api = (u: URL): unknown => {
    const d = opts.data;
    switch (u.pathname) {
      case '/api/status':
        return { device: d.deviceId, now: Date.now(), outbox: d.outboxStats(), console: opts.console !== undefined, ...(opts.status?.() ?? {}) };
      case '/api/guests':
        return d.guests();
      case '/api/findings':
        return d.openFindings(queryGuest(u));
      case '/api/ladders':
        return d.ladders(queryGuest(u));
      case '/api/actions':
        return d.events({ kinds: ['action'], limit: queryInt(u, 'limit', 100, 1, 1000), ...guestOpt(queryGuest(u)) });
      case '/api/refused-writes':
        return d.refusedWrites({ limit: queryInt(u, 'limit', 200, 1, 1000), ...guestOpt(queryGuest(u)) });
      case '/api/events': {
        const kinds = u.searchParams.getAll('kind');
        for (const k of kinds) if (!(EVENT_KINDS as readonly string[]).includes(k)) throw new HttpError(400, `kind "${k.slice(0, 40)}" is not one of ${EVENT_KINDS.join(', ')}`);
        const since = u.searchParams.get('since');
        return d.events({
          limit: queryInt(u, 'limit', 100, 1, 1000), kinds: kinds as EventKind[],
          ...guestOpt(queryGuest(u)), ...(since !== null ? { sinceMs: parseSince(since) } : {}),
        });
      }
      default:
        throw new HttpError(404, `no API ${u.pathname}`);
    }
  };

  const send = (res: ServerResponse, status: number, type: string, body: string): void => {
    res.writeHead(status, {
      'content-type': type,
      'cache-control': 'no-store',
      'x-content-type-options': 'nosniff',
      'referrer-policy': 'no-referrer',
      'x-frame-options': 'DENY',
      'content-security-policy': "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    });
    res.end(body);
  };

  const headersTimeoutMs = opts.headersTimeoutMs ?? 10_000;
  // Node checks header/request timeouts every connectionsCheckingInterval (30 s by default).
  const server: Server = createServer({ connectionsCheckingInterval: Math.min(1_000, headersTimeoutMs), headersTimeout: headersTimeoutMs, requestTimeout: headersTimeoutMs + 5_000 }, (req, res) => {
    try {
      const host = req.headers.host;
      if (host === undefined || host === '') throw new HttpError(400, 'a Host header is required');
      const name = hostHeaderName(host);
      if (name === null) throw new HttpError(400, 'malformed Host header');
      if (!hostAllowed(name)) throw new HttpError(421, `this server does not answer to the name "${name.slice(0, 80)}"`);
      const u = new URL(req.url ?? '/', 'http://local');
      if (opts.console?.(req, res, u)) return;
      if (req.method !== 'GET' && req.method !== 'HEAD') throw new HttpError(405, 'read-only: GET only');
      if (u.pathname === '/' || u.pathname === '/index.html') return send(res, 200, 'text/html; charset=utf-8', PAGE_HTML);
      if (u.pathname === '/app.js') return send(res, 200, 'text/javascript; charset=utf-8', PAGE_JS);
      if (u.pathname === '/app.css') return send(res, 200, 'text/css; charset=utf-8', PAGE_CSS);
      if (u.pathname === '/favicon.ico') { res.writeHead(204, { 'cache-control': 'max-age=86400' }); res.end(); return; }
      if (!u.pathname.startsWith('/api/')) throw new HttpError(404, 'not found');
      if (!authorized(req)) {
        res.setHeader('www-authenticate', 'Bearer realm="introvisor"');
        throw new HttpError(401, 'access token required (Authorization: Bearer <token>)');
      }
      return send(res, 200, 'application/json', JSON.stringify(api(u)));
    } catch (e) {
      const status = e instanceof HttpError ? e.status : e instanceof InputError ? 400 : 500;
      return send(res, status, 'application/json', JSON.stringify({ error: status === 500 ? `internal error: ${errorMessage(e)}` : errorMessage(e) }));
    }
  });
  server.keepAliveTimeout = 5_000;
  server.maxConnections = opts.maxConnections ?? WEB_MAX_CONNECTIONS;
  // Per address: one client cannot take every connection (or the process's file descriptors).
  const perIp = new Map<string, number>();
  const maxPerIp = opts.maxConnectionsPerIp ?? WEB_MAX_CONNECTIONS_PER_IP;
  server.on('connection', (sock) => {
    const ip = sock.remoteAddress ?? '?';
    const n = (perIp.get(ip) ?? 0) + 1;
    if (n > maxPerIp) {
      sock.destroy();
      return;
    }
    perIp.set(ip, n);
    sock.once('close', () => {
      const left = (perIp.get(ip) ?? 1) - 1;
      if (left <= 0) perIp.delete(ip);
      else perIp.set(ip, left);
    });
  });

  return new Promise((resolve, reject) => {
    server.once('error', (e) => reject(new Error(`web: cannot listen on ${opts.host}:${opts.port}: ${e.message}`)));
    server.listen(opts.port, opts.host, () => {
      const a = server.address() as AddressInfo;
      const host = a.family === 'IPv6' ? `[${a.address}]` : a.address;
      resolve({
        url: `http://${host}:${a.port}/`,
        connections: () => new Promise<number>((res, rej) => server.getConnections((e, n) => (e ? rej(e) : res(n)))),
        close: () => new Promise<void>((res) => { server.closeAllConnections(); server.close(() => res()); }),
      });
    });
  });
}

const guestOpt = (g: string | undefined): { guest?: string } => (g === undefined ? {} : { guest: g });
