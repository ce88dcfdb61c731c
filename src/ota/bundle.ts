// Policy bundles (docs/OTA.md): a policy document, its version and target,
// signed with ed25519. The signature covers the exact bytes of the "signed"
// field (base64 of UTF-8 JSON), prefixed with a domain tag, so nothing needs
// canonical JSON and a signature made for something else never verifies here.
import { createHash, createPrivateKey, createPublicKey, sign, verify, type KeyObject } from 'node:crypto';
import { Ajv } from 'ajv';
import { formatAjvErrors } from '../events/schemas.js';
import type { PolicyValidator } from '../events/sink.js';
import { keyIdOf, type Keyring } from './keyring.js';

export const BUNDLE_FORMAT = 'introvisor-policy-bundle/1';
const SIGNING_DOMAIN = Buffer.from(`${BUNDLE_FORMAT}\n`);
export const DEFAULT_MAX_BUNDLE_BYTES = 256 * 1024;

export type BundleTarget = { readonly device: string } | { readonly group: string };

/** What the signature covers. */
export interface SignedContent {
  readonly version: number;
  readonly target: BundleTarget;
  readonly issuedAtMs: number;
  readonly policy: unknown;
}

/** The bundle as sent over MQTT. */
export interface BundleEnvelope {
  readonly format: typeof BUNDLE_FORMAT;
  readonly keyId: string;
  readonly signed: string;
  readonly signature: string;
}

const id = { type: 'string', minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9][A-Za-z0-9._-]*$' };
export const envelopeSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['format', 'keyId', 'signed', 'signature'],
  properties: {
    format: { const: BUNDLE_FORMAT },
    keyId: { type: 'string', pattern: '^[0-9a-f]{32}$' },
    signed: { type: 'string', minLength: 4, pattern: '^[A-Za-z0-9+/]*={0,2}$' },
    // 64 bytes of ed25519 signature = 88 base64 characters.
    signature: { type: 'string', pattern: '^[A-Za-z0-9+/]{86}==$' },
  },
} as const;
export const signedContentSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['version', 'target', 'issuedAtMs', 'policy'],
  properties: {
    version: { type: 'integer', minimum: 1, maximum: Number.MAX_SAFE_INTEGER },
    target: {
      oneOf: [
        { type: 'object', additionalProperties: false, required: ['device'], properties: { device: id } },
        { type: 'object', additionalProperties: false, required: ['group'], properties: { group: id } },
      ],
    },
    issuedAtMs: { type: 'integer', minimum: 0 },
    policy: { type: 'object' },
  },
} as const;

const ajv = new Ajv({ allErrors: true, strict: true });
const checkEnvelope = ajv.compile<BundleEnvelope>(envelopeSchema);
const checkSigned = ajv.compile<SignedContent>(signedContentSchema);

export function createBundle(content: SignedContent, privateKey: KeyObject | string): BundleEnvelope {
  const key = typeof privateKey === 'string' ? createPrivateKey(privateKey) : privateKey;
  if (key.asymmetricKeyType !== 'ed25519') throw new Error(`bundle: signing key is ${String(key.asymmetricKeyType)}, not ed25519`);
  const signed = Buffer.from(JSON.stringify(content), 'utf8').toString('base64');
  return signEnvelope(signed, key);
}

/** Signs already-encoded content (tests use it to sign content the device must still refuse). */
export function signEnvelope(signedB64: string, key: KeyObject): BundleEnvelope {
  const signature = sign(null, Buffer.concat([SIGNING_DOMAIN, Buffer.from(signedB64, 'ascii')]), key).toString('base64');
  return { format: BUNDLE_FORMAT, keyId: keyIdOf(createPublicKey(key)), signed: signedB64, signature };
}

export type RejectCode =
  | 'oversize' | 'not-json' | 'bad-envelope' | 'unknown-key' | 'bad-signature' | 'bad-content'
  | 'wrong-target' | 'not-newer' | 'policy-invalid' | 'load-failed';

