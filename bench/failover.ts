/**
 * Failover benchmark (issue 7): a site of two appliances, each on a machine
 * of its own (test/appliance/support/ha-site.ts: host namespaces on a site
 * bridge, real `bootfarm appliance run` processes, the cloud stopped).
 *
 * 1. Failover time, `runs` times: a target reads continuously from appliance
 *    A's floating address, over HTTP (a 32 KiB range request every 50 ms) and
 *    over NBD (the reconnecting reader of the failover tests); A is killed
 *    with SIGKILL; we time the kill to the first read served on the address
 *    B adopted. The appliances' own logs and address polling break it down.
 *    Then A restarts and takes its address back (failback, also timed),
 *    before the next run. Compared with PVS's default failover (~50 s).
 * 2. Boot storm, for each count of targets: all at once, half HTTP readers
 *    replaying the test disk's boot read in 32 KiB ranges (as iPXE's int 13h
 *    does), half NBD readers reading 8 MiB; each target first asks one of the
 *    two appliances (alternately) for its boot script, so the appliances' load
 *    balancing decides who streams it. The peer in the same run: the same
 *    storm against one appliance (the other stopped), and against nginx +
 *    nbdkit serving the raw image on one host (when installed).
 *
 * Needs root (network namespaces), dnsmasq, arping, curl and Java 17
 * (DynamoDB Local); this file starts the local AWS itself. All clients run in
 * one process inside the site (bench/failover-client.ts).
 */
import { existsSync } from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { LocalAws } from '../functions/local/local-aws.js';
import type { HaAppliance, HaSite } from '../test/appliance/support/ha-site.js';
import type { Host, ManagedProcess } from '../test/support/netns.js';
import type { StormPlan, StormResult, StormTarget } from './failover-client.js';

export interface FailoverBenchOptions {
  runs: number;
  /** Boot storm sizes, e.g. [50, 200, 500]. */
  targets: number[];
  out: (line: string) => void;
  log: (line: string) => void;
}

const MiB = 2 ** 20;
/** Citrix's figure for a PVS target's failover with default settings (5 s packet timeout, 10 retries): /work/shared/reference/pvs.md. */
const PVS_FAILOVER_S = 50;
const GOAL_S = 3;
const PEER_TIMEOUT_MS = 2000;
const NBD_PORT = 10809;
const CLIENT = 'bench/failover-client.ts';
/** The storm's targets are machines of their own: each gets one of these addresses (the NBD server allows 64 connections per address). */
const CLIENT_ADDRESSES = Array.from({ length: 127 }, (_, i) => `192.0.2.${128 + i}`);
/** The static peer's host. */
const PEER_ADDRESS = '192.0.2.31';
/** What an NBD target reads in the storm, and per request (the Linux block layer's usual 128 KiB). */
const NBD_BYTES = 8 * MiB;
const NBD_REQUEST = 128 * 1024;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const quantile = (xs: number[], q: number) => {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)]!;
};
const median = (xs: number[]) => quantile(xs, 0.5);
const secs = (ms: number) => (Number.isFinite(ms) ? `${(ms / 1000).toFixed(2)} s` : 'n/a');

function onPath(binary: string): boolean {
  return (process.env.PATH ?? '').split(':').some((d) => d !== '' && existsSync(join(d, binary)));
}

/** JSON lines a client printed (anything else is ignored). */
function jsonLines<T>(p: ManagedProcess): T[] {
  const out: T[] = [];
  for (const l of p.stdout) {
    if (!l.startsWith('{')) continue;
    try {
      out.push(JSON.parse(l) as T);
    } catch {
      /* not ours */
    }
  }
  return out;
}

async function until<T>(what: string, probe: () => Promise<T | null | undefined | false>, timeoutMs: number, everyMs = 50): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

/** Floating addresses on a host now (its fixed address left out). */
async function floatingOn(a: HaAppliance): Promise<string[]> {
  return (await a.host.addresses()).filter((x) => x !== a.address).sort();
}

