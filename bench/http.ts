/**
 * HTTP disk benchmark (issue 5): random 4 KiB and 1 MiB range reads of one
 * disk, from the appliance's disk handler (verified chunk cache, sessions)
 * and from nginx serving the same bytes as a plain file, with the same client
 * (wrk, keep-alive, a Lua script that picks a random aligned range per
 * request), in the same run. nginx runs as its own process; the appliance's
 * handler runs in this process, the way the daemon runs it.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createHash, generateKeyPairSync, randomBytes, sign } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { openVdiskCache } from '../appliance/cache/vdisk-cache.js';
import type { ChunkSource } from '../appliance/cache/chunk-source.js';
import { handleDisk } from '../appliance/http/disk.js';
import { Sessions } from '../appliance/sessions.js';
import { contentHash, keyIdOf, signManifest, type Manifest } from '../model/index.js';

const run = promisify(execFile);
const MiB = 2 ** 20;

export interface HttpBenchOptions {
  sizeBytes: number;
  seconds: number;
  connections: number;
  out: (line: string) => void;
  log: (line: string) => void;
}

export async function benchHttp(o: HttpBenchOptions): Promise<void> {
  for (const tool of ['wrk', 'nginx']) await run('sh', ['-c', `command -v ${tool}`]).catch(() => {
    throw new Error(`${tool} is needed (Debian packages wrk and nginx-light)`);
  });
  const dir = await mkdtemp(join(tmpdir(), 'bootfarm-bench-http-'));
  let nginx: ChildProcess | null = null;
  const server = createServer();
  try {
    // The disk: random bytes, 4 MiB chunks, a signed manifest, synced into a real cache.
    const chunkSize = 4 * MiB;
    const image = randomBytes(o.sizeBytes);
    await writeFile(join(dir, 'disk.raw'), image);
    const byHash = new Map<string, Buffer>();
    const chunks: string[] = [];
    for (let off = 0; off < image.length; off += chunkSize) {
      const c = image.subarray(off, off + chunkSize);
      const h = createHash('sha256').update(c).digest('hex');
      byHash.set(h, c);
      chunks.push(h);
    }
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const publicKeyPem = publicKey.export({ type: 'spki', format: 'pem' }).toString();
    const key = { keyId: keyIdOf(publicKeyPem), publicKeyPem, sign: async (d: Buffer) => sign('sha256', d, { key: privateKey, dsaEncoding: 'der' }) };
    const vdiskId = 'vd_benchbenchbenchb';
    const manifest: Manifest = { format: 'bootfarm.manifest/1', vdiskId, version: 0, parent: null, sectorSize: 512, sizeBytes: image.length, chunkSize, chunks, createdAt: new Date().toISOString() };
    const source: ChunkSource = { name: 'memory', fetch: async (h) => byHash.get(h) ?? null };
    const cache = await openVdiskCache({ dir: join(dir, 'cache'), keys: () => [key], sources: () => [source], log: () => undefined });
    await cache.setNeeded([{ vdiskId, number: 0, storeId: 'st_benchbenchbenchb', contentHash: contentHash(manifest), signedManifest: await signManifest(manifest, key) }]);
    await cache.sync();
    const sessions = new Sessions(60_000);
    server.on('request', (req, res) => {
      if (!handleDisk({ cache, sessions, log: () => undefined }, req, res)) res.writeHead(404).end();
    });
    server.keepAliveTimeout = 65_000;
    const bfPort = await new Promise<number>((ok) => server.listen(0, '127.0.0.1', () => ok((server.address() as AddressInfo).port)));

    // nginx: the same bytes as a file, one worker per core (as the Debian default).
    const ngPort = bfPort + 1;
    await writeFile(
      join(dir, 'nginx.conf'),
      `daemon off; worker_processes auto; pid ${dir}/nginx.pid; error_log ${dir}/nginx-error.log;
events { worker_connections 1024; }
http { access_log off; sendfile on; keepalive_requests 1000000; client_body_temp_path ${dir}; proxy_temp_path ${dir}; fastcgi_temp_path ${dir}; uwsgi_temp_path ${dir}; scgi_temp_path ${dir};
  server { listen 127.0.0.1:${ngPort}; root ${dir}; location / { } } }
`,
    );
    nginx = spawn('nginx', ['-c', join(dir, 'nginx.conf'), '-p', dir], { stdio: 'ignore' });
    await new Promise((r) => setTimeout(r, 500));

    const rows: string[][] = [];
    for (const block of [4096, MiB]) {
      const lua = join(dir, `range-${block}.lua`);
      await writeFile(
        lua,
        `math.randomseed(42)
local blocks = ${Math.floor(o.sizeBytes / block)}
request = function()
  local b = math.random(0, blocks - 1) * ${block}
  return wrk.format("GET", nil, { ["Range"] = "bytes=" .. b .. "-" .. (b + ${block - 1}) })
end
`,
      );
      const measure = async (name: string, url: string) => {
        // A warm-up pass, then the measured one.
        await run('wrk', ['-t', '1', '-c', String(o.connections), '-d', '2s', '-s', lua, url]);
        const { stdout } = await run('wrk', ['-t', '1', '-c', String(o.connections), '-d', `${o.seconds}s`, '-s', lua, url]);
        const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(stdout)?.[1]);
        const non2xx = Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(stdout)?.[1] ?? 0);
        const errors = /Socket errors: (.*)/.exec(stdout)?.[1] ?? 'none';
        if (!rps) throw new Error(`${name}: wrk printed no rate:\n${stdout}`);
        o.log(`${name} ${block} B: ${rps.toFixed(0)} req/s, non-2xx ${non2xx}, socket errors ${errors}`);
        return { rps, non2xx };
      };
      const ng = await measure('nginx', `http://127.0.0.1:${ngPort}/disk.raw`);
      const bf = await measure('bootfarm', `http://127.0.0.1:${bfPort}/vdisks/${vdiskId}/0`);
      const mb = (r: number) => ((r * block) / MiB).toFixed(1);
      rows.push([block === 4096 ? '4 KiB' : '1 MiB', `${bf.rps.toFixed(0)} req/s (${mb(bf.rps)} MiB/s)`, `${ng.rps.toFixed(0)} req/s (${mb(ng.rps)} MiB/s)`, `${(bf.rps / ng.rps).toFixed(2)}x`, `${bf.non2xx}/${ng.non2xx}`]);
    }
    o.out(`HTTP range reads, ${o.sizeBytes / MiB} MiB disk, wrk ${o.connections} keep-alive connections, ${o.seconds} s each, same run`);
    o.out('| random read | bootfarm | nginx (file) | ratio | non-2xx (bf/nginx) |');
    o.out('|---|---|---|---|---|');
    for (const r of rows) o.out(`| ${r.join(' | ')} |`);
    sessions.close();
    await cache.close();
  } finally {
    nginx?.kill('SIGQUIT');
    server.close();
    await rm(dir, { recursive: true, force: true });
  }
}
