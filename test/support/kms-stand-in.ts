/**
 * A stand-in for AWS KMS, because KMS does not run here (there is no KMS
 * Local). A small HTTP server on 127.0.0.1 speaking KMS's AWS JSON 1.1
 * protocol (POST /, X-Amz-Target: TrentService.<Operation>, Content-Type
 * application/x-amz-json-1.1, blobs as base64) for the two operations the API
 * uses (functions/signing.ts kmsSigner), over ECC_NIST_P256 / SIGN_VERIFY keys
 * made in-process with node:crypto:
 *
 * - GetPublicKey: the DER SubjectPublicKeyInfo (base64), KeySpec, KeyUsage, SigningAlgorithms.
 * - Sign: MessageType RAW (1-4096 bytes, hashed here) or DIGEST (exactly the
 *   algorithm's digest length, 32 bytes for ECDSA_SHA_256: anything else is
 *   a ValidationException "Digest is invalid length for algorithm ECDSA_SHA_256.",
 *   as KMS answers); returns a DER ECDSA signature.
 * - Errors as KMS sends them: HTTP 400, body {"__type": "<Name>Exception", "message": ...};
 *   an unknown key is NotFoundException.
 *
 * Point an SDK at it with AWS_ENDPOINT_URL_KMS=<endpoint> (or `endpoint`).
 * SigV4 signatures are not verified; each call is recorded (target, KeyId,
 * MessageType, SigningAlgorithm, the region and access key from the
 * Authorization header's credential scope) so tests can assert what was called.
 */
import { createHash, generateKeyPairSync, randomBytes, randomUUID, verify, type KeyObject } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface KmsCall {
  target: string;
  keyId: string | undefined;
  messageType?: string;
  signingAlgorithm?: string;
  /** Message length in bytes (Sign). */
  messageBytes?: number;
  /** From the SigV4 credential scope, when the request was signed. */
  region?: string;
  service?: string;
  accessKeyId?: string;
}

export interface StandInKey {
  keyId: string;
  arn: string;
  alias?: string;
  publicKeyPem: string;
  publicKeyDer: Buffer;
}

export interface KmsStandIn {
  endpoint: string;
  region: string;
  account: string;
  calls: KmsCall[];
  createKey(opts?: { alias?: string }): StandInKey;
  close(): Promise<void>;
}

const SIGNING_ALGORITHMS = ['ECDSA_SHA_256'];
const MAX_RAW_MESSAGE = 4096;

class KmsError extends Error {
  constructor(
    readonly type: string,
    message: string,
    readonly status = 400,
  ) {
    super(message);
  }
}

interface Key extends StandInKey {
  privateKey: KeyObject;
}

