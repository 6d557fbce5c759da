/**
 * The clients of the failover bench (bench/failover.ts), run inside the test
 * site's namespace (`site.spawnNode`), where the appliances' floating
 * addresses are reachable. One process for many clients: 500 Node processes
 * would not fit on the bench machine.
 *
 *   node --import tsx bench/failover-client.ts watch <url> [everyMs] [timeoutMs]
 *     A target's HTTP disk reads during a failover: a 32 KiB range request
 *     every `everyMs` (a fresh connection each, as iPXE opens one after the old
 *     one broke), each given up after `timeoutMs`. Prints one JSON line per
 *     request: {"at":<epoch ms>,"ok":true|false,"status"?,"error"?}.
 *
 *   node --import tsx bench/failover-client.ts storm <plan.json>
 *     A boot storm: every target of the plan at once, each asking one
 *     appliance for its boot script (GET /boot/<mac>.ipxe), then reading its
 *     disk where the script says: HTTP targets replay a boot read pattern in
 *     32 KiB range requests on one kept-alive connection (as iPXE's int 13h
 *     does), NBD targets read a stretch sequentially. Prints one JSON line:
 *     {"wallMs", "results": [...]}.
 */
import { Agent, request, type IncomingMessage } from 'node:http';
import { readFile } from 'node:fs/promises';
import { RawConnection } from '../test/appliance/support/nbd-client.js';

const RANGE_BYTES = 32 * 1024;

export interface StormTarget {
  mac: string;
  kind: 'http' | 'nbd';
  /** The host whose boot script this target asks for; null: no script (the static peer), the disk is at `fixed`. */
  ask: string | null;
  /** This target's own address: each target is a machine of its own (the NBD server caps connections per address). */
  local: string;
}

export interface StormPlan {
  targets: StormTarget[];
  /** [offset, length] in bytes that an HTTP target reads, in order. */
  ranges: [number, number][];
  nbdBytes: number;
  nbdRequestBytes: number;
  /** The static peer: the disk's URL and the NBD server (host:port, export name) every target uses instead of a script. */
  fixed?: { url: string; nbd: string; exportName: string };
}

export interface StormResult {
  mac: string;
  kind: 'http' | 'nbd';
  /** The server the script chose (host of the first sanboot URL, or of bootfarm-nbd-server). */
  server: string | null;
  /** From the storm's start: script received, and last byte read. */
  scriptMs: number | null;
  doneMs: number | null;
  bytes: number;
  error?: string;
}

// ------------------------------------------------------------------- watch

async function watch(url: string, everyMs: number, timeoutMs: number): Promise<never> {
  for (;;) {
    const started = Date.now();
    const r = await new Promise<{ ok: boolean; status?: number; error?: string }>((resolve) => {
      // agent: false: a new connection for every request, so a request after the address moved does not wait on a dead socket.
      const req = request(url, { agent: false, headers: { range: `bytes=0-${RANGE_BYTES - 1}` }, timeout: timeoutMs }, (res) => {
        res.resume();
        res.on('end', () => resolve({ ok: res.statusCode === 206, status: res.statusCode! }));
        res.on('error', (e) => resolve({ ok: false, error: e.message }));
      });
      req.on('timeout', () => req.destroy(new Error('timeout')));
      req.on('error', (e) => resolve({ ok: false, error: (e as NodeJS.ErrnoException).code ?? e.message }));
      req.end();
    });
    console.log(JSON.stringify({ start: started, at: Date.now(), ...r }));
    await new Promise((res) => setTimeout(res, Math.max(0, everyMs - (Date.now() - started))));
  }
}

// ------------------------------------------------------------------- storm