/**
 * test/support/farm.ts finds DynamoDB Local and s3rver through vitest's
 * `inject('localAws')`, which reads vitest's worker state: outside vitest
 * there is none. We start the local AWS ourselves and put it where inject()
 * looks, so that the test support (testFarm, testSite, haSite) runs as it is.
 */
function provideLocalAws(aws: LocalAws): void {
  const g = globalThis as Record<string, unknown>;
  g.__vitest_worker__ ??= {
    providedContext: {
      localAws: { dynamoEndpoint: aws.dynamoEndpoint, s3Endpoint: aws.s3Endpoint, region: aws.region, credentials: { ...aws.credentials }, tableName: aws.tableName, bucketName: aws.bucketName },
    },
  };
}

export async function benchFailover(o: FailoverBenchOptions): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('needs root (network namespaces): sudo npm run bench -- failover');
  for (const [tool, pkg] of [['ip', 'iproute2'], ['dnsmasq', 'dnsmasq-base'], ['arping', 'iputils-arping'], ['curl', 'curl'], ['java', 'a Java 17 runtime, for DynamoDB Local']] as const)
    if (!onPath(tool)) throw new Error(`${tool} is needed (${pkg})`);
  const targets = [...o.targets].sort((a, b) => a - b);
  const t0 = Date.now();
  const log = o.log;
  // Progress with the time since the start: where a long run spends its minutes.
  o = { ...o, log: (l) => log(`[${((Date.now() - t0) / 1000).toFixed(0).padStart(3)} s] ${l}`) };

  let aws: LocalAws | undefined;
  let s: HaSite | undefined;
  const procs: { name: string; proc: ManagedProcess }[] = [];
  let cleaning: Promise<void> | undefined;
  const cleanup = () =>
    (cleaning ??= (async () => {
      // The site first: it kills every process in it (appliances, clients, nginx).
      await s?.destroy().catch((e: Error) => o.log(`site clean-up: ${e.message}`));
      // haSite's destroy() leaves its two temporary folders (the disk image, the appliances' data and caches).
      if (s) for (const d of [s.t.dir, dirname(s.disk.path)]) await rm(d, { recursive: true, force: true }).catch(() => undefined);
      await aws?.stop().catch((e: Error) => o.log(`local AWS clean-up: ${e.message}`));
    })());
  // Ctrl-C must not leave namespaces, appliances and a Java process behind.
  const onSignal = (signal: NodeJS.Signals) => {
    o.log(`${signal}: cleaning up`);
    void cleanup().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  try {
    const started = Date.now();
    o.log('starting DynamoDB Local and s3rver');
    const { startLocalAws } = await import('../functions/local/local-aws.js');
    aws = await startLocalAws();
    provideLocalAws(aws);
    const { haSite } = await import('../test/appliance/support/ha-site.js');
    const maxTargets = Math.max(4, ...targets);
    o.log(`building the site: 2 appliances, ${maxTargets} targets, 64 MiB test disk (enrol, sync, then the cloud stops)`);
    s = await haSite({ appliances: 2, targets: maxTargets, peerTimeoutMs: PEER_TIMEOUT_MS });
    const site = s;
    const [A, B] = site.appliances as [HaAppliance, HaAppliance];
    // Every appliance process of the run (each restart is a new one), for the warnings and errors they logged.
    for (const a of site.appliances) {
      if (a.proc) procs.push({ name: a.name, proc: a.proc });
      const start = a.start.bind(a);
      a.start = () => start().finally(() => a.proc && procs.push({ name: a.name, proc: a.proc }));
    }
    // Start from a settled site: every address on its owner.
    await restart(site, site.appliances, o.log);
    o.log(`site ${site.site.name} ready in ${((Date.now() - started) / 1000).toFixed(0)} s: ${A.name} ${A.address} (floats ${A.floating}), ${B.name} ${B.address} (floats ${B.floating})`);

    const failover = await measureFailover(site, A, B, o);
    const storm = await measureStorm(site, targets, o);

    printFailover(failover, o);
    o.out('');
    printStorm(storm, o);
    o.log(`done in ${((Date.now() - started) / 1000).toFixed(0)} s`);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await cleanup();
    reportProblems(procs, o.log);
  }
}

