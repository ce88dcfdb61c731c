// The page's per-guest console: a detail page (views, trap state, findings with
// evidence, the ladder timeline, plots drawn by uPlot served from the package,
// no CDN) and operator actions. Reading follows the API's rule (a token when one
// is configured); acting always needs the token, even on loopback, plus the
// session's CSRF value in a header, and destructive actions a confirm step
// (the guest's name sent back as `confirm`).
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { parseRequest, type ControlRequest } from '../control/protocol.js';
import { errorMessage } from '../util/errors.js';
import type { WebDataSource } from './server.js';
import { GUEST_CSS, GUEST_HTML, GUEST_JS } from './guest-page.js';

export interface ConsoleBackend { handle(req: ControlRequest, who: string): Promise<unknown> }

/** Handles the console's routes; false for a path that is not one of them. */
export type ConsoleRoutes = (req: IncomingMessage, res: ServerResponse, u: URL) => boolean;

/** Actions that destroy guest state: the page asks for a confirm step first. */
export const DESTRUCTIVE_ACTIONS: readonly string[] = ['reboot-os', 'restart-vm', 'restore-image'];
const MAX_BODY_BYTES = 16 * 1024;
/** No exec from the page; the demo's attacks (lab guests only) are the one way in. */
const WEB_OPS = ['action', 'release', 'baseline-accept', 'pause', 'resume', 'demo-attack'];

const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
const digest = (s: string): Buffer => createHash('sha256').update(s).digest();

class Refused extends Error { constructor(readonly status: number, message: string) { super(message); } }

function send(res: ServerResponse, status: number, type: string, body: string | Buffer): void {
  res.writeHead(status, {
    'content-type': type, 'cache-control': 'no-store', 'x-content-type-options': 'nosniff',
    'referrer-policy': 'no-referrer', 'x-frame-options': 'DENY', 'content-security-policy': CSP,
  });
  res.end(body);
}

/** uPlot's browser build and stylesheet, read from the installed package once. */
function uplotFiles(): { js: Buffer; css: Buffer } {
  const require = createRequire(import.meta.url);
  const dir = require.resolve('uplot/package.json').replace(/package\.json$/, 'dist/');
  return { js: readFileSync(`${dir}uPlot.iife.min.js`), css: readFileSync(`${dir}uPlot.min.css`) };
}

