/**
 * A reconnecting NBD reader, as a running OS's disk driver behaves (kernel
 * nbd-client with reconnect, qemu's reconnect-delay): reads an export from
 * start to end, and when the connection breaks it connects again, to its
 * servers in order, every 100 ms, and goes on where it was. Run inside a site
 * namespace by failover tests and the failover bench:
 *
 *   node --import tsx nbd-reader.ts <export> <server[,server...]> <port> [paceMs] [chunkBytes]
 *
 * Prints JSON lines: {"event":"connected"}, {"event":"resumed","gapMs",...}
 * after each break, and {"event":"done","sha256",...} at the end.
 */
import { createHash } from 'node:crypto';
import { RawConnection } from './nbd-client.js';

const [exportName, serverList, portText, paceText = '0', chunkText = String(256 * 1024)] = process.argv.slice(2);
if (!exportName || !serverList || !portText) {
  console.error('usage: nbd-reader.ts <export> <server[,server...]> <port> [paceMs] [chunkBytes]');
  process.exit(2);
}
const servers = serverList.split(',');
const port = Number(portText);
const pace = Number(paceText);
const chunk = Number(chunkText);
const say = (o: Record<string, unknown>) => console.log(JSON.stringify({ at: Date.now(), ...o }));

async function connect(): Promise<{ c: RawConnection; size: number; server: string }> {
  const started = Date.now();
  let lastError = '';
  while (Date.now() - started < 120_000) {
    for (const server of servers) {
      try {
        const g = await Promise.race([
          RawConnection.go(port, exportName!, server),
          new Promise<never>((_, reject) => setTimeout(() => reject(new Error('connect timed out')), 1000)),
        ]);
        return { c: g.c, size: g.sizeBytes, server };
      } catch (e) {
        lastError = `${server}: ${(e as Error).message}`;
      }
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`no server for 120 s (${lastError})`);
}

const hash = createHash('sha256');
let { c, size, server } = await connect();
say({ event: 'connected', server, size });
const resumes: { gapMs: number; offset: number; server: string }[] = [];
let offset = 0;
let cookie = 1n;
while (offset < size) {
  const n = Math.min(chunk, size - offset);
  let data: Buffer | null = null;
  try {
    const r = await c.readAt(offset, n, cookie++);
    if (r.error) throw new Error(`error ${r.error}`);
    data = r.data;
  } catch (e) {
    const brokeAt = Date.now();
    say({ event: 'broken', offset, reason: (e as Error).message });
    c.close();
    ({ c, size, server } = await connect());
    const gapMs = Date.now() - brokeAt;
    resumes.push({ gapMs, offset, server });
    say({ event: 'resumed', gapMs, offset, server });
    continue;
  }
  hash.update(data);
  offset += n;
  if (pace) await new Promise((r) => setTimeout(r, pace));
}
c.close();
say({ event: 'done', bytes: offset, sha256: hash.digest('hex'), resumes });
process.exit(0);