/** Warnings and errors the appliances logged during the run, counted by message, with one example each. */
function reportProblems(procs: { name: string; proc: ManagedProcess }[], log: (l: string) => void): void {
  const seen = new Map<string, { count: number; example: string }>();
  for (const { name, proc } of procs)
    for (const line of proc.lines) {
      const i = line.indexOf('{');
      if (i < 0) continue;
      let l: Record<string, unknown>;
      try {
        l = JSON.parse(line.slice(i)) as Record<string, unknown>;
      } catch {
        continue;
      }
      if (l.level !== 'warn' && l.level !== 'error') continue;
      const key = `${String(l.level)}: ${String(l.msg)}`;
      const e = seen.get(key) ?? { count: 0, example: `${name} ${line.slice(i, i + 400)}` };
      e.count++;
      seen.set(key, e);
    }
  log(`appliance warnings and errors over ${procs.length} appliance processes: ${seen.size ? '' : 'none'}`);
  for (const [key, e] of seen) log(`  ${e.count} x ${key}\n    e.g. ${e.example}`);
}

/** Stops every appliance (SIGTERM: they release their addresses), starts `up` afresh and waits until the addresses are where they belong. */
async function restart(s: HaSite, up: HaAppliance[], log: (l: string) => void): Promise<void> {
  const t0 = Date.now();
  // One at a time: each one's "leaving" heartbeat lets the next see the site as it is.
  for (const a of s.appliances) {
    if (!a.proc || a.proc.exit) continue;
    const e = await a.proc.kill(5_000);
    if (e.signal === 'SIGKILL') log(`  ${a.name} did not stop within 5 s of SIGTERM: killed`);
  }
  // A stopped appliance holds no floating address (its stop and its guard remove them); say so when one does, and clean up.
  for (const a of s.appliances) {
    const left = await floatingOn(a);
    if (!left.length) continue;
    const lines = a.logs().filter((l) => /floating|stopping|stopped|peer/.test(String(l.msg))).slice(-6);
    log(`  BUG: ${a.name} stopped but its host still holds ${left.join(', ')}; its last HA log lines:\n${lines.map((l) => `    ${JSON.stringify(l)}`).join('\n')}`);
    for (const x of left) await a.host.exec('ip', ['addr', 'del', `${x}/24`, 'dev', 'eth0']);
  }
  const stopped = Date.now();
  await Promise.all(up.map((a) => a.start()));
  const listening = Date.now();
  // Every floating address on one running appliance: its own, and a stopped one's on the first running one (a site of two: the survivor).
  const expected = new Map(s.appliances.map((a) => [a.name, [] as string[]]));
  for (const a of s.appliances) expected.get(up.includes(a) ? a.name : up[0]!.name)!.push(a.floating);
  const want = [...expected].map(([n, l]) => `${n}: ${l.sort().join(',') || '-'}`).join('; ');
  try {
    await until(
      `floating addresses ${want}`,
      async () => {
        for (const a of s.appliances) if ((await floatingOn(a)).join() !== (expected.get(a.name) ?? []).join()) return false;
        return true;
      },
      30_000,
      100,
    );
  } catch (e) {
    const now = await Promise.all(s.appliances.map(async (a) => `${a.name}: ${(await floatingOn(a)).join(',') || '-'}`));
    const tails = s.appliances.map((a) => `${a.name}:\n${(a.proc?.lines ?? []).slice(-8).join('\n')}`);
    throw new Error(`${(e as Error).message}; held now: ${now.join('; ')}\n${tails.join('\n')}`);
  }
  log(`  restarted ${up.map((a) => a.name).join(', ')}: stopped in ${stopped - t0} ms, listening after ${listening - stopped} ms, addresses settled after ${Date.now() - listening} ms`);
}