export async function startKmsStandIn(opts: { region?: string; account?: string } = {}): Promise<KmsStandIn> {
  const region = opts.region ?? 'eu-west-1';
  const account = opts.account ?? '123456789012';
  const keys = new Map<string, Key>();
  const aliases = new Map<string, string>();
  const calls: KmsCall[] = [];

  const createKey: KmsStandIn['createKey'] = (o = {}) => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const keyId = randomUUID();
    const publicKeyDer = publicKey.export({ type: 'spki', format: 'der' });
    const key: Key = {
      keyId,
      arn: `arn:aws:kms:${region}:${account}:key/${keyId}`,
      publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
      publicKeyDer,
      privateKey,
      ...(o.alias ? { alias: o.alias } : {}),
    };
    // The hand-written ECDSA below must agree with OpenSSL: check it on each new key.
    const probe = Buffer.from(`probe ${keyId}`);
    if (!verify('sha256', probe, { key: publicKey, dsaEncoding: 'der' }, ecdsaSignDigest(privateKey, createHash('sha256').update(probe).digest())))
      throw new Error('KMS stand-in: ECDSA over a digest does not verify');
    keys.set(keyId, key);
    if (o.alias) aliases.set(o.alias.startsWith('alias/') ? o.alias : `alias/${o.alias}`, keyId);
    const { privateKey: _hidden, ...visible } = key;
    return visible;
  };

  /** Key id, key ARN, alias name or alias ARN (KMS accepts all four for these operations). */
  const resolve = (ref: unknown): Key => {
    if (typeof ref !== 'string' || ref.length === 0) throw new KmsError('ValidationException', "1 validation error detected: Value null at 'keyId' failed to satisfy constraint: Member must not be null");
    let id = ref;
    const arn = /^arn:aws:kms:([^:]+):(\d{12}):(key|alias)\/(.+)$/.exec(ref);
    if (arn) {
      if (arn[1] !== region || arn[2] !== account) throw new KmsError('NotFoundException', `Key '${ref}' does not exist`);
      id = arn[3] === 'alias' ? `alias/${arn[4]}` : arn[4]!;
    }
    if (id.startsWith('alias/')) {
      const target = aliases.get(id);
      if (!target) throw new KmsError('NotFoundException', `Alias arn:aws:kms:${region}:${account}:${id} is not found.`);
      id = target;
    }
    const key = keys.get(id);
    if (!key) throw new KmsError('NotFoundException', `Key 'arn:aws:kms:${region}:${account}:key/${id}' does not exist`);
    return key;
  };

  const blob = (v: unknown, field: string): Buffer => {
    if (typeof v !== 'string') throw new KmsError('ValidationException', `1 validation error detected: Value null at '${field}' failed to satisfy constraint: Member must not be null`);
    return Buffer.from(v, 'base64');
  };

  const operations: Record<string, (input: Record<string, unknown>, call: KmsCall) => Record<string, unknown>> = {
    GetPublicKey(input) {
      const key = resolve(input.KeyId);
      return {
        KeyId: key.arn,
        PublicKey: key.publicKeyDer.toString('base64'),
        CustomerMasterKeySpec: 'ECC_NIST_P256',
        KeySpec: 'ECC_NIST_P256',
        KeyUsage: 'SIGN_VERIFY',
        SigningAlgorithms: SIGNING_ALGORITHMS,
      };
    },
    Sign(input, call) {
      const key = resolve(input.KeyId);
      const message = blob(input.Message, 'message');
      const messageType = (input.MessageType as string | undefined) ?? 'RAW';
      const algorithm = input.SigningAlgorithm;
      call.messageType = messageType;
      call.signingAlgorithm = algorithm as string | undefined;
      call.messageBytes = message.length;
      if (typeof algorithm !== 'string') throw new KmsError('ValidationException', "1 validation error detected: Value null at 'signingAlgorithm' failed to satisfy constraint: Member must not be null");
      if (!SIGNING_ALGORITHMS.includes(algorithm)) throw new KmsError('InvalidKeyUsageException', `Algorithm ${algorithm} is incompatible with key spec ECC_NIST_P256.`);
      let digest: Buffer;
      if (messageType === 'RAW') {
        if (message.length < 1 || message.length > MAX_RAW_MESSAGE)
          throw new KmsError('ValidationException', `1 validation error detected: Value at 'message' failed to satisfy constraint: Member must have length ${message.length < 1 ? 'greater than or equal to 1' : `less than or equal to ${MAX_RAW_MESSAGE}`}`);
        digest = createHash('sha256').update(message).digest();
      } else if (messageType === 'DIGEST') {
        if (message.length !== 32) throw new KmsError('ValidationException', `Digest is invalid length for algorithm ${algorithm}.`);
        digest = message;
      } else {
        throw new KmsError('ValidationException', `1 validation error detected: Value '${messageType}' at 'messageType' failed to satisfy constraint: Member must satisfy enum value set: [RAW, DIGEST, EXTERNAL_MU]`);
      }
      const signature = ecdsaSignDigest(key.privateKey, digest);
      return { KeyId: key.arn, Signature: signature.toString('base64'), SigningAlgorithm: algorithm };
    },
  };

  const send = (res: ServerResponse, status: number, body: unknown) => {
    const json = JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/x-amz-json-1.1', 'content-length': Buffer.byteLength(json), 'x-amzn-requestid': randomUUID() });
    res.end(json);
  };

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    try {
      const target = String(req.headers['x-amz-target'] ?? '');
      const op = /^TrentService\.(\w+)$/.exec(target)?.[1];
      if (req.method !== 'POST' || !op) throw new KmsError('UnknownOperationException', `no operation for ${req.method} with X-Amz-Target "${target}"`);
      let input: Record<string, unknown>;
      try {
        input = chunks.length ? JSON.parse(Buffer.concat(chunks).toString('utf8')) : {};
      } catch {
        throw new KmsError('SerializationException', 'request body is not JSON');
      }
      const scope = /Credential=([^/]+)\/\d{8}\/([^/]+)\/([^/]+)\/aws4_request/.exec(String(req.headers.authorization ?? ''));
      const call: KmsCall = { target, keyId: input.KeyId as string | undefined, ...(scope ? { accessKeyId: scope[1], region: scope[2], service: scope[3] } : {}) };
      calls.push(call);
      const fn = operations[op];
      if (!fn) throw new KmsError('UnknownOperationException', `the KMS stand-in does not implement ${op}`);
      send(res, 200, fn(input, call));
    } catch (e) {
      if (e instanceof KmsError) send(res, e.status, { __type: e.type, message: e.message });
      else send(res, 500, { __type: 'KMSInternalException', message: String((e as Error)?.message ?? e) });
    }
  };

  const server = createServer((req, res) => void handle(req, res));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    region,
    account,
    calls,
    createKey,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.closeAllConnections();
        server.close((err) => (err ? reject(err) : resolve()));
      }),
  };
}