function httpCall(agent: Agent, url: string, method: 'GET' | 'HEAD', local: string, range?: [number, number], headers: Record<string, string> = {}): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { agent, method, localAddress: local, timeout: 30_000, headers: { ...headers, ...(range ? { range: `bytes=${range[0]}-${range[0] + range[1] - 1}` } : {}) } }, (res: IncomingMessage) => {
      const parts: Buffer[] = [];
      res.on('data', (d: Buffer) => parts.push(d));
      res.on('end', () => resolve({ status: res.statusCode!, body: Buffer.concat(parts) }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${url}: no answer for 30 s`)));
    req.on('error', reject);
    req.end();
  });
}

/** What a target needs from its boot script: the disk URLs (first: the chosen appliance) and the NBD export. */
function parseScript(script: string): { urls: string[]; exportName: string | null; nbdServer: string | null } {
  const sanboot = /^sanboot --no-describe --drive 0x80 (http\S+(?: http\S+)*)/m.exec(script);
  return {
    urls: sanboot ? sanboot[1]!.split(' ') : [],
    exportName: /^set bootfarm-nbd-export (\S+)$/m.exec(script)?.[1] ?? null,
    nbdServer: /^set bootfarm-nbd-server (\S+)$/m.exec(script)?.[1] ?? null,
  };
}

async function oneTarget(plan: StormPlan, t: StormTarget, t0: number): Promise<StormResult> {
  const out: StormResult = { mac: t.mac, kind: t.kind, server: null, scriptMs: null, doneMs: null, bytes: 0 };
  // One kept-alive connection per server, like iPXE's HTTP disk.
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  try {
    let diskUrl: string;
    let nbdHost: string;
    let nbdPort: number;
    let exportName: string;
    if (t.ask) {
      // Host with the port spelled out: an appliance answering "Host: 192.0.2.21" (no port, as iPXE sends it) names
      // itself "192.0.2.2:10809" as its NBD server (appliance/boot/routes.ts cuts at the last ':' it assumes is there).
      const s = await httpCall(agent, `http://${t.ask}/boot/${t.mac.replace(/:/g, '-')}.ipxe`, 'GET', t.local, undefined, { host: `${t.ask}:80` });
      const text = s.body.toString('utf8');
      const p = parseScript(text);
      out.scriptMs = Date.now() - t0;
      if (s.status !== 200 || !p.urls.length) throw new Error(`no disk in the boot script: ${text.split('\n').find((l) => l.startsWith('echo')) ?? `HTTP ${s.status}`}`);
      diskUrl = p.urls[0]!;
      if (t.kind === 'nbd' && (!p.exportName || !p.nbdServer)) throw new Error('the boot script offers no NBD export');
      const [h, port] = (p.nbdServer ?? ':').split(':');
      [nbdHost, nbdPort, exportName] = [h!, Number(port), p.exportName ?? ''];
      out.server = t.kind === 'http' ? new URL(diskUrl).hostname : nbdHost;
    } else {
      const f = plan.fixed!;
      diskUrl = f.url;
      const [h, port] = f.nbd.split(':');
      [nbdHost, nbdPort, exportName] = [h!, Number(port), f.exportName];
      out.server = t.kind === 'http' ? new URL(diskUrl).hostname : nbdHost;
      out.scriptMs = 0;
    }

    if (t.kind === 'http') {
      // iPXE asks for the capacity first, then reads range after range on the same connection.
      const head = await httpCall(agent, diskUrl, 'HEAD', t.local);
      if (head.status !== 200) throw new Error(`HEAD ${diskUrl}: HTTP ${head.status}`);
      for (const [offset, length] of plan.ranges)
        for (let off = offset; off < offset + length; off += RANGE_BYTES) {
          const n = Math.min(RANGE_BYTES, offset + length - off);
          const r = await httpCall(agent, diskUrl, 'GET', t.local, [off, n]);
          if (r.status !== 206 || r.body.length !== n) throw new Error(`GET ${diskUrl} bytes ${off}+${n}: HTTP ${r.status}, ${r.body.length} bytes`);
          out.bytes += n;
        }
    } else {
      const { c } = await RawConnection.go(nbdPort, exportName, nbdHost, t.local);
      try {
        let cookie = 1n;
        for (let off = 0; off < plan.nbdBytes; off += plan.nbdRequestBytes) {
          const n = Math.min(plan.nbdRequestBytes, plan.nbdBytes - off);
          const r = await c.readAt(off, n, cookie++);
          if (r.error) throw new Error(`NBD read at ${off}: error ${r.error}`);
          out.bytes += r.data.length;
        }
      } finally {
        c.close();
      }
    }
    out.doneMs = Date.now() - t0;
  } catch (e) {
    out.error = (e as Error).message;
  } finally {
    agent.destroy();
  }
  return out;
}

async function storm(planPath: string): Promise<void> {
  const plan = JSON.parse(await readFile(planPath, 'utf8')) as StormPlan;
  const t0 = Date.now();
  // All at once: a boot storm is every machine of the site powered on together.
  const results = await Promise.all(plan.targets.map((t) => oneTarget(plan, t, t0)));
  console.log(JSON.stringify({ wallMs: Date.now() - t0, results }));
}

const [mode, ...args] = process.argv.slice(2);
if (mode === 'watch' && args[0]) await watch(args[0], Number(args[1] ?? 50), Number(args[2] ?? 250));
else if (mode === 'storm' && args[0]) await storm(args[0]);
else {
  console.error('usage: failover-client.ts watch <url> [everyMs] [timeoutMs] | storm <plan.json>');
  process.exit(2);
}
// Kept-alive sockets and timers of finished clients must not hold the process.
process.exit(0);