/** A target's boot script from one appliance, parsed: the first disk URL and the NBD export. */
async function bootScript(s: HaSite, from: string, mac: string): Promise<{ url: URL; exportName: string; nbdServer: string | null }> {
  const text = (await s.site.exec('curl', ['-sf', '--max-time', '5', `http://${from}/boot/${mac.replace(/:/g, '-')}.ipxe`])).stdout;
  const url = /^sanboot --no-describe --drive 0x80 (http\S+)/m.exec(text)?.[1];
  const exportName = /^set bootfarm-nbd-export (\S+)$/m.exec(text)?.[1];
  if (!url || !exportName) throw new Error(`boot script of ${mac} from ${from} has no disk URL or NBD export:\n${text}`);
  return { url: new URL(url), exportName, nbdServer: /^set bootfarm-nbd-server (\S+)$/m.exec(text)?.[1] ?? null };
}

// ------------------------------------------------------------------ failover

interface FailoverRun {
  /** All from the kill, in ms. */
  http: number;
  nbd: number;
  /** A's floating address gone from its host (its guard process). */
  guard: number;
  /** B's log line "floating address adopted". */
  adopted: number;
  /** A.start() to A holding its address again, B not. */
  failback: number;
  /** Longest time without a successful HTTP read while A took its address back. */
  failbackHttpGap: number;
  /** B's "floating address released" to A's "floating address taken" (logs): nobody holds the address. */
  failbackUnheld: number;
  /** The NBD reader's longest reconnection gap while A took its address back (0: no break). */
  failbackNbdGap: number;
}

interface WatchLine {
  start: number;
  at: number;
  ok: boolean;
  status?: number;
  error?: string;
}
interface ReaderLine {
  at: number;
  event: string;
  gapMs?: number;
  server?: string;
}