// ------------------------------------------------------------------ ECDSA P-256 over a given digest
// node:crypto always hashes what it signs (sign(null, ...) on an EC key hashes with SHA-256 too), and KMS
// DIGEST mode signs the 32 bytes it is given: so the signature itself is computed here (FIPS 186-4 6.4,
// random k), with BigInt arithmetic on the NIST P-256 curve. Slow next to OpenSSL (milliseconds), fine here.

const P = 0xffffffff00000001000000000000000000000000ffffffffffffffffffffffffn;
const N = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n;
const G: Point = [0x6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296n, 0x4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5n];
type Point = [bigint, bigint] | null;

const mod = (a: bigint, m: bigint) => ((a % m) + m) % m;
function inv(a: bigint, m: bigint): bigint {
  let [r0, r1, s0, s1] = [mod(a, m), m, 1n, 0n];
  while (r1 !== 0n) {
    const q = r0 / r1;
    [r0, r1] = [r1, r0 - q * r1];
    [s0, s1] = [s1, s0 - q * s1];
  }
  return mod(s0, m);
}
function add(p1: Point, p2: Point): Point {
  if (!p1) return p2;
  if (!p2) return p1;
  const [x1, y1] = p1;
  const [x2, y2] = p2;
  if (x1 === x2 && mod(y1 + y2, P) === 0n) return null;
  const l = x1 === x2 ? mod((3n * x1 * x1 - 3n) * inv(2n * y1, P), P) : mod((y2 - y1) * inv(x2 - x1, P), P);
  const x3 = mod(l * l - x1 - x2, P);
  return [x3, mod(l * (x1 - x3) - y1, P)];
}
function multiply(k: bigint, pt: Point): Point {
  let result: Point = null;
  for (let addend = pt; k > 0n; k >>= 1n, addend = add(addend, addend)) if (k & 1n) result = add(result, addend);
  return result;
}
const toInt = (b: Buffer) => BigInt(`0x${b.toString('hex') || '0'}`);
function derInteger(v: bigint): Buffer {
  let hex = v.toString(16);
  if (hex.length % 2) hex = `0${hex}`;
  let bytes = Buffer.from(hex, 'hex');
  if (bytes[0]! & 0x80) bytes = Buffer.concat([Buffer.from([0]), bytes]);
  return Buffer.concat([Buffer.from([0x02, bytes.length]), bytes]);
}

/** DER ECDSA signature over a 32-byte digest with a P-256 private key (what KMS Sign returns for DIGEST). */
export function ecdsaSignDigest(privateKey: KeyObject, digest: Buffer): Buffer {
  const d = toInt(Buffer.from(privateKey.export({ format: 'jwk' }).d!, 'base64url'));
  const z = toInt(digest.subarray(0, 32));
  for (;;) {
    const k = mod(toInt(randomBytes(40)), N - 1n) + 1n;
    const r = mod(multiply(k, G)![0], N);
    if (r === 0n) continue;
    const s = mod(inv(k, N) * (z + r * d), N);
    if (s === 0n) continue;
    const body = Buffer.concat([derInteger(r), derInteger(s)]);
    return Buffer.concat([Buffer.from([0x30, body.length]), body]);
  }
}
