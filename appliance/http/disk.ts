/**
 * `GET`/`HEAD /vdisks/{vdiskId}/{version}`: a version's bytes over HTTP with
 * exact byte ranges, for iPXE `sanboot http://...` (capacity from HEAD, reads
 * as single ranges on a kept-alive connection). Served from the verified
 * cache only: a version not held (yet) is a 404 with the reason, never partial
 * data. Written on node:http directly: this is the hot path of a boot storm.
 *
 * `GET`/`HEAD /vdisks/{vdiskId}/{version}/kernel` and `/initrd`: for a Linux
 * vDisk (model/linux-boot.ts), the kernel and initramfs of its boot area, as
 * slices of the same verified disk (ranges relative to the file).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { normalizeMac } from '../../model/index.js';
import type { VdiskCache } from '../cache/vdisk-cache.js';
import type { LogFn } from '../log.js';
import type { LinuxImages } from '../boot/linux-images.js';
import type { Session, Sessions } from '../sessions.js';
import { parseRange } from './range.js';

const PATH = /^\/vdisks\/([a-z]+_[a-z2-7]{16})\/(\d{1,6})(?:\/(kernel|initrd))?(?:\?(.*))?$/;
/** Bytes read from the cache per write: bounds memory per request whatever range is asked for. */
const PIECE = 1024 * 1024;

export interface DiskDeps {
  cache: VdiskCache;
  sessions: Sessions;
  log: LogFn;
  /** Boot areas of Linux vDisks; absent: /kernel and /initrd are 404. */
  linux?: LinuxImages;
}

/** Handles the request when it is a disk request; returns false otherwise. */
export function handleDisk(deps: DiskDeps, req: IncomingMessage, res: ServerResponse): boolean {
  const url = req.url ?? '';
  if (!url.startsWith('/vdisks/')) return false;
  const m = PATH.exec(url);
  const fail = (status: number, message: string, headers: Record<string, string> = {}) => {
    const body = `${message}\n`;
    res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(body), ...headers });
    res.end(req.method === 'HEAD' ? undefined : body);
  };
  if (!m) {
    fail(404, 'not a disk: /vdisks/<vdisk id>/<version number>[/kernel|/initrd]');
    return true;
  }
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    fail(405, 'disks are read with GET and HEAD', { allow: 'GET, HEAD' });
    return true;
  }
  const vdiskId = m[1]!;
  const number = Number(m[2]);
  const file = (m[3] ?? null) as 'kernel' | 'initrd' | null;
  // The session is the target (its MAC when the boot script gave one), else its address.
  const mac = new URLSearchParams(m[4] ?? '').get('mac');
  const client = (mac && normalizeMac(mac)) || (req.socket.remoteAddress ?? 'unknown').replace(/^::ffff:/, '');
  let session: Session;
  try {
    session = deps.sessions.touch(client, vdiskId, number, 'http', () => deps.cache.open(vdiskId, number));
  } catch (e) {
    fail(404, `version ${number} of vDisk ${vdiskId} cannot be served from this appliance: ${(e as Error).message}`);
    return true;
  }
  if (!file) {
    serveSlice(deps, req, res, session, { start: 0, size: session.reader.sizeBytes }, `"${session.reader.contentHash}"`, fail);
    return true;
  }
  session.inFlight++;
  void (async () => {
    try {
      const image = deps.linux ? await deps.linux.image(vdiskId, number) : null;
      if (!image) return fail(404, `version ${number} of vDisk ${vdiskId} is not a Linux vDisk (no boot area with a kernel and initrd)`);
      const f = image[file];
      serveSlice(deps, req, res, session, { start: f.offset, size: f.size }, `"${f.sha256}"`, fail);
    } catch (e) {
      deps.log('warn', 'boot file request failed', { vdiskId, number, file, reason: (e as Error).message });
      if (!res.headersSent) fail(500, 'the boot file cannot be read');
      else res.destroy();
    } finally {
      session.inFlight--;
    }
  })();
  return true;
}

/** Bytes [slice.start, slice.start + slice.size) of the session's disk, as a file of its own (ranges relative to it). */
function serveSlice(
  deps: DiskDeps,
  req: IncomingMessage,
  res: ServerResponse,
  session: Session,
  slice: { start: number; size: number },
  etag: string,
  fail: (status: number, message: string, headers?: Record<string, string>) => void,
): void {
  const reader = session.reader;
  const size = slice.size;
  const common = { 'accept-ranges': 'bytes', etag, 'content-type': 'application/octet-stream', 'cache-control': 'no-store' };
  const range = parseRange(req.headers.range, size);
  if (range.kind === 'unsatisfiable') {
    fail(416, range.why, { 'content-range': `bytes */${size}` });
    return;
  }
  const [start, end] = range.kind === 'range' ? [range.start, range.end] : [0, size - 1];
  res.writeHead(range.kind === 'range' ? 206 : 200, {
    ...common,
    'content-length': String(end - start + 1),
    ...(range.kind === 'range' ? { 'content-range': `bytes ${start}-${end}/${size}` } : {}),
  });
  if (req.method === 'HEAD') {
    res.end();
    return;
  }
  session.inFlight++;
  void (async () => {
    try {
      for (let off = start; off <= end; off += PIECE) {
        const data = await reader.read(slice.start + off, Math.min(PIECE, end - off + 1));
        deps.sessions.sent(session, data.length);
        if (!res.write(data)) await drained(res);
        if (res.destroyed) return;
      }
      res.end();
    } catch (e) {
      deps.log('warn', 'disk read failed mid-response: connection closed', { vdiskId: session.vdiskId, number: session.number, start: slice.start + start, end: slice.start + end, reason: (e as Error).message });
      res.destroy();
    } finally {
      session.inFlight--;
    }
  })();
}

/** Resolves when the response can take more, rejects when the client went away; leaves no listener behind. */
function drained(res: ServerResponse): Promise<void> {
  return new Promise<void>((ok, bad) => {
    const done = () => {
      res.off('drain', onDrain);
      res.off('close', onClose);
    };
    const onDrain = () => {
      done();
      ok();
    };
    const onClose = () => {
      done();
      bad(new Error('client went away'));
    };
    res.on('drain', onDrain);
    res.on('close', onClose);
  });
}