async function measureFailover(s: HaSite, A: HaAppliance, B: HaAppliance, o: FailoverBenchOptions): Promise<FailoverRun[]> {
  const runs: FailoverRun[] = [];
  const [httpMac, nbdMac] = [s.macs[0]!, s.macs[1]!];
  for (let i = 0; i < o.runs; i++) {
    // A fresh boot of each target: its script from A (the disk URL and a newly signed NBD export).
    const script = await bootScript(s, A.floating, httpMac);
    const diskUrl = `http://${A.floating}${script.url.pathname}${script.url.search}`;
    const { exportName, nbdServer } = await bootScript(s, A.floating, nbdMac);
    // The reader goes to A's floating address whatever the script says; a wrong NBD server in the script is worth knowing.
    if (i === 0 && nbdServer !== `${A.floating}:${NBD_PORT}` && nbdServer !== `${B.floating}:${NBD_PORT}`) o.log(`note: the boot script from ${A.floating} (curl, "Host: ${A.floating}") names NBD server ${nbdServer}`);
    const watcher = s.site.spawnNode(CLIENT, ['watch', diskUrl, '50', '250'], { name: 'http-watch' });
    // 64 KiB every 50 ms: 64 MiB last far longer than a run.
    const reader = s.site.spawnNode('test/appliance/support/nbd-reader.ts', [exportName, A.floating, String(NBD_PORT), '50', String(64 * 1024)], { name: 'nbd-reader' });
    try {
      await watcher.waitForLine(/"ok":true/, 20_000);
      await reader.waitForLine(/"event":"connected"/, 20_000);
      // Heartbeats go every timeout/4: kill at a random moment of that cycle.
      await sleep(500 + Math.random() * (PEER_TIMEOUT_MS / 4));

      const killAt = Date.now();
      // kill9() sends SIGKILL before its first await: nothing A does can start after killAt.
      const killed = A.kill9();
      let guardAt = NaN;
      const guardWatch = (async () => {
        while (Date.now() - killAt < 10_000) {
          if (!(await floatingOn(A)).includes(A.floating)) return (guardAt = Date.now());
          await sleep(10);
        }
      })();
      await killed;
      // A request sent after the kill: only the adopter can have answered it.
      const httpOk = await until('an HTTP read on the adopted address', async () => jsonLines<WatchLine>(watcher).find((l) => l.ok && l.start > killAt), 30_000);
      const resumed = await until('the NBD reader to resume', async () => jsonLines<ReaderLine>(reader).find((l) => l.event === 'resumed' && l.at > killAt), 30_000);
      await guardWatch;
      const adoptedLine = await until(
        `${B.name} to log "floating address adopted"`,
        async () => B.logs().find((l) => l.msg === 'floating address adopted' && l.address === A.floating && Date.parse(String(l.time)) >= killAt - 5),
        10_000,
      );
      const adoptedAt = Date.parse(String(adoptedLine.time));

      // Failback: A starts from its cache, B lets go of A's address, A takes it back.
      const restartAt = Date.now();
      await A.start();
      await until(`${A.name} to hold ${A.floating} again`, async () => (await floatingOn(A)).includes(A.floating) && !(await floatingOn(B)).includes(A.floating), 30_000);
      const failback = Date.now() - restartAt;
      // The readers go on a while on the address that moved back.
      await sleep(1500);
      const after = jsonLines<WatchLine>(watcher).filter((l) => l.at > restartAt);
      let lastOk = restartAt;
      let gap = 0;
      for (const l of after) {
        if (l.ok) {
          gap = Math.max(gap, l.at - lastOk);
          lastOk = l.at;
        }
      }
      // Between the adopter letting go and the owner taking it back, nobody answers on the address (both protocols).
      const released = B.logs().find((l) => l.msg === 'floating address released' && l.address === A.floating && Date.parse(String(l.time)) >= restartAt);
      const taken = A.logs().find((l) => l.msg === 'floating address taken' && l.address === A.floating);
      const nbdBack = jsonLines<ReaderLine>(reader).filter((l) => l.event === 'resumed' && l.at > restartAt);
      const run: FailoverRun = {
        http: httpOk.at - killAt,
        nbd: resumed.at - killAt,
        guard: guardAt - killAt,
        adopted: adoptedAt - killAt,
        failback,
        failbackHttpGap: gap,
        failbackUnheld: released && taken ? Date.parse(String(taken.time)) - Date.parse(String(released.time)) : NaN,
        failbackNbdGap: Math.max(0, ...nbdBack.map((l) => l.gapMs ?? 0)),
      };
      runs.push(run);
      o.log(
        `failover ${i + 1}/${o.runs}: HTTP ${secs(run.http)}, NBD ${secs(run.nbd)} (guard ${run.guard.toFixed(0)} ms, adopted ${run.adopted} ms); failback ${secs(run.failback)}, address unheld ${run.failbackUnheld} ms, HTTP gap ${run.failbackHttpGap} ms, NBD reconnect ${run.failbackNbdGap} ms`,
      );
      const problems = B.logs().filter((l) => (l.level === 'error' || l.level === 'warn') && Date.parse(String(l.time)) >= killAt);
      for (const p of problems.slice(0, 5)) o.log(`  ${B.name} ${p.level}: ${p.msg} ${JSON.stringify({ ...p, level: undefined, msg: undefined, time: undefined, appliance: undefined })}`);
    } finally {
      await Promise.all([watcher.kill(), reader.kill()]);
    }
  }
  return runs;
}