export function consoleRoutes(o: { ops: ConsoleBackend; data: WebDataSource; token: string | null }): ConsoleRoutes {
  const tokenDigest = o.token !== null ? digest(o.token) : null;
  const csrf = randomBytes(24).toString('hex');
  const vendor = uplotFiles();
  const bearer = (req: IncomingMessage): boolean => {
    if (tokenDigest === null) return false;
    const m = /^Bearer (.+)$/.exec(req.headers.authorization ?? '');
    return m !== null && timingSafeEqual(digest(m[1] as string), tokenDigest);
  };
  const mayRead = (req: IncomingMessage): boolean => tokenDigest === null || bearer(req);
  const mayAct = (req: IncomingMessage): void => {
    if (tokenDigest === null) throw new Refused(403, 'operator actions on the page need a web token (report.web.tokenFile)');
    if (!bearer(req)) throw new Refused(401, 'operator actions need the access token (Authorization: Bearer <token>)');
    const c = req.headers['x-csrf-token'];
    if (typeof c !== 'string' || c.length !== csrf.length || !timingSafeEqual(Buffer.from(c), Buffer.from(csrf))) throw new Refused(403, 'missing or wrong CSRF value (x-csrf-token)');
  };

  const guestData = async (name: string): Promise<unknown> => {
    const view = (v: 'summary' | 'ps' | 'modules' | 'syscalls' | 'findings' | 'trap'): Promise<unknown> => o.ops.handle({ op: 'view', guest: name, view: v }, 'web');
    const [summary, ps, modules, syscalls, findings, trap] = await Promise.all([view('summary'), view('ps'), view('modules'), view('syscalls'), view('findings'), view('trap')]);
    const timeline = o.data.events({ guest: name, kinds: ['finding', 'ladder-step', 'action', 'operator-action'], limit: 200 });
    const scans = o.data.events({ guest: name, kinds: ['scan'], limit: 600 }).map((e) => e.kind === 'scan' ? [e.payload.startedAtMs, e.payload.durationMs, e.payload.findings] : null).filter((x) => x !== null).reverse();
    return { summary, ps, modules, syscalls, findings, trap, timeline, scans };
  };

  const act = async (req: IncomingMessage): Promise<unknown> => {
    mayAct(req);
    if (!/^application\/json\b/.test(req.headers['content-type'] ?? '')) throw new Refused(415, 'send the request as application/json');
    const chunks: Buffer[] = [];
    let n = 0;
    for await (const c of req as AsyncIterable<Buffer>) {
      n += c.length;
      if (n > MAX_BODY_BYTES) throw new Refused(413, `request body over ${MAX_BODY_BYTES} bytes`);
      chunks.push(c);
    }
    let body: unknown;
    try { body = JSON.parse(Buffer.concat(chunks).toString('utf8')); } catch { throw new Refused(400, 'request body is not JSON'); }
    if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new Refused(400, 'request body must be an object');
    const { confirm, ...rest } = body as Record<string, unknown>;
    if (!WEB_OPS.includes(String(rest.op))) throw new Refused(400, `op must be one of ${WEB_OPS.join(', ')}`);
    let r: ControlRequest;
    try { r = parseRequest(JSON.stringify({ ...rest, client: { name: 'web' } })); } catch (e) { throw new Refused(400, errorMessage(e)); }
    if (r.op === 'action' && DESTRUCTIVE_ACTIONS.includes(r.action) && confirm !== r.guest) {
      throw new Refused(409, `${r.action} destroys the guest's running state: confirm by sending the guest's name as "confirm"`);
    }
    return o.ops.handle(r, `web token from ${req.socket.remoteAddress ?? '?'}`);
  };

  return (req, res, u) => {
    const p = u.pathname;
    if (p === '/guest.html') { send(res, 200, 'text/html; charset=utf-8', GUEST_HTML); return true; }
    if (p === '/guest.js') { send(res, 200, 'text/javascript; charset=utf-8', GUEST_JS); return true; }
    if (p === '/guest.css') { send(res, 200, 'text/css; charset=utf-8', GUEST_CSS); return true; }
    if (p === '/vendor/uplot.js') { send(res, 200, 'text/javascript; charset=utf-8', vendor.js); return true; }
    if (p === '/vendor/uplot.css') { send(res, 200, 'text/css; charset=utf-8', vendor.css); return true; }
    if (!p.startsWith('/api/console/')) return false;
    const reply = (f: () => Promise<unknown>): void => {
      f().then(
        (v) => send(res, 200, 'application/json', JSON.stringify(v)),
        (e: unknown) => {
          const status = e instanceof Refused ? e.status : 400;
          if (status === 401) res.setHeader('www-authenticate', 'Bearer realm="introvisor"');
          send(res, status, 'application/json', JSON.stringify({ error: errorMessage(e) }));
        },
      );
    };
    if (p === '/api/console/guest' && req.method === 'GET') {
      reply(async () => {
        if (!mayRead(req)) throw new Refused(401, 'access token required (Authorization: Bearer <token>)');
        const name = u.searchParams.get('name') ?? '';
        if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(name)) throw new Refused(400, 'name must be a guest name');
        return guestData(name);
      });
    } else if (p === '/api/console/trap' && req.method === 'GET') {
      // Each guest's write-trap state with its reason, for the main page's refused-writes table.
      reply(async () => {
        if (!mayRead(req)) throw new Refused(401, 'access token required (Authorization: Bearer <token>)');
        const gs = await o.ops.handle({ op: 'guests' }, 'web') as { name: string; trap: { status: string; detail: string | null } }[];
        return gs.map((g) => ({ guest: g.name, status: g.trap.status, detail: g.trap.detail }));
      });
    } else if (p === '/api/console/session' && req.method === 'GET') {
      reply(async () => {
        if (tokenDigest === null) throw new Refused(403, 'operator actions on the page need a web token (report.web.tokenFile)');
        if (!bearer(req)) throw new Refused(401, 'access token required (Authorization: Bearer <token>)');
        return { csrf };
      });
    } else if (p === '/api/console/op' && req.method === 'POST') {
      reply(() => act(req));
    } else {
      send(res, 405, 'application/json', JSON.stringify({ error: `${req.method ?? '?'} ${p}: no such console route` }));
    }
    return true;
  };
}
