// The device's keyring: the ed25519 public keys whose signatures it accepts
// on policy bundles. A key is named by its id: the first 32 hex digits of
// sha256 over its SubjectPublicKeyInfo (DER), so a bundle can say which key
// signed it without carrying the key.
import { createHash, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

export interface TrustedKey { readonly keyId: string; readonly name: string; readonly key: KeyObject }

export function keyIdOf(publicKey: KeyObject): string {
  return createHash('sha256').update(publicKey.export({ type: 'spki', format: 'der' })).digest('hex').slice(0, 32);
}

export function publicKeyFromPem(pem: string | Buffer, where: string): KeyObject {
  let key: KeyObject;
  try {
    key = createPublicKey(pem);
  } catch (e) {
    throw new Error(`${where}: not a public key: ${(e as Error).message}`);
  }
  if (key.asymmetricKeyType !== 'ed25519') throw new Error(`${where}: an ${String(key.asymmetricKeyType)} key; the keyring holds ed25519 keys only`);
  return key;
}

export class Keyring {
  private readonly keys = new Map<string, TrustedKey>();

  static empty(): Keyring { return new Keyring(); }

  /** Every *.pub (SPKI PEM) in dir; an unreadable or non-ed25519 file is an error naming it. */
  static loadDir(dir: string): Keyring {
    const ring = new Keyring();
    let names: string[];
    try {
      names = readdirSync(dir).filter((n) => n.endsWith('.pub')).sort();
    } catch (e) {
      throw new Error(`keyring ${dir}: ${(e as Error).message}`);
    }
    for (const n of names) ring.add(n.slice(0, -4), publicKeyFromPem(readFileSync(join(dir, n)), join(dir, n)));
    return ring;
  }

  add(name: string, key: KeyObject): TrustedKey {
    if (key.asymmetricKeyType !== 'ed25519' || key.type !== 'public') throw new Error(`keyring: "${name}" is not an ed25519 public key`);
    const k = { keyId: keyIdOf(key), name, key };
    this.keys.set(k.keyId, k);
    return k;
  }

  get(keyId: string): TrustedKey | undefined { return this.keys.get(keyId); }
  get size(): number { return this.keys.size; }
  list(): TrustedKey[] { return [...this.keys.values()]; }
}

/** A fresh signing key pair, as PEM (private: PKCS#8, public: SPKI). */
export function generateSigningKey(): { privatePem: string; publicPem: string; keyId: string } {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return {
    privatePem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    publicPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
    keyId: keyIdOf(publicKey),
  };
}
