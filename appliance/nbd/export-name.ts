/**
 * NBD export names: capabilities a boot script hands a target.
 *
 *   bf1.<mac>.<vdiskId>.<version>.<mode>.<bootId>.<address>.<sig>
 *   bf1.525400123456.vd_abcdefghijklmnop.3.t.0193a5b2c3d4e5f60718.c000020a.Zk3v...
 *
 * NBD has no authentication, so the name is the credential: it names the
 * target, the vDisk version it booted (pinned: a version promoted later does
 * not change the disk under a running OS), how its writes are kept (mode
 * letter, see model/write-cache.ts) and the boot it belongs to, and is signed
 * with a key derived from the site's peer secret. Any appliance of the site
 * can check it (failover), nobody without the secret can make one, and a
 * name cannot be edited into another target's disk.
 *
 * It also carries the address that asked for the boot script (hex; `0` when
 * unknown): a writable export is opened only from that address, so a name
 * seen on the wire is not enough to write into a running target's disk.
 *
 * The boot id starts with the boot's time (ms, 12 hex digits) so an appliance
 * that never saw either boot can still tell the newer one (temporary write
 * caches are thrown away when the target boots again).
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { isIPv4, isIPv6 } from 'node:net';
import { normalizeMac, type StreamMode } from '../../model/index.js';

export interface ExportClaim {
  /** aa:bb:cc:dd:ee:ff */
  mac: string;
  vdiskId: string;
  version: number;
  mode: StreamMode;
  bootId: string;
  /** The target's address when it asked for the boot script; null when unknown. */
  address: string | null;
}

const LETTER: Record<StreamMode, string> = { 'read-only': 'r', 'appliance-temporary': 't', 'appliance-persistent': 'p', image: 'x' };
const MODE_OF = Object.fromEntries(Object.entries(LETTER).map(([m, l]) => [l, m as StreamMode]));
const NAME = /^bf1\.([0-9a-f]{12})\.([a-z]{2,4}_[a-z2-7]{16})\.(\d{1,6})\.([rtpx])\.([0-9a-f]{20})\.(0|[0-9a-f]{8}|[0-9a-f]{32})\.([A-Za-z0-9_-]{22})$/;

/** An address as hex: 8 digits for IPv4, 32 for IPv6, `0` for none. */
function addressHex(a: string | null): string {
  if (!a) return '0';
  const v4 = a.replace(/^::ffff:/, '');
  if (isIPv4(v4)) return v4.split('.').map((n) => Number(n).toString(16).padStart(2, '0')).join('');
  if (isIPv6(a)) {
    const [head, tail = ''] = a.split('::');
    const parts = (s: string) => (s ? s.split(':') : []);
    const h = parts(head!);
    const t = parts(tail);
    const groups = a.includes('::') ? [...h, ...Array(8 - h.length - t.length).fill('0'), ...t] : h;
    return groups.map((g) => g.padStart(4, '0')).join('').toLowerCase();
  }
  return '0';
}

function addressOf(hex: string): string | null {
  if (hex === '0') return null;
  if (hex.length === 8) return hex.match(/../g)!.map((b) => parseInt(b, 16)).join('.');
  return hex.match(/..../g)!.map((g) => g.replace(/^0+(?=.)/, '')).join(':');
}

/** A new boot id: the time in ms (12 hex digits, sorts by time) and 32 random bits. */
export function newBootId(nowMs: number, random: Buffer): string {
  if (random.length < 4) throw new Error('newBootId needs 4 random bytes');
  return Math.floor(nowMs).toString(16).padStart(12, '0').slice(-12) + random.subarray(0, 4).toString('hex');
}

/** The boot id a well-formed export name carries (its signature is not checked: for records, never for access). */
export function bootIdOf(name: string): string | null {
  return NAME.exec(name)?.[5] ?? null;
}

/** When the boot began (ms since the epoch). */
export function bootTime(bootId: string): number {
  return parseInt(bootId.slice(0, 12), 16);
}

/** True when boot `a` is newer than boot `b` (by time, then by id: the order is total). */
export function newerBoot(a: string, b: string): boolean {
  const ta = bootTime(a);
  const tb = bootTime(b);
  return ta !== tb ? ta > tb : a > b;
}

function key(peerSecret: string): Buffer {
  // A key of its own: a leaked export name says nothing about the secret peers use for chunks.
  return createHmac('sha256', peerSecret).update('bootfarm nbd export names v1').digest();
}

function mac12(mac: string): string {
  const m = normalizeMac(mac);
  if (!m) throw new Error(`not a MAC address: ${mac}`);
  return m.replace(/:/g, '');
}

function sign(peerSecret: string, body: string): string {
  return createHmac('sha256', key(peerSecret)).update(body).digest().subarray(0, 16).toString('base64url');
}

export function signExportName(c: ExportClaim, peerSecret: string): string {
  if (!/^[0-9a-f]{20}$/.test(c.bootId)) throw new Error(`not a boot id: ${c.bootId}`);
  const body = `bf1.${mac12(c.mac)}.${c.vdiskId}.${c.version}.${LETTER[c.mode]}.${c.bootId}.${addressHex(c.address)}`;
  return `${body}.${sign(peerSecret, body)}`;
}

/** The claim of a name signed with this secret; null for anything else (malformed, forged, another site's). */
export function verifyExportName(name: string, peerSecret: string): ExportClaim | null {
  const m = NAME.exec(name);
  if (!m) return null;
  const body = name.slice(0, name.lastIndexOf('.'));
  const want = Buffer.from(sign(peerSecret, body));
  const got = Buffer.from(m[7]!);
  if (want.length !== got.length || !timingSafeEqual(want, got)) return null;
  const hex = m[1]!;
  return { mac: hex.match(/../g)!.join(':'), vdiskId: m[2]!, version: Number(m[3]), mode: MODE_OF[m[4]!]!, bootId: m[5]!, address: addressOf(m[6]!) };
}

/** Whether a connection from `client` is the address the name was made for (IPv4-mapped IPv6 matches its IPv4). */
export function sameAddress(named: string, client: string): boolean {
  return addressHex(named) === addressHex(client);
}
