/**
 * The real ProxyDHCP server answering real firmware, in network namespaces:
 *
 *   ns "site" (192.0.2.3, dnsmasq: addresses only) ==veth== br0 in ns
 *   "appliance" (192.0.2.1: bootfarm's ProxyDHCP + a stand-in HTTP server)
 *   -- tap0 -- QEMU (TCG)
 *
 * - OVMF with EDK2's own PXE (virtio-net, empty romfile): our proxy offer, the
 *   4011 REQUEST/ACK, and the TFTP read of snponly.efi that proves the firmware
 *   took the proxy's answer; QEMU is stopped right there (about 9 s in).
 *   With BOOTFARM_DHCP_E2E_CHAIN=1 the run goes on (about 18 s more): a
 *   TFTP-only dnsmasq serves /usr/lib/ipxe, snponly.efi's iPXE asks DHCP again
 *   and fetches the boot script URL instead of snponly.efi (no chainload loop).
 * - QEMU's e1000 ROM (iPXE, BIOS): the proxy offer leads straight to the
 *   script, fetched from a stand-in HTTP server: the loop breaker with a real iPXE.
 *
 * The site DHCP server lives in its own namespace so that, as on a real site,
 * its server id (192.0.2.3) differs from the appliance's.
 * Every packet is captured with tcpdump on br0 and read back with our codec.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { copyFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { decodeDhcp, type DhcpPacket } from '../../appliance/dhcp/codec.js';
import { OPT, clientArchs, getOption, messageType, userClasses } from '../../appliance/dhcp/options.js';
import type { ProxyConfig } from '../../appliance/dhcp/proxy.js';
import { readPcapUdp, type UdpDatagram } from './fixtures/dhcp/pcap.js';

const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));
const QEMU = 'qemu-system-x86_64';
const OVMF_CODE = '/usr/share/OVMF/OVMF_CODE_4M.fd';
const OVMF_VARS = '/usr/share/OVMF/OVMF_VARS_4M.fd';
const APPLIANCE_IP = '192.0.2.1';
const SITE_DHCP_IP = '192.0.2.3';
const HTTP_PORT = 8080;
/** Follow the UEFI boot past the TFTP read, into snponly.efi's iPXE (about 18 s more under TCG). */
const FULL_CHAIN = process.env.BOOTFARM_DHCP_E2E_CHAIN === '1';

