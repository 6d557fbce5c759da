/**
 * Hosts of a site (`site.addHost`): namespaces of their own on the site's bridge,
 * standing for separate machines, so that appliances can each run on one, take
 * over one another's floating address, and lose their link. Proved here with the
 * kernel alone: reachability, a floating address moved with a gratuitous ARP,
 * a cut link, and that nothing is left behind (destroy(), the sweep, the exit hook).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { canRunTargets, createSite, listSiteNamespaces, spawnProcess, sweepStaleSites, type Host, type Site } from './support/netns.js';

const log = process.env.BOOTFARM_TEST_LOG ? (line: string) => console.error(line) : undefined;
const targets = canRunTargets();
const REPO_ROOT = fileURLToPath(new URL('..', import.meta.url));
const FLOATING = '192.0.2.21';

/**
 * Alive and not a zombie: a process whose parent exited before it (the worker in
 * the exit hook test) is reparented to pid 1, which on these machines never reaps
 * it, so `kill(pid, 0)` alone would call it running for good.
 */
function isRunning(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat[stat.lastIndexOf(')') + 2] !== 'Z';
  } catch {
    return false;
  }
}

function namespaces(): string[] {
  return execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
    .split('\n')
    .map((line) => line.split(' ')[0]!)
    .filter(Boolean);
}

/**
 * Whether `address` answers from inside `where`, within 2 s. A TCP connection to
 * a closed port (9) is refused by the other host's stack with a RST, which proves
 * that packets got there and back as an echo reply would; ping is not used, as
 * iputils-ping is not installed on the project's machines nor CI's.
 */
async function reaches(where: Pick<Site, 'exec'>, address: string): Promise<boolean> {
  const probe = `const s = require('node:net').connect({ host: process.argv[1], port: 9 });
const done = (r) => { console.log(r); process.exit(0); };
s.setTimeout(2000, () => done('timeout'));
s.on('connect', () => done('reached'));
s.on('error', (e) => done(e.code === 'ECONNREFUSED' ? 'reached' : e.code));`;
  const { stdout } = await where.exec(process.execPath, ['-e', probe, address]);
  return stdout.trim() === 'reached';
}

async function macOf(host: Host): Promise<string> {
  return (await host.exec('cat', ['/sys/class/net/eth0/address'])).stdout.trim();
}

/** The site namespace's neighbour entry for `address`: its MAC and state, if it has one. */
async function neighbour(site: Site, address: string): Promise<{ lladdr?: string; state?: string[] } | undefined> {
  const { stdout } = await site.exec('ip', ['-j', '-4', 'neigh', 'show', address, 'dev', 'br0']);
  return (JSON.parse(stdout) as { lladdr?: string; state?: string[] }[])[0];
}