function printFailover(runs: FailoverRun[], o: FailoverBenchOptions): void {
  const col = (f: (r: FailoverRun) => number) => runs.map(f);
  const http = col((r) => r.http);
  const nbd = col((r) => r.nbd);
  o.out(`Failover: 2 appliances on 2 hosts, peer timeout ${PEER_TIMEOUT_MS} ms; kill -9 of the one holding the address the target reads from; ${runs.length} runs`);
  o.out('| reader | median | max | goal | PVS default | PVS / bootfarm (median) |');
  o.out('|---|---|---|---|---|---|');
  for (const [name, xs] of [
    ['HTTP range reads every 50 ms (250 ms timeout): kill -> first 206 on the adopted address', http],
    ['NBD reader (test/appliance/support/nbd-reader.ts: 1 s connect timeout, 100 ms pause): kill -> reading again on the adopted address', nbd],
  ] as const)
    o.out(`| ${name} | ${secs(median(xs))} | ${secs(Math.max(...xs))} | < ${GOAL_S} s${Math.max(...xs) < GOAL_S * 1000 ? ' (met)' : ' (missed)'} | ~${PVS_FAILOVER_S} s | ${((PVS_FAILOVER_S * 1000) / median(xs)).toFixed(0)}x |`);
  o.out('');
  o.out('Breakdown (appliance JSON logs and address polling every 10 ms, same clock)');
  o.out('| step | median | max |');
  o.out('|---|---|---|');
  const adoptedToHttp = col((r) => r.http - r.adopted);
  const adoptedToNbd = col((r) => r.nbd - r.adopted);
  for (const [name, xs] of [
    ['kill -> the dead appliance\'s address removed (its guard process)', col((r) => r.guard)],
    ['kill -> survivor logs "floating address adopted" (peer timeout + up to one round)', col((r) => r.adopted)],
    ['adopted -> first HTTP 206', adoptedToHttp],
    ['adopted -> NBD reader reading again', adoptedToNbd],
    ['failback: restart -> the restarted appliance holds its address again', col((r) => r.failback)],
    ['failback: nobody holds the address (adopter logs "released" -> owner logs "taken")', col((r) => r.failbackUnheld)],
    ['failback: longest time without an HTTP read', col((r) => r.failbackHttpGap)],
    ['failback: NBD reader break -> reading again (its stall before the break is not in its output)', col((r) => r.failbackNbdGap)],
  ] as const)
    o.out(`| ${name} | ${secs(median(xs))} | ${secs(Math.max(...xs))} |`);
}

// --------------------------------------------------------------------- storm

/**
 * Half HTTP, half NBD, shuffled the same way every run. Not alternating: each
 * appliance answers a burst of scripts by sending targets to itself and its
 * peer in turn, so kinds alternating in the order of asking would put every
 * HTTP target on one appliance and every NBD target on the other.
 */
function halves(n: number): ('http' | 'nbd')[] {
  const kinds = Array.from({ length: n }, (_, i) => (i < Math.ceil(n / 2) ? 'http' : 'nbd') as 'http' | 'nbd');
  let seed = 0x2545f491;
  for (let i = n - 1; i > 0; i--) {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    const j = (seed >>> 8) % (i + 1);
    [kinds[i], kinds[j]] = [kinds[j]!, kinds[i]!];
  }
  return kinds;
}

type ServerKind = '2 appliances' | '1 appliance' | 'nginx + nbdkit';

interface StormRun {
  n: number;
  server: ServerKind;
  wallMs: number;
  bytes: number;
  ok: number;
  failed: number;
  errors: string[];
  /** Targets per machine that streamed them, HTTP and NBD. */
  spread: Map<string, { http: number; nbd: number }>;
  p50: number;
  p99: number;
}