function onPath(bin: string): boolean {
  return (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(':').some((d) => d && existsSync(join(d, bin)));
}

/** Why these tests cannot run here, or undefined when they can. */
function skipReason(): string | undefined {
  const missing: string[] = [];
  if (process.getuid?.() !== 0) missing.push('not root (network namespaces and tap devices need root)');
  if (!onPath(QEMU)) missing.push(`${QEMU} not installed (Debian: qemu-system-x86)`);
  if (!existsSync(OVMF_CODE) || !existsSync(OVMF_VARS)) missing.push(`${OVMF_CODE} / OVMF_VARS_4M.fd missing (Debian: ovmf)`);
  return missing.length ? missing.join('; ') : undefined;
}
const skip = skipReason();
const title = (name: string) => (skip ? `${name} (skipped: ${skip})` : name);

// ---------------------------------------------------------------- processes and namespaces

/** Names carry the test process id so a later run can sweep what a killed run left. */
const NS_PREFIX = 'bf-dhcp-e2e-';
const id = `${process.pid}-${Math.random().toString(36).slice(2, 6)}`;
const nsAppliance = `${NS_PREFIX}${id}`;
const nsSite = `${NS_PREFIX}${id}-site`;
const work = mkdtempSync(join(tmpdir(), 'bf-dhcp-e2e-'));
const children = new Set<ChildProcess>();

function sh(...args: string[]): string {
  const r = spawnSync(args[0]!, args.slice(1), { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${args.join(' ')} failed (${r.status}): ${r.stderr || r.error?.message}`);
  return r.stdout;
}

interface Proc {
  child: ChildProcess;
  lines: string[];
  /** Resolves with the first line (stdout or stderr) matching, rejects on exit or timeout. */
  waitForLine(re: RegExp, ms: number): Promise<string>;
  stop(): Promise<void>;
}

function start(ns: string, cmd: string, args: string[], env?: NodeJS.ProcessEnv): Proc {
  const child = spawn('ip', ['netns', 'exec', ns, cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  children.add(child);
  const lines: string[] = [];
  const listeners = new Set<() => void>();
  for (const stream of [child.stdout!, child.stderr!]) {
    createInterface({ input: stream }).on('line', (l) => {
      lines.push(l);
      for (const f of listeners) f();
    });
  }
  let exited = false;
  child.on('exit', () => {
    exited = true;
    children.delete(child);
    for (const f of listeners) f();
  });
  return {
    child,
    lines,
    waitForLine(re, ms) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => done(new Error(`timed out after ${ms} ms waiting for ${re} from ${cmd}; last lines:\n${lines.slice(-15).join('\n')}`)), ms);
        const check = () => {
          const hit = lines.find((l) => re.test(l));
          if (hit !== undefined) done(undefined, hit);
          else if (exited) done(new Error(`${cmd} exited before printing ${re}; last lines:\n${lines.slice(-15).join('\n')}`));
        };
        const done = (err?: Error, line?: string) => {
          clearTimeout(timer);
          listeners.delete(check);
          if (err) reject(err);
          else resolve(line!);
        };
        listeners.add(check);
        check();
      });
    },
    stop: () => stopChild(child),
  };
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), 3000);
  await exited;
  clearTimeout(t);
}

/** Kill whatever still runs in a namespace (by pid, from `ip netns pids`), then delete it. */
function deleteNamespace(ns: string): void {
  const pids = spawnSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).stdout?.split(/\s+/).filter(Boolean) ?? [];
  for (const pid of pids) {
    try {
      process.kill(Number(pid), 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
  spawnSync('ip', ['netns', 'del', ns]);
}

/** Namespaces of earlier runs whose test process is gone (a crashed or killed run). */
function sweepStale(): void {
  const names = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout?.split('\n').map((l) => l.split(' ')[0]!) ?? [];
  for (const ns of names) {
    const m = ns.startsWith(NS_PREFIX) ? /^(\d+)-/.exec(ns.slice(NS_PREFIX.length)) : null;
    if (!m || Number(m[1]) === process.pid) continue;
    let alive = true;
    try {
      process.kill(Number(m[1]), 0);
    } catch {
      alive = false;
    }
    if (!alive) deleteNamespace(ns);
  }
}

function createNetwork(): void {
  sweepStale();
  sh('ip', 'netns', 'add', nsAppliance);
  sh('ip', 'netns', 'add', nsSite);
  const a = (...args: string[]) => sh('ip', '-n', nsAppliance, ...args);
  a('link', 'set', 'lo', 'up');
  a('link', 'add', 'br0', 'type', 'bridge');
  a('addr', 'add', `${APPLIANCE_IP}/24`, 'dev', 'br0');
  a('link', 'set', 'br0', 'up');
  a('tuntap', 'add', 'dev', 'tap0', 'mode', 'tap');
  a('link', 'set', 'tap0', 'master', 'br0');
  a('link', 'set', 'tap0', 'up');
  // The site's DHCP server is another host on the same segment.
  a('link', 'add', 'veth-site', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', nsSite);
  a('link', 'set', 'veth-site', 'master', 'br0');
  a('link', 'set', 'veth-site', 'up');
  const s = (...args: string[]) => sh('ip', '-n', nsSite, ...args);
  s('link', 'set', 'lo', 'up');
  s('addr', 'add', `${SITE_DHCP_IP}/24`, 'dev', 'eth0');
  s('link', 'set', 'eth0', 'up');
}

// ---------------------------------------------------------------- the services

interface Services {
  proxy: Proc;
  capture: string;
  stop(): Promise<void>;
}

const proxyConfig: ProxyConfig = {
  serverIp: APPLIANCE_IP,
  scriptUrl: `http://${APPLIANCE_IP}:${HTTP_PORT}/boot.ipxe`,
  httpBootUrl: null,
  files: { bios: 'undionly.kpxe', uefiX64: 'snponly.efi' },
};

/** bootfarm's ProxyDHCP on 0.0.0.0:67/4011 (the production default) and a tiny HTTP server that logs requests. */
const PROXY_MAIN = `
const { startProxyDhcp } = await import(process.env.BF_REPO + '/appliance/dhcp/server.js');
const http = await import('node:http');
const cfg = JSON.parse(process.env.BF_PROXY_CONFIG);
const out = (o) => process.stdout.write(JSON.stringify({ t: Date.now(), ...o }) + '\\n');
const web = http.createServer((req, res) => {
  out({ msg: 'http request', method: req.method, url: req.url, from: req.socket.remoteAddress });
  res.writeHead(200, { 'content-type': 'text/plain' });
  res.end('#!ipxe\\necho bootfarm dhcp e2e: boot script fetched\\n');
});
await new Promise((resolve) => web.listen(${HTTP_PORT}, cfg.serverIp, resolve));
const server = await startProxyDhcp({ config: () => cfg, log: (level, msg, fields) => out({ level, msg, ...fields }) });
out({ msg: 'ready', ports: server.ports });
process.on('SIGTERM', () => { server.close().then(() => { web.close(); process.exit(0); }); });
`;

async function startServices(name: string, opts: { tftp: boolean }): Promise<Services> {
  const capture = join(work, `${name}.pcap`);
  const started: Proc[] = [];
  try {
    const tcpdump = start(nsAppliance, 'tcpdump', ['-i', 'br0', '-n', '-U', '-w', capture, 'udp or tcp port 8080']);
    started.push(tcpdump);
    await tcpdump.waitForLine(/listening on br0/, 10_000);
    const siteDhcp = start(nsSite, 'dnsmasq', [
      '--no-daemon', '--port=0', '--interface=eth0', '--bind-interfaces', '--log-dhcp', '--no-ping',
      `--dhcp-range=192.0.2.100,192.0.2.150,1h`, `--dhcp-leasefile=${join(work, `${name}.leases`)}`,
    ]);
    started.push(siteDhcp);
    // A TFTP-only stand-in (no --dhcp-range: no DHCP) for the appliance's own TFTP server.
    const tftp = opts.tftp ? start(nsAppliance, 'dnsmasq', ['--no-daemon', '--port=0', '--interface=br0', '--bind-interfaces', '--enable-tftp', '--tftp-root=/usr/lib/ipxe']) : undefined;
    if (tftp) started.push(tftp);
    const proxy = start(nsAppliance, process.execPath, ['--import', 'tsx', '--input-type=module', '-e', PROXY_MAIN], {
      BF_REPO: REPO_ROOT,
      BF_PROXY_CONFIG: JSON.stringify(proxyConfig),
    });
    started.push(proxy);
    await Promise.all([proxy.waitForLine(/"msg":"ready"/, 20_000), siteDhcp.waitForLine(/DHCP, IP range/, 10_000), tftp?.waitForLine(/TFTP root/, 10_000)]);
    return { proxy, capture, stop: () => Promise.all(started.map((p) => p.stop())).then(() => undefined) };
  } catch (err) {
    await Promise.all(started.map((p) => p.stop()));
    throw err;
  }
}

function dhcpIn(capture: string): { d: UdpDatagram; p: DhcpPacket }[] {
  if (!existsSync(capture)) return [];
  const out: { d: UdpDatagram; p: DhcpPacket }[] = [];
  for (const d of readPcapUdp(readFileSync(capture))) {
    if (![67, 68, 4011].includes(d.dport)) continue;
    try {
      out.push({ d, p: decodeDhcp(d.payload) });
    } catch {
      /* not ours to judge here */
    }
  }
  return out;
}

/** TFTP read requests (RFC 1350 §5: opcode 1, file name, NUL, mode, NUL) seen in the capture. */
function tftpReads(capture: string): { d: UdpDatagram; file: string }[] {
  if (!existsSync(capture)) return [];
  return readPcapUdp(readFileSync(capture))
    .filter((d) => d.dport === 69 && d.payload.readUInt16BE(0) === 1)
    .map((d) => ({ d, file: d.payload.subarray(2, d.payload.indexOf(0, 2)).toString('latin1') }));
}

async function until<T>(what: string, probe: () => T | undefined, ms: number): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

const fromUs = (x: { d: UdpDatagram }) => x.d.src === APPLIANCE_IP && (x.d.sport === 67 || x.d.sport === 4011);

// ---------------------------------------------------------------- tests

let services: Services | undefined;
let qemu: Proc | undefined;

beforeAll(() => {
  if (!skip) createNetwork();
});

afterEach(async () => {
  await qemu?.stop();
  qemu = undefined;
  await services?.stop();
  services = undefined;
});

afterAll(async () => {
  await Promise.all([...children].map(stopChild));
  if (!skip) {
    deleteNamespace(nsAppliance);
    deleteNamespace(nsSite);
  }
  rmSync(work, { recursive: true, force: true });
});

describe('ProxyDHCP with real firmware', () => {
  it.skipIf(!!skip)(
    title(`UEFI (OVMF, EDK2 PXE): takes the proxy offer, asks on 4011, reads snponly.efi over TFTP${FULL_CHAIN ? '; its iPXE then gets the script URL' : ''}`),
    async () => {
      services = await startServices('uefi', { tftp: FULL_CHAIN });
      const vars = join(work, 'OVMF_VARS.fd');
      await copyFile(OVMF_VARS, vars);
      const t0 = Date.now();
      qemu = start(nsAppliance, QEMU, [
        '-accel', 'tcg', '-machine', 'q35', '-m', '512', '-display', 'none', '-monitor', 'none', '-no-reboot',
        '-serial', `file:${join(work, 'uefi.serial')}`,
        '-uuid', '5b6f2a20-0000-4000-8000-000000000220',
        '-drive', `if=pflash,format=raw,readonly=on,file=${OVMF_CODE}`,
        '-drive', `if=pflash,format=raw,file=${vars}`,
        '-netdev', 'tap,id=n0,ifname=tap0,script=no,downscript=no',
        '-device', 'virtio-net-pci,netdev=n0,romfile=,mac=52:54:00:00:02:20',
      ]);
      const cap = services.capture;

      // 1. The firmware reads the file our proxy named, from siaddr: it accepted the answer.
      const rrq = await until('the TFTP read of snponly.efi', () => tftpReads(cap).find((r) => r.file === 'snponly.efi'), 90_000);
      expect(rrq.d.dst).toBe(APPLIANCE_IP);
      const packets = dhcpIn(cap);
      const discover = packets.find((x) => x.d.dport === 67 && messageType(x.p) === 1 && clientArchs(x.p)[0] === 7);
      expect(discover, 'EDK2 DISCOVER').toBeDefined();
      const offer = packets.find((x) => fromUs(x) && messageType(x.p) === 2 && x.p.xid === discover!.p.xid)!;
      expect(offer, 'our OFFER').toBeDefined();
      expect(offer.d.dst).toBe('255.255.255.255');
      expect(offer.p).toMatchObject({ yiaddr: '0.0.0.0', siaddr: APPLIANCE_IP, file: 'snponly.efi' });
      expect(getOption(offer.p, OPT.VENDOR_SPECIFIC)).toBeUndefined();
      // EDK2 took our offer as "ProxyBinl" and asked for the file on 4011; we answered from 4011.
      const ask = packets.find((x) => x.d.dport === 4011 && x.d.dst === APPLIANCE_IP);
      expect(ask, 'EDK2 REQUEST on 4011').toBeDefined();
      const ack = packets.find((x) => fromUs(x) && x.d.sport === 4011 && x.p.xid === ask!.p.xid);
      expect(ack?.p).toMatchObject({ yiaddr: '0.0.0.0', file: 'snponly.efi' });
      expect(messageType(ack!.p)).toBe(5);
      // The address came from the site's DHCP server, never from us.
      expect(packets.filter((x) => fromUs(x) && x.p.yiaddr !== '0.0.0.0')).toEqual([]);

      const at = (t: number) => `${((t - t0) / 1000).toFixed(1)} s`;
      const timings = `first PXE DISCOVER ${at(discover!.d.time * 1000)}, 4011 REQUEST ${at(ask!.d.time * 1000)}, TFTP read of snponly.efi ${at(rrq.d.time * 1000)}`;
      if (!FULL_CHAIN) {
        console.info(`[dhcp-e2e] OVMF under TCG: ${timings} after QEMU started`);
        return;
      }

      // 2. snponly.efi runs: iPXE asks again (user class iPXE) and fetches the script, not snponly.efi again.
      const get = await services.proxy.waitForLine(/"msg":"http request"/, 60_000);
      expect(JSON.parse(get)).toMatchObject({ method: 'GET', url: '/boot.ipxe' });
      const ipxeOffer = dhcpIn(cap).find((x) => fromUs(x) && x.p.file === proxyConfig.scriptUrl);
      expect(ipxeOffer, 'our OFFER to iPXE').toBeDefined();
      expect(dhcpIn(cap).some((x) => userClasses(x.p).includes('iPXE') && clientArchs(x.p)[0] === 7)).toBe(true);
      expect(tftpReads(cap).filter((r) => r.file === 'snponly.efi' && r.d.time > ipxeOffer!.d.time)).toEqual([]);

      console.info(`[dhcp-e2e] OVMF under TCG: ${timings}, iPXE GET of the script ${at(JSON.parse(get).t)} after QEMU started`);
    },
    150_000,
  );

  it.skipIf(!!skip)(
    title('BIOS (QEMU e1000, iPXE ROM): the proxy offer carries the script URL and iPXE fetches it'),
    async () => {
      services = await startServices('bios', { tftp: false });
      const t0 = Date.now();
      qemu = start(nsAppliance, QEMU, [
        '-accel', 'tcg', '-m', '256', '-display', 'none', '-monitor', 'none', '-no-reboot',
        '-serial', `file:${join(work, 'bios.serial')}`,
        '-uuid', '5b6f2a10-0000-4000-8000-000000000210',
        '-netdev', 'tap,id=n0,ifname=tap0,script=no,downscript=no',
        '-device', 'e1000,netdev=n0,mac=52:54:00:00:02:10',
        '-boot', 'n',
      ]);
      const get = await services.proxy.waitForLine(/"msg":"http request"/, 60_000);
      expect(JSON.parse(get)).toMatchObject({ method: 'GET', url: '/boot.ipxe' });
      const packets = dhcpIn(services.capture);
      const offer = packets.find((x) => fromUs(x) && messageType(x.p) === 2);
      expect(offer?.p).toMatchObject({ yiaddr: '0.0.0.0', file: proxyConfig.scriptUrl });
      // BIOS clients get option 43 with discovery control 8 (boot the file, no discovery).
      expect(getOption(offer!.p, OPT.VENDOR_SPECIFIC)).toEqual(Buffer.from([6, 1, 8, 255]));
      expect(tftpReads(services.capture)).toEqual([]);
      // Most of the time after the DHCPACK (about 15 s) is iPXE's ifconf waiting for an
      // IPv6 router advertisement that nobody sends in this namespace, not DHCP.
      const at = (t: number) => `${((t - t0) / 1000).toFixed(1)} s`;
      const firstDiscover = packets.find((x) => x.d.dport === 67 && messageType(x.p) === 1)!;
      const acked = packets.find((x) => messageType(x.p) === 5)!;
      console.info(`[dhcp-e2e] e1000 iPXE ROM under TCG: first DISCOVER ${at(firstDiscover.d.time * 1000)}, DHCPACK ${at(acked.d.time * 1000)}, GET of the boot script ${at(JSON.parse(get).t)} after QEMU started`);
    },
    120_000,
  );
});
