/**
 * The control plane's signing key, used for vDisk manifests (and later config
 * snapshots). Locally a P-256 key file; in AWS a KMS asymmetric key (issue 8)
 * behind the same interface.
 */
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, sign } from 'node:crypto';
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { keyIdOf, type SigningKey } from '../model/manifest.js';

export interface Signer extends SigningKey {
  /** DER-encoded ECDSA P-256 / SHA-256 signature over data. */
  sign(data: Buffer): Promise<Buffer>;
}

export function pemSigner(privateKeyPem: string): Signer {
  const key = createPrivateKey(privateKeyPem);
  if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'prime256v1') throw new Error('signing key must be an EC P-256 private key');
  const publicKeyPem = createPublicKey(key).export({ type: 'spki', format: 'pem' }).toString();
  return {
    keyId: keyIdOf(publicKeyPem),
    publicKeyPem,
    sign: async (data) => sign('sha256', data, { key, dsaEncoding: 'der' }),
  };
}

/** Loads the key file, creating a new P-256 key (mode 0600) when there is none. */
export async function fileSigner(path: string): Promise<Signer> {
  let pem: string;
  try {
    pem = await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    pem = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    await mkdir(dirname(path), { recursive: true, mode: 0o700 });
    await writeFile(path, pem, { mode: 0o600, flag: 'wx' });
    await chmod(path, 0o600);
  }
  return pemSigner(pem);
}

/** An AWS KMS asymmetric key (ECC_NIST_P256, SIGN_VERIFY): the private key never leaves KMS. */
export async function kmsSigner(keyId: string, region: string): Promise<Signer> {
  const { KMSClient, GetPublicKeyCommand, SignCommand } = await import('@aws-sdk/client-kms');
  const kms = new KMSClient({ region });
  const pub = await kms.send(new GetPublicKeyCommand({ KeyId: keyId }));
  if (pub.KeySpec !== 'ECC_NIST_P256') throw new Error(`KMS key ${keyId} is ${pub.KeySpec}; bootfarm signs with ECC_NIST_P256`);
  const publicKeyPem = createPublicKey({ key: Buffer.from(pub.PublicKey!), format: 'der', type: 'spki' }).export({ type: 'spki', format: 'pem' }).toString();
  return {
    keyId: keyIdOf(publicKeyPem),
    publicKeyPem,
    async sign(data) {
      // KMS takes at most 4 KiB as a RAW message; a manifest is larger, so send its SHA-256 (the same signature).
      const digest = createHash('sha256').update(data).digest();
      const r = await kms.send(new SignCommand({ KeyId: keyId, Message: digest, MessageType: 'DIGEST', SigningAlgorithm: 'ECDSA_SHA_256' }));
      return Buffer.from(r.Signature!);
    },
  };
}