async function measureStorm(s: HaSite, sizes: number[], o: FailoverBenchOptions): Promise<{ runs: StormRun[]; readText: string }> {
  const [A, B] = s.appliances as [HaAppliance, HaAppliance];
  for (const a of CLIENT_ADDRESSES) await s.site.addAddress(`${a}/24`);
  // The test disk's boot: what its boot sector reads through int 13h (the first range holds the boot sector itself).
  const ranges = s.disk.ranges.map((r) => [r.lba * 512, r.sectors * 512] as [number, number]);

  // The static peer: nginx (HTTP ranges) and nbdkit (NBD) on one host, serving the raw image.
  let peer: Host | null = null;
  const peerMissing = ['nginx', 'nbdkit'].filter((b) => !onPath(b));
  if (peerMissing.length) o.log(`no ${peerMissing.join(' and ')} here: the nginx + nbdkit peer is left out (Debian packages nginx-light, nbdkit)`);
  else {
    peer = await s.site.addHost('ng', PEER_ADDRESS);
    const conf = join(s.site.dir, 'nginx.conf');
    // Root: the image lies in a 0700 temporary folder. Stock settings otherwise: worker per core, sendfile, keep-alive.
    await writeFile(
      conf,
      `user root;\nworker_processes auto;\npid ${s.site.dir}/nginx.pid;\nerror_log stderr;\nevents { worker_connections 4096; }\n` +
        `http {\n access_log off;\n sendfile on;\n keepalive_requests 100000;\n client_body_temp_path ${s.site.dir}/nginx-body;\n proxy_temp_path ${s.site.dir}/nginx-proxy;\n fastcgi_temp_path ${s.site.dir}/nginx-fcgi;\n uwsgi_temp_path ${s.site.dir}/nginx-uwsgi;\n scgi_temp_path ${s.site.dir}/nginx-scgi;\n` +
        ` server {\n  listen ${PEER_ADDRESS}:80;\n  location = /disk.raw { alias ${s.disk.path}; }\n }\n}\n`,
    );
    peer.spawn('nginx', ['-c', conf, '-g', 'daemon off;'], { name: 'nginx' });
    peer.spawn('nbdkit', ['-f', '-r', '-i', PEER_ADDRESS, '-p', String(NBD_PORT), 'file', s.disk.path], { name: 'nbdkit' });
    await until('nginx and nbdkit to listen', async () => {
      const { stdout } = await peer!.exec('ss', ['-ltnH']);
      return stdout.includes(`${PEER_ADDRESS}:80`) && stdout.includes(`${PEER_ADDRESS}:${NBD_PORT}`);
    }, 10_000);
  }

  const out: StormRun[] = [];
  for (const n of sizes) {
    const servers: ServerKind[] = ['2 appliances', '1 appliance', ...(peer ? (['nginx + nbdkit'] as const) : [])];
    for (const server of servers) {
      // Fresh appliances for each storm: no sessions or recent boot decisions of the one before weigh on this one.
      if (server === '2 appliances') await restart(s, [A, B], o.log);
      else if (server === '1 appliance') await restart(s, [A], o.log);
      const holder = new Map<string, string>();
      for (const a of s.appliances) for (const f of await floatingOn(a)) holder.set(f, a.name);
      if (server === 'nginx + nbdkit') holder.set(PEER_ADDRESS, 'nginx/nbdkit');

      const kinds = halves(n);
      const plan: StormPlan = {
        targets: s.macs.slice(0, n).map((mac, i): StormTarget => ({
          mac,
          kind: kinds[i]!,
          ask: server === 'nginx + nbdkit' ? null : [A.floating, B.floating][i % 2]!,
          local: CLIENT_ADDRESSES[i % CLIENT_ADDRESSES.length]!,
        })),
        ranges,
        nbdBytes: NBD_BYTES,
        nbdRequestBytes: NBD_REQUEST,
        ...(server === 'nginx + nbdkit' ? { fixed: { url: `http://${PEER_ADDRESS}/disk.raw`, nbd: `${PEER_ADDRESS}:${NBD_PORT}`, exportName: '' } } : {}),
      };
      const planPath = join(s.site.dir, `storm-${n}.json`);
      await writeFile(planPath, JSON.stringify(plan));
      o.log(`storm: ${n} targets against ${server}`);
      const driver = s.site.spawnNode(CLIENT, ['storm', planPath], { name: 'storm' });
      let timer: NodeJS.Timeout | undefined;
      const exit = await Promise.race([driver.exited, new Promise<null>((r) => (timer = setTimeout(() => r(null), 300_000)))]);
      clearTimeout(timer);
      if (!exit) {
        await driver.kill();
        throw new Error(`storm of ${n} targets against ${server}: not finished after 300 s`);
      }
      const result = jsonLines<{ wallMs: number; results: StormResult[] }>(driver).at(-1);
      if (!result) throw new Error(`storm driver printed no result (exit ${exit.code ?? exit.signal}):\n${driver.lines.slice(-10).join('\n')}`);
      const ok = result.results.filter((r) => !r.error);
      const failed = result.results.filter((r) => r.error);
      const spread = new Map<string, { http: number; nbd: number }>();
      for (const r of ok) {
        const who = holder.get(r.server ?? '') ?? r.server ?? '?';
        const e = spread.get(who) ?? { http: 0, nbd: 0 };
        e[r.kind]++;
        spread.set(who, e);
      }
      const done = ok.map((r) => r.doneMs!);
      const run: StormRun = {
        n,
        server,
        wallMs: result.wallMs,
        bytes: ok.reduce((t, r) => t + r.bytes, 0),
        ok: ok.length,
        failed: failed.length,
        errors: [...new Set(failed.map((r) => r.error!))].slice(0, 3),
        spread,
        p50: median(done),
        p99: quantile(done, 0.99),
      };
      out.push(run);
      o.log(`  all done in ${secs(run.wallMs)}, ${(run.bytes / MiB / (run.wallMs / 1000)).toFixed(0)} MiB/s, p50 ${secs(run.p50)}, p99 ${secs(run.p99)}${run.failed ? `, ${run.failed} failed: ${run.errors.join(' | ')}` : ''}`);
    }
  }
  // Both appliances running again, as the site was.
  await restart(s, [A, B], o.log);
  return { runs: out, readText: `${ranges.length} ranges, ${(ranges.reduce((t, [, l]) => t + l, 0) / MiB).toFixed(2)} MiB` };
}