export interface VerifyContext<P> {
  readonly keyring: Keyring;
  readonly deviceId: string;
  readonly groups: readonly string[];
  /** The running bundle version; a bundle must be strictly newer. */
  readonly currentVersion: number | null;
  readonly maxBytes: number;
  readonly validatePolicy: PolicyValidator<P>;
}

export interface VerifiedBundle<P> {
  readonly version: number;
  readonly target: BundleTarget;
  readonly issuedAtMs: number;
  readonly keyId: string;
  readonly document: unknown;
  readonly policy: P;
  /** sha256 hex of the signature: identifies this exact bundle (a re-delivery of the running one is not an update). */
  readonly digest: string;
}

export type VerifyResult<P> =
  | { readonly ok: true; readonly bundle: VerifiedBundle<P> }
  | { readonly ok: false; readonly code: RejectCode; readonly reason: string; readonly version: number | null; readonly keyId: string | null; readonly digest: string | null };

/**
 * Checks a received bundle, cheapest and least trusting first: size, JSON,
 * envelope shape, key, signature; only then is the signed content read:
 * its shape, target, version, and the policy document against the watchdog's schema.
 */
export function verifyBundle<P>(raw: Buffer, ctx: VerifyContext<P>): VerifyResult<P> {
  const reject = (code: RejectCode, reason: string, version: number | null = null, keyId: string | null = null, digest: string | null = null): VerifyResult<P> =>
    ({ ok: false, code, reason, version, keyId, digest });
  if (raw.length > ctx.maxBytes) return reject('oversize', `bundle is ${raw.length} bytes; the limit is ${ctx.maxBytes}`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw.toString('utf8'));
  } catch (e) {
    return reject('not-json', `bundle is not JSON: ${(e as Error).message}`);
  }
  if (!checkEnvelope(parsed)) return reject('bad-envelope', `bundle envelope: ${formatAjvErrors(checkEnvelope.errors)}`);
  const env = parsed;
  const digest = createHash('sha256').update(env.signature).digest('hex');
  const key = ctx.keyring.get(env.keyId);
  if (!key) return reject('unknown-key', `key ${env.keyId} is not in the device keyring`, null, env.keyId, digest);
  const sig = Buffer.from(env.signature, 'base64');
  const ok = sig.length === 64 && verify(null, Buffer.concat([SIGNING_DOMAIN, Buffer.from(env.signed, 'ascii')]), key.key, sig);
  if (!ok) return reject('bad-signature', `signature does not verify with key ${env.keyId} (${key.name})`, null, env.keyId, digest);
  let content: unknown;
  try {
    content = JSON.parse(Buffer.from(env.signed, 'base64').toString('utf8'));
  } catch (e) {
    return reject('bad-content', `signed content is not JSON: ${(e as Error).message}`, null, env.keyId, digest);
  }
  if (!checkSigned(content)) return reject('bad-content', `signed content: ${formatAjvErrors(checkSigned.errors)}`, null, env.keyId, digest);
  const c = content;
  const forMe = 'device' in c.target ? c.target.device === ctx.deviceId : ctx.groups.includes(c.target.group);
  if (!forMe) {
    const what = 'device' in c.target ? `device ${c.target.device}` : `group ${c.target.group}`;
    return reject('wrong-target', `bundle is for ${what}, not device ${ctx.deviceId}${ctx.groups.length ? ` (groups ${ctx.groups.join(', ')})` : ''}`, c.version, env.keyId, digest);
  }
  if (ctx.currentVersion !== null && c.version <= ctx.currentVersion) {
    return reject('not-newer', `bundle version ${c.version} is not newer than the running version ${ctx.currentVersion}`, c.version, env.keyId, digest);
  }
  const v = ctx.validatePolicy(c.policy);
  if (!v.ok) return reject('policy-invalid', `policy document: ${v.errors.slice(0, 8).join('; ')}`, c.version, env.keyId, digest);
  return { ok: true, bundle: { version: c.version, target: c.target, issuedAtMs: c.issuedAtMs, keyId: env.keyId, document: c.policy, policy: v.policy, digest } };
}