describe.skipIf(!targets.ok)(`hosts of a site (${targets.reason ?? 'root, ip netns present'})`, () => {
  let site: Site | undefined;
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'bootfarm-hosts-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });
  afterEach(async () => {
    await site?.destroy();
    site = undefined;
  });

  it('adds hosts as namespaces of their own on br0, at their address, reaching each other and the site', async () => {
    site = await createSite({ log });
    const started = Date.now();
    const a = await site.addHost('a', '192.0.2.11');
    const b = await site.addHost('b', '192.0.2.12/24');
    console.info(`[netns-hosts] two hosts added in ${Date.now() - started} ms`);
    expect(a).toMatchObject({ name: 'a', netns: `${site.name}-ha`, iface: 'eth0', address: '192.0.2.11', port: 'vh-a' });
    expect(b).toMatchObject({ name: 'b', netns: `${site.name}-hb`, address: '192.0.2.12', port: 'vh-b' });
    expect(namespaces()).toEqual(expect.arrayContaining([site.name, a.netns, b.netns]));
    // A host's namespace counts as its site, not as a site of its own.
    expect(listSiteNamespaces().filter((n) => n.startsWith(site!.name))).toEqual([site.name]);
    expect(await a.addresses()).toEqual(['192.0.2.11']);
    expect(await b.addresses()).toEqual(['192.0.2.12']);
    expect((await site.exec('ip', ['-o', 'link', 'show', 'vh-a'])).stdout).toMatch(/master br0 .*state UP/);
    expect((await a.exec('ip', ['-o', 'link', 'show', 'lo'])).stdout).toMatch(/UP/);
    expect((await a.exec('ip', ['-4', 'route'])).stdout.trim()).toBe('192.0.2.0/24 dev eth0 proto kernel scope link src 192.0.2.11');

    expect(await reaches(b, a.address)).toBe(true);
    expect(await reaches(a, b.address)).toBe(true);
    expect(await reaches(site, a.address)).toBe(true);
    expect(await reaches(a, site.bridgeAddress)).toBe(true);

    await expect(site.addHost('a', '192.0.2.13')).rejects.toThrow(/already has a host a/);
    await expect(site.addHost('Bad!', '192.0.2.13')).rejects.toThrow(/host name/);
    await expect(site.addHost('toolong7', '192.0.2.13')).rejects.toThrow(/host name/);
    await expect(site.addHost('c', '198.51.100.13')).rejects.toThrow(/TEST-NET-1/);
    await expect(site.addHost('c', '192.0.2.13/16')).rejects.toThrow(/TEST-NET-1/);
    // Refused before anything was made.
    expect(existsSync(`/run/netns/${site.name}-hc`)).toBe(false);
  }, 60_000);

  it('moves a floating address from one host to another; a gratuitous ARP repoints the site at once', async () => {
    site = await createSite({ log });
    const a = await site.addHost('a', '192.0.2.11');
    const b = await site.addHost('b', '192.0.2.12');
    const [macA, macB] = [await macOf(a), await macOf(b)];
    expect(macA).not.toBe(macB);

    // Each host runs a server that says which host it is, on every address it has.
    const entry = join(site.dir, 'whoami.ts');
    await writeFile(
      entry,
      `import { createServer } from 'node:http';
const name: string = process.argv[2]!;
createServer((req, res) => res.end(name + ' at ' + req.socket.localAddress)).listen(8080, '0.0.0.0', () => console.log('listening'));
`,
    );
    const servers = [a.spawnNode(entry, ['a']), b.spawnNode(entry, ['b'])];
    await Promise.all(servers.map((s) => s.waitForLine(/^listening$/, 20_000)));
    const ask = async () =>
      (await site!.exec(process.execPath, ['-e', `fetch('http://${FLOATING}:8080/').then(r => r.text()).then(t => console.log(t))`])).stdout.trim();

    await a.exec('ip', ['addr', 'add', `${FLOATING}/24`, 'dev', 'eth0']);
    expect(await a.addresses()).toEqual(['192.0.2.11', FLOATING]);
    expect(await reaches(b, FLOATING)).toBe(true);
    expect((await b.exec('ip', ['-j', 'neigh', 'show', FLOATING])).stdout).toContain(macA);
    expect(await ask()).toBe(`a at ${FLOATING}`);
    // The site now holds a neighbour entry for the floating address, pointing at a.
    expect((await neighbour(site, FLOATING))?.lladdr).toBe(macA);

    // The takeover: a lets go, b takes the address and announces it.
    await a.exec('ip', ['addr', 'del', `${FLOATING}/24`, 'dev', 'eth0']);
    await b.exec('ip', ['addr', 'add', `${FLOATING}/24`, 'dev', 'eth0']);
    expect(await a.addresses()).toEqual(['192.0.2.11']);
    expect(await b.addresses()).toEqual(['192.0.2.12', FLOATING]);
    const arpStart = Date.now();
    // -U: an unsolicited ARP request from and for the address (iputils takes the
    // source from the target in this mode); it expects no reply and exits 0 after
    // its 1 s interval.
    const arping = await b.exec('arping', ['-U', '-c', '1', '-I', 'eth0', FLOATING]);
    console.info(`[netns-hosts] arping -U -c 1 took ${Date.now() - arpStart} ms`);
    expect(arping.stdout).toContain(`ARPING ${FLOATING} from ${FLOATING} eth0`);
    // Linux updates an existing entry on an unsolicited ARP (no arp_accept needed
    // for that), overriding even within locktime: stale, now with b's MAC.
    const after = await neighbour(site, FLOATING);
    expect(after?.lladdr).toBe(macB);
    expect(after?.state).toEqual(['STALE']);
    expect(await ask()).toBe(`b at ${FLOATING}`);
    expect(servers.every((s) => s.exit === undefined)).toBe(true);
  }, 60_000);

  it("setLink(false) cuts a host's link (no carrier, unreachable) and setLink(true) restores it", async () => {
    site = await createSite({ log });
    const a = await site.addHost('a', '192.0.2.11');
    const b = await site.addHost('b', '192.0.2.12');
    const link = async () => (await a.exec('cat', ['/sys/class/net/eth0/carrier', '/sys/class/net/eth0/operstate'])).stdout.split('\n').slice(0, 2);
    expect(await link()).toEqual(['1', 'up']);
    expect(await reaches(b, a.address)).toBe(true);

    let started = Date.now();
    await a.setLink(false);
    console.info(`[netns-hosts] setLink(false) until eth0 left UP: ${Date.now() - started} ms`);
    // eth0 stays administratively up: it has lost its carrier, as with a cable pulled.
    expect(await link()).toEqual(['0', 'down']);
    expect((await a.exec('ip', ['-o', 'link', 'show', 'eth0'])).stdout).toMatch(/NO-CARRIER.*,UP>.*state DOWN/);
    expect((await site.exec('bridge', ['link', 'show', 'dev', 'vh-a'])).stdout).toContain('state disabled');
    // Both ways at once: each waits out its 2 s.
    expect(await Promise.all([reaches(b, a.address), reaches(a, b.address)])).toEqual([false, false]);
    expect(await reaches(b, site.bridgeAddress)).toBe(true);

    started = Date.now();
    await a.setLink(true);
    console.info(`[netns-hosts] setLink(true) until eth0 UP: ${Date.now() - started} ms`);
    expect(await link()).toEqual(['1', 'up']);
    // STP is off on br0: the port forwards as soon as it is up, no listening delay.
    expect(await reaches(b, a.address)).toBe(true);
    expect(await a.addresses()).toEqual(['192.0.2.11']);
  }, 60_000);

  it("destroy() kills the hosts' processes and leaves no namespace of the site", async () => {
    site = await createSite({ log });
    const a = await site.addHost('a', '192.0.2.11');
    const b = await site.addHost('b', '192.0.2.12');
    const dhcp = await site.startDhcp({ separateHost: true });
    const sleepers = [a.spawn('sleep', ['600']), b.spawn('sleep', ['600'])];
    // One started by hand, outside the harness's bookkeeping: destroy() finds it by its namespace.
    const stray = spawnProcess('sleep', ['600'], { netns: b.netns });
    await new Promise((r) => setTimeout(r, 300));
    const pids = [...sleepers.map((s) => s.pid), stray.pid, dhcp.pid];
    expect(pids.every(isRunning)).toBe(true);
    const name = site.name;

    const started = Date.now();
    await site.destroy();
    console.info(`[netns-hosts] destroy() of a site with two hosts and a DHCP host: ${Date.now() - started} ms`);
    expect(pids.filter(isRunning)).toEqual([]);
    expect(namespaces().filter((n) => n.startsWith(name))).toEqual([]);
    expect(listSiteNamespaces()).not.toContain(name);
    expect(() => a.spawn('true')).toThrow(/being destroyed/);
    await expect(site.addHost('c', '192.0.2.13')).rejects.toThrow(/being destroyed/);
  }, 60_000);

  it('sweepStaleSites removes an orphaned host namespace whose owner is gone, with what runs inside, and spares live ones', async () => {
    site = await createSite({ log });
    const live = await site.addHost('a', '192.0.2.11');
    // What a killed worker leaves behind once its site's own namespace is gone: a host alone.
    const stale = `bf-zz${Math.random().toString(36).slice(2, 6).padEnd(4, '0')}`;
    execFileSync('ip', ['netns', 'add', `${stale}-ha`]);
    const orphan = spawnProcess('sleep', ['600'], { netns: `${stale}-ha` });
    const dead = spawnProcess('true', []);
    await dead.exited;
    await writeFile(join(tmpdir(), 'bootfarm-sites', `${stale}.json`), JSON.stringify({ pid: dead.pid, dir: join(tmpdir(), 'bootfarm-none') }));
    expect(listSiteNamespaces()).toContain(stale);

    const removed = await sweepStaleSites();
    expect(removed).toContain(stale);
    expect(removed).not.toContain(site.name);
    expect(existsSync(`/run/netns/${stale}-ha`)).toBe(false);
    expect(existsSync(join(tmpdir(), 'bootfarm-sites', `${stale}.json`))).toBe(false);
    expect((await orphan.exited).signal).toBe('SIGKILL');
    expect(existsSync(`/run/netns/${live.netns}`)).toBe(true);
    expect(await reaches(site, live.address)).toBe(true);
  }, 60_000);

  it('a worker that exits without destroy() takes its hosts and their processes with it (exit hook)', async () => {
    const script = join(dir, 'exit-without-destroy.mts');
    await writeFile(
      script,
      `import { createSite } from ${JSON.stringify(join(REPO_ROOT, 'test/support/netns.js'))};
const site = await createSite({ sweep: false });
const host = await site.addHost('x1', '192.0.2.31');
const sleeper = host.spawn('sleep', ['600']);
// Long enough for \`ip netns exec\` to have become sleep inside the host.
await new Promise((r) => setTimeout(r, 300));
console.log(JSON.stringify({ site: site.name, host: host.netns, pid: sleeper.pid }));
process.exit(0);
`,
    );
    const child = spawnProcess(process.execPath, ['--import', 'tsx', script], { cwd: REPO_ROOT, name: 'worker', log });
    const exit = await child.exited;
    expect(exit, child.lines.join('\n')).toEqual({ code: 0, signal: null });
    const made = JSON.parse(child.stdout.at(-1)!) as { site: string; host: string; pid: number };
    expect(made.host).toBe(`${made.site}-hx1`);
    expect(isRunning(made.pid)).toBe(false);
    expect(namespaces().filter((n) => n.startsWith(made.site))).toEqual([]);
  }, 60_000);
});