function printStorm({ runs, readText }: { runs: StormRun[]; readText: string }, o: FailoverBenchOptions): void {
  o.out(`Boot storm: all targets at once; half HTTP (script, HEAD, the test disk's boot read: ${readText} in 32 KiB range requests on one connection), half NBD (script, ${NBD_BYTES / MiB} MiB sequential in ${NBD_REQUEST / 1024} KiB reads)`);
  o.out('Each target asks the appliances alternately for its script; "1 appliance": the other stopped, the survivor holds both addresses; "nginx + nbdkit": the raw image, no script, one host');
  o.out('| targets | server | all done | MiB/s | streamed by (HTTP+NBD) | p50 | p99 | ms per target | failed |');
  o.out('|---|---|---|---|---|---|---|---|---|');
  for (const r of runs) {
    const spread = [...r.spread].sort(([a], [b]) => a.localeCompare(b)).map(([who, c]) => `${who} ${c.http}+${c.nbd}`).join(', ');
    o.out(`| ${r.n} | ${r.server} | ${secs(r.wallMs)} | ${(r.bytes / MiB / (r.wallMs / 1000)).toFixed(0)} | ${spread} | ${secs(r.p50)} | ${secs(r.p99)} | ${(r.wallMs / r.n).toFixed(1)} | ${r.failed}${r.errors.length ? ` (${r.errors.join('; ')})` : ''} |`);
  }
  o.out('');
  const sizes = [...new Set(runs.map((r) => r.n))];
  const get = (n: number, server: ServerKind) => runs.find((r) => r.n === n && r.server === server);
  const smallest = get(sizes[0]!, '2 appliances');
  const hasPeer = runs.some((r) => r.server === 'nginx + nbdkit');
  o.out(`| targets | all done: 1 appliance / 2 appliances | ${hasPeer ? 'nginx + nbdkit / 2 appliances | ' : ''}2 appliances: ms per target vs ${sizes[0]} targets |`);
  o.out(`|---|---|${hasPeer ? '---|' : ''}---|`);
  for (const n of sizes) {
    const two = get(n, '2 appliances');
    const one = get(n, '1 appliance');
    const ng = get(n, 'nginx + nbdkit');
    if (!two) continue;
    const growth = smallest ? `${(two.wallMs / n / (smallest.wallMs / smallest.n)).toFixed(2)}x` : '';
    o.out(`| ${n} | ${one ? `${(one.wallMs / two.wallMs).toFixed(2)}x` : 'n/a'} | ${hasPeer ? `${ng ? `${(ng.wallMs / two.wallMs).toFixed(2)}x` : 'n/a'} | ` : ''}${growth} |`);
  }
  if (!hasPeer) o.out('(nginx + nbdkit peer left out: not installed here)');
}
