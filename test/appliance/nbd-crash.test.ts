/**
 * kill -9 of the appliance while a target writes to its persistent write
 * cache over NBD: the real daemon (`bootfarm appliance run`) as its own
 * process, a client that writes random blocks and flushes every few writes.
 * After each kill and restart, the same export name (a running OS
 * reconnecting) reads back every write that a completed FLUSH covered.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { CMD } from '../../appliance/nbd/codec.js';
import { RawConnection } from './support/nbd-client.js';
import { freePort, testSite, until, type TestSite } from './support/site.js';

const ROUNDS = 6;
const BIN = join(import.meta.dirname, '../../bin/bootfarm.js');
let t: TestSite;
let app: Awaited<ReturnType<TestSite['enrol']>>;
let nbdPort = 0;
let child: ChildProcess | null = null;

beforeAll(async () => {
  t = await testSite({ imageMiB: 8 });
  await t.fx.patch(`/v1/vdisks/${t.vdiskId}`, { writeCacheType: 'appliance-persistent' });
  app = await t.enrol('crash-nbd');
  nbdPort = await freePort();
  const file = join(app.dataDir, 'appliance.json');
  const c = JSON.parse(await readFile(file, 'utf8'));
  await writeFile(file, JSON.stringify({ ...c, nbd: { enabled: true, host: '127.0.0.1', port: nbdPort } }));
}, 120_000);

afterAll(async () => {
  child?.kill('SIGKILL');
  await t?.api.close();
});

/** Starts the daemon; resolves with its HTTP URL once it serves the synced version. */
async function start(): Promise<string> {
  child = spawn(process.execPath, [BIN, 'appliance', 'run', '--data-dir', app.dataDir], { stdio: ['ignore', 'pipe', 'inherit'] });
  let url = '';
  createInterface({ input: child.stdout! }).on('line', (line) => {
    try {
      const j = JSON.parse(line) as { msg: string; url?: string };
      if (j.msg === 'appliance listening') url = j.url!;
    } catch {
      /* not a log line */
    }
  });
  await until('appliance listening', () => url, 30_000);
  // After the first round the version is on disk already: serving it needs no sync.
  await until('version served', async () => ((await fetch(`${url}/healthz`).then((r) => r.json()).catch(() => null)) as { cache?: { versions?: { state: string }[] } } | null)?.cache?.versions?.[0]?.state === 'verified', 30_000);
  return url;
}

it(`loses no write covered by a completed FLUSH across ${ROUNDS} kill -9s of the appliance (persistent write cache)`, async () => {
  const url = await start();
  const mac = (await t.fx.listAll(`/v1/targets?siteId=${t.siteId}`)).items[0].mac as string;
  const script = await (await fetch(`${url}/boot/${mac.replace(/:/g, '-')}.ipxe`)).text();
  const name = /^set bootfarm-nbd-export (\S+)$/m.exec(script)![1]!;
  expect(script).toMatch(/^set bootfarm-write-cache appliance-persistent$/m);

  const size = t.image.length;
  const durable = Buffer.from(t.image);
  let flushesAcked = 0;
  let writesAcked = 0;
  for (let round = 0; round < ROUNDS; round++) {
    if (round > 0) await start();
    const { c } = await RawConnection.go(nbdPort, name);
    // Bytes some unflushed write touched: they may read as before or after.
    const uncertain = new Uint8Array(size);
    let pending: { offset: number; data: Buffer }[] = [];
    let cookie = 1n;
    const killAt = Date.now() + 200 + randomInt(600);
    let killed = false;
    const killer = setTimeout(() => {
      killed = true;
      child!.kill('SIGKILL');
    }, killAt - Date.now());
    try {
      while (!killed) {
        const length = 512 * (1 + randomInt(128));
        const offset = 512 * randomInt((size - length) / 512);
        const data = randomBytes(length);
        uncertain.fill(1, offset, offset + length);
        c.request(CMD.WRITE, cookie++, offset, length, data);
        if ((await c.reply()).error !== 0) throw new Error('write failed');
        writesAcked++;
        pending.push({ offset, data });
        if (pending.length >= 1 + randomInt(6)) {
          c.request(CMD.FLUSH, cookie++, 0, 0);
          if ((await c.reply()).error !== 0) throw new Error('flush failed');
          // Everything acknowledged before the flush was sent is durable now.
          for (const p of pending) {
            p.data.copy(durable, p.offset);
            uncertain.fill(0, p.offset, p.offset + p.data.length);
          }
          pending = [];
          flushesAcked++;
        }
      }
    } catch {
      // The kill cut the connection mid-request.
    } finally {
      clearTimeout(killer);
      c.close();
    }
    await new Promise<void>((r) => (child!.exitCode !== null || child!.signalCode !== null ? r() : child!.once('exit', () => r())));

    // Restart; the running OS reconnects with the same name and reads its disk.
    await start();
    const again = (await RawConnection.go(nbdPort, name)).c;
    const got = Buffer.alloc(size);
    for (let off = 0; off < size; off += 1 << 20) {
      const r = await again.readAt(off, Math.min(1 << 20, size - off), BigInt(off + 1));
      expect(r.error).toBe(0);
      r.data.copy(got, off);
    }
    again.close();
    let lost = 0;
    for (let i = 0; i < size; i++) if (!uncertain[i] && got[i] !== durable[i]) lost++;
    expect(lost, `round ${round}: bytes of flushed writes lost or changed`).toBe(0);
    // What unflushed writes left is the new starting point.
    got.copy(durable);
    child!.kill('SIGKILL');
    await new Promise<void>((r) => (child!.exitCode !== null || child!.signalCode !== null ? r() : child!.once('exit', () => r())));
  }
  expect(flushesAcked).toBeGreaterThan(ROUNDS * 3);
  expect(writesAcked).toBeGreaterThan(ROUNDS * 10);
}, 240_000);
