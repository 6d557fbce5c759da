/**
 * A throw-away network "site" for tests with real boot targets: a Linux
 * network namespace `bf-<random>` holding a bridge `br0` (192.0.2.1/24 by
 * default), tap devices for QEMU, extra appliance addresses, a dnsmasq that
 * hands out addresses only, packet loss on demand, and "hosts": namespaces of
 * their own on the bridge that stand for other machines on the site LAN. Every
 * process a site starts runs inside it or one of its hosts (`ip netns exec`) and
 * is killed by `destroy()`.
 *
 * Only 192.0.2.0/24 (TEST-NET-1, RFC 5737) is accepted for addresses, and the
 * namespace has no route out of its bridge: nothing a test does here can leave it.
 *
 * Needs root; `canRunTargets()` says whether this machine can, and why not.
 */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export const OVMF_CODE = '/usr/share/OVMF/OVMF_CODE_4M.fd';
export const OVMF_VARS = '/usr/share/OVMF/OVMF_VARS_4M.fd';
export const QEMU_BINARY = 'qemu-system-x86_64';

const NAME_PREFIX = 'bf-';
const NAME_PATTERN = /^bf-[a-z0-9]{6}$/;
/** A site's second namespace, for a DHCP server on a host of its own (`startDhcp({ separateHost: true })`). */
const DHCP_HOST_SUFFIX = '-dhcp';
/** A site's host (`addHost`) is the namespace `<site>-h<name>`. */
const HOST_SUFFIX = '-h';
const HOST_NAME_PATTERN = /^[a-z0-9]{1,6}$/;
/**
 * The namespaces that belong to a site besides its own: `<site>-dhcp` and
 * `<site>-h<name>`. They go with it (destroy(), the exit hook, the sweep), even
 * when the site's own namespace is already gone.
 */
const COMPANION_PATTERN = /^(bf-[a-z0-9]{6})-(?:dhcp|h[a-z0-9]{1,6})$/;
/** Owner records of live sites: `<name>.json` = { pid, dir, created }. */
const OWNERS_DIR = join(tmpdir(), 'bootfarm-sites');
const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));

// ---------------------------------------------------------------- capability

export interface Capability {
  ok: boolean;
  /** Why not, naming every missing piece; absent when ok. */
  reason?: string;
}

function onPath(binary: string): boolean {
  return (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin')
    .split(':')
    .some((dir) => dir !== '' && existsSync(join(dir, binary)));
}

function capability(problems: string[]): Capability {
  return problems.length === 0 ? { ok: true } : { ok: false, reason: problems.join('; ') };
}

/** QEMU alone (no root): enough for local-disk and user-mode-network VMs. */
export function canRunQemu(): Capability {
  return capability(onPath(QEMU_BINARY) ? [] : [`${QEMU_BINARY} not found (Debian package qemu-system-x86)`]);
}

/**
 * Everything a site with real targets needs: root, working `ip netns`, the tun
 * device, QEMU, OVMF and dnsmasq. Synchronous, for `it.skipIf(!canRunTargets().ok)`.
 */
export function canRunTargets(): Capability {
  const problems: string[] = [];
  if (process.getuid?.() !== 0) problems.push('not root (network namespaces and tap devices need root)');
  if (!onPath('ip')) problems.push('ip not found (Debian package iproute2)');
  else {
    try {
      execFileSync('ip', ['netns', 'list'], { stdio: 'ignore', timeout: 5_000 });
    } catch {
      problems.push('`ip netns list` fails');
    }
  }
  if (!existsSync('/dev/net/tun')) problems.push('/dev/net/tun missing (tap devices)');
  const qemu = canRunQemu();
  if (qemu.reason) problems.push(qemu.reason);
  if (!existsSync(OVMF_CODE) || !existsSync(OVMF_VARS)) problems.push(`${OVMF_CODE} / ${OVMF_VARS} missing (Debian package ovmf)`);
  if (!onPath('dnsmasq')) problems.push('dnsmasq not found (Debian package dnsmasq-base or dnsmasq)');
  return capability(problems);
}

/**
 * Packet loss needs nftables: this kernel has no netem qdisc (CONFIG_NET_SCH_NETEM
 * is off), so loss is an nft rule with `numgen random` instead.
 */
export function canSimulateLoss(): Capability {
  const targets = canRunTargets();
  const problems = targets.reason ? [targets.reason] : [];
  if (!onPath('nft')) problems.push('nft not found (Debian package nftables)');
  return capability(problems);
}

// ------------------------------------------------------------------ addresses

/** Parses `192.0.2.x` or `192.0.2.x/prefix` (prefix 24..32), refusing anything outside TEST-NET-1. */
export function testNetAddress(value: string): { address: string; prefix: number; cidr: string } {
  const m = /^192\.0\.2\.(\d{1,3})(?:\/(\d{1,2}))?$/.exec(value);
  const host = m ? Number(m[1]) : NaN;
  const prefix = m?.[2] === undefined ? 24 : Number(m[2]);
  if (!m || host > 255 || prefix < 24 || prefix > 32) {
    throw new Error(`${value}: test sites use 192.0.2.0/24 (TEST-NET-1) only, with a prefix of /24 or longer`);
  }
  const address = `192.0.2.${host}`;
  return { address, prefix, cidr: `${address}/${prefix}` };
}

// ------------------------------------------------------------------ processes

export interface ProcessExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** A child process whose stdout and stderr are kept line by line. */
export interface ManagedProcess {
  /** A label for messages: the command's base name unless given. */
  readonly name: string;
  readonly process: ChildProcess;
  readonly pid: number;
  /** stdout and stderr lines as they arrived (interleaved), capped at the last 20,000. */
  readonly lines: readonly string[];
  readonly stdout: readonly string[];
  readonly stderr: readonly string[];
  /** Resolves once the process has exited (never rejects). */
  readonly exited: Promise<ProcessExit>;
  /** The exit, once known. */
  readonly exit: ProcessExit | undefined;
  /** Resolves with the first line (already seen or still to come) matching; rejects on exit or timeout. */
  waitForLine(pattern: RegExp, timeoutMs?: number): Promise<RegExpExecArray>;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves when it has exited. Idempotent. */
  kill(graceMs?: number): Promise<ProcessExit>;
}

export interface SpawnOptions {
  /** Run inside this network namespace (`ip netns exec`; the pid is still the command's own). */
  netns?: string;
  name?: string;
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Receives `[name] line` for every output line (e.g. console.error while debugging). */
  log?: (line: string) => void;
}

const MAX_LINES = 20_000;
/** Live processes and sites, so that an exiting test worker leaves nothing behind (installExitHook). */
const live = { processes: new Set<ManagedProcess>(), sites: new Set<string>() };
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // Last resort when a worker exits without destroy(): only synchronous work is possible here.
  process.on('exit', () => {
    for (const p of live.processes) {
      try {
        process.kill(p.pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
    for (const name of live.sites) sweepOneSync(name);
  });
}

/** Spawns a process (optionally inside a namespace) with its output kept line by line. */
export function spawnProcess(command: string, args: readonly string[], opts: SpawnOptions = {}): ManagedProcess {
  installExitHook();
  const [file, argv] = opts.netns ? ['ip', ['netns', 'exec', opts.netns, command, ...args]] : [command, [...args]];
  const name = opts.name ?? command.split('/').pop()!;
  const child = spawn(file, argv, { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  const stdout: string[] = [];
  const stderr: string[] = [];
  const waiters = new Set<() => void>();
  let exit: ProcessExit | undefined;
  let spawnError: Error | undefined;

  const keep = (into: string[], line: string) => {
    into.push(line);
    if (into.length > MAX_LINES) into.splice(0, into.length - MAX_LINES);
  };
  const collect = (stream: NodeJS.ReadableStream, into: string[]) => {
    createInterface({ input: stream, crlfDelay: Infinity }).on('line', (line) => {
      keep(into, line);
      keep(lines, line);
      opts.log?.(`[${name}] ${line}`);
      for (const w of [...waiters]) w();
    });
  };
  collect(child.stdout!, stdout);
  collect(child.stderr!, stderr);

  const exited = new Promise<ProcessExit>((resolve) => {
    child.once('error', (err) => {
      spawnError = err;
      exit = { code: null, signal: null };
      resolve(exit);
    });
    // 'close' (not 'exit'): every output line has been read by then.
    child.once('close', (code, signal) => {
      exit ??= { code, signal };
      resolve(exit);
    });
  }).then((e) => {
    live.processes.delete(managed);
    for (const w of [...waiters]) w();
    return e;
  });

  const tail = () => lines.slice(-15).join('\n');
  let killing: Promise<ProcessExit> | undefined;
  const managed: ManagedProcess = {
    name,
    process: child,
    pid: child.pid ?? -1,
    lines,
    stdout,
    stderr,
    exited,
    get exit() {
      return exit;
    },
    waitForLine(pattern, timeoutMs = 30_000) {
      return new Promise((resolve, reject) => {
        let seen = 0;
        const check = () => {
          for (; seen < lines.length; seen++) {
            pattern.lastIndex = 0;
            const m = pattern.exec(lines[seen]!);
            if (m) return done(() => resolve(m));
          }
          if (exit) {
            const why = spawnError ? `could not start: ${spawnError.message}` : `exited (${exit.code ?? exit.signal})`;
            done(() => reject(new Error(`${name} ${why} before printing ${pattern}; last lines:\n${tail()}`)));
          }
        };
        const timer = setTimeout(
          () => done(() => reject(new Error(`${name}: no line matching ${pattern} within ${timeoutMs} ms; last lines:\n${tail()}`))),
          timeoutMs,
        );
        const done = (settle: () => void) => {
          clearTimeout(timer);
          waiters.delete(check);
          settle();
        };
        waiters.add(check);
        // Lines are matched from the start: one printed before the call counts too.
        check();
      });
    },
    kill(graceMs = 2_000) {
      killing ??= (async () => {
        if (exit) return exit;
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
        const e = await exited;
        clearTimeout(timer);
        return e;
      })();
      return killing;
    },
  };
  if (child.pid !== undefined) live.processes.add(managed);
  return managed;
}

function run(file: string, args: readonly string[], input?: string): Promise<{ stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = execFile(file, [...args], { timeout: 30_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${[file, ...args].join(' ')} failed: ${stderr.trim() || err.message}`));
      else resolve({ stdout, stderr });
    });
    child.stdin?.end(input);
  });
}

// ----------------------------------------------------------------------- site

export interface SiteOptions {
  /** The bridge's own address; any 192.0.2.x/24 (or longer prefix). @default '192.0.2.1/24' */
  bridgeAddress?: string;
  /** Remove stale `bf-*` namespaces of dead test runs first. @default true */
  sweep?: boolean;
  /** Receives every output line of every process of the site, prefixed with its name. */
  log?: (line: string) => void;
}

export interface DhcpOptions {
  /** First and last address handed out. @default ['192.0.2.100', '192.0.2.199'] */
  range?: readonly [string, string];
  /** @default '1h' */
  leaseTime?: string;
  /** More dnsmasq options (e.g. `--dhcp-option=...`), appended as they are. */
  extraArgs?: readonly string[];
  /**
   * Run dnsmasq on a host of its own, as a real site's DHCP server is: a second
   * namespace `<site>-dhcp` joined to br0 by a veth pair, its interface `eth0` at
   * `address`. The site's own namespace then keeps UDP 67 free for a ProxyDHCP
   * server (in the same namespace, dnsmasq holds 0.0.0.0%br0:67 and another
   * socket can bind 67 only with SO_REUSEADDR). @default false
   */
  separateHost?: boolean;
  /** The DHCP host's address when `separateHost`. @default '192.0.2.2/24' */
  address?: string;
}

export interface DhcpServer extends ManagedProcess {
  readonly leaseFile: string;
  /** The namespace dnsmasq runs in: the site's, or `<site>-dhcp`. */
  readonly netns: string;
  /** Waits for dnsmasq's `DHCPACK(<interface>) <address> <mac>` for this MAC; resolves with the address. */
  waitForAck(mac: string, timeoutMs?: number): Promise<string>;
}

export interface CaptureOptions {
  /** @default 'br0' */
  dev?: string;
  /** The pcap file to write. */
  file: string;
  /** A pcap filter, e.g. 'udp port 67 or udp port 4011'. */
  filter?: string;
}

/**
 * Another machine on the site LAN: a namespace of its own joined to br0 by a veth
 * pair, its interface `eth0` at a fixed address. Several hosts can each run an
 * appliance, take over one another's addresses (`ip addr add` / `arping -U` inside
 * one), and have their link cut. Sysctls are the kernel's defaults.
 */
export interface Host {
  /** The short name given to addHost, [a-z0-9]{1,6}. */
  readonly name: string;
  /** Its namespace: `<site>-h<name>`, e.g. bf-abc123-ha. */
  readonly netns: string;
  /** The host's interface on the LAN. */
  readonly iface: 'eth0';
  /** The host's fixed address, without prefix. */
  readonly address: string;
  /** The bridge-side end of its veth pair, in the site's namespace: `vh-<name>`. */
  readonly port: string;
  /** Runs a command inside the host to completion; rejects with its stderr when it fails. */
  exec(command: string, args?: readonly string[], opts?: { input?: string }): Promise<{ stdout: string; stderr: string }>;
  /** Starts a long-running process inside the host; the site's destroy() kills it. */
  spawn(command: string, args?: readonly string[], opts?: Omit<SpawnOptions, 'netns'>): ManagedProcess;
  /** Starts a TypeScript or JavaScript entry point with this Node and tsx, inside the host (cwd: the repo). */
  spawnNode(entry: string, args?: readonly string[], opts?: Omit<SpawnOptions, 'netns'>): ManagedProcess;
  /**
   * Cuts (false) or restores (true) the host's link: sets the bridge-side end down
   * or up, so eth0 loses or regains its carrier as when a cable is pulled. Resolves
   * once eth0's operstate says so (not UP, or UP again).
   */
  setLink(up: boolean): Promise<void>;
  /** The IPv4 addresses on eth0 now (`ip -j -4 addr show dev eth0`), without prefix. */
  addresses(): Promise<string[]>;
}

export interface Site {
  /** The namespace: `bf-` and six random characters. */
  readonly name: string;
  readonly bridge: 'br0';
  /** The bridge's own address, without prefix, e.g. '192.0.2.1'. */
  readonly bridgeAddress: string;
  /** A temp folder for this site's files (leases, serial logs, firmware variables), removed by destroy(). */
  readonly dir: string;
  /** Adds a tap device on the bridge (`tap0`, `tap1`, … unless named) and returns its name. */
  addTap(name?: string): Promise<string>;
  /** Adds an address to br0 (appliances bind 192.0.2.10, .11, …); 192.0.2.0/24 only. */
  addAddress(address: string): Promise<void>;
  /** Runs a command inside the namespace to completion; rejects with its stderr when it fails. */
  exec(command: string, args?: readonly string[], opts?: { input?: string }): Promise<{ stdout: string; stderr: string }>;
  /** Starts a long-running process inside the namespace; destroy() kills it. */
  spawn(command: string, args?: readonly string[], opts?: Omit<SpawnOptions, 'netns'>): ManagedProcess;
  /** Starts a TypeScript or JavaScript entry point with this Node and tsx, inside the namespace (cwd: the repo). */
  spawnNode(entry: string, args?: readonly string[], opts?: Omit<SpawnOptions, 'netns'>): ManagedProcess;
  /**
   * Adds a host `name` ([a-z0-9]{1,6}) at `address` (192.0.2.x, or with a prefix
   * of /24 or longer): namespace `<site>-h<name>`, eth0 up at that address, its
   * veth end `vh-<name>` on br0. destroy() removes it with the site.
   */
  addHost(name: string, address: string): Promise<Host>;
  /**
   * Drops `percent` % of packets, independently in each direction, on everything the
   * namespace's own stack sends or receives (servers and clients inside it, and what
   * VMs exchange with them), or only on `dev` when given. 0 removes the loss.
   * nftables `numgen random`, since this kernel has no netem.
   */
  setPacketLoss(percent: number, opts?: { dev?: string }): Promise<void>;
  /** dnsmasq as the site's DHCP server: addresses only, no DNS, no boot options. */
  startDhcp(opts?: DhcpOptions): Promise<DhcpServer>;
  /**
   * tcpdump inside the namespace writing `file` (packet-buffered), resolved once it
   * listens; `kill()` it to finish the file. For golden captures of real clients.
   */
  capture(opts: CaptureOptions): Promise<ManagedProcess>;
  /** Kills every process the site started (and any other in the namespace), deletes it and its folder. Idempotent. */
  destroy(): Promise<void>;
}

function randomName(): string {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789';
  let s = '';
  for (let i = 0; i < 6; i++) s += alphabet[Math.floor(Math.random() * alphabet.length)];
  return NAME_PREFIX + s;
}

/** Creates a site namespace with `lo` up and `br0` up at its address. */
export async function createSite(opts: SiteOptions = {}): Promise<Site> {
  const bridge = testNetAddress(opts.bridgeAddress ?? '192.0.2.1/24');
  if (opts.sweep !== false) await sweepStaleSites();
  installExitHook();

  let name = randomName();
  while (existsSync(`/run/netns/${name}`)) name = randomName();
  const dir = await mkdtemp(join(tmpdir(), `bootfarm-${name}-`));
  await mkdir(OWNERS_DIR, { recursive: true });
  // The owner record comes first, so a namespace is never without one while its owner lives.
  await writeFile(join(OWNERS_DIR, `${name}.json`), JSON.stringify({ pid: process.pid, dir, created: new Date().toISOString() }));
  live.sites.add(name);

  const processes = new Set<ManagedProcess>();
  const hosts = new Set<string>();
  const ip = (...args: string[]) => run('ip', ['-n', name, ...args]);
  // The site and its hosts track their processes alike, so that destroy() kills them all.
  const spawnIn = (netns: string, command: string, args: readonly string[], spawnOpts: Omit<SpawnOptions, 'netns'>) => {
    if (destroying) throw new Error(`site ${name} is being destroyed`);
    const p = spawnProcess(command, args, { log: opts.log, ...spawnOpts, netns });
    processes.add(p);
    void p.exited.then(() => processes.delete(p));
    return p;
  };
  const spawnNodeIn = (netns: string, entry: string, args: readonly string[], spawnOpts: Omit<SpawnOptions, 'netns'>) =>
    spawnIn(netns, process.execPath, ['--import', 'tsx', entry, ...args], { cwd: REPO_ROOT, name: entry.split('/').pop(), ...spawnOpts });
  let taps = 0;
  let destroying: Promise<void> | undefined;
  let lossRules = false;

  const site: Site = {
    name,
    bridge: 'br0',
    bridgeAddress: bridge.address,
    dir,
    async addTap(tapName) {
      const tap = tapName ?? `tap${taps++}`;
      await ip('tuntap', 'add', 'dev', tap, 'mode', 'tap');
      await ip('link', 'set', tap, 'master', 'br0');
      await ip('link', 'set', tap, 'up');
      return tap;
    },
    async addAddress(address) {
      await ip('addr', 'add', testNetAddress(address).cidr, 'dev', 'br0');
    },
    exec(command, args = [], execOpts = {}) {
      return run('ip', ['netns', 'exec', name, command, ...args], execOpts.input);
    },
    spawn(command, args = [], spawnOpts = {}) {
      return spawnIn(name, command, args, spawnOpts);
    },
    spawnNode(entry, args = [], spawnOpts = {}) {
      return spawnNodeIn(name, entry, args, spawnOpts);
    },
    async addHost(hostName, address) {
      if (destroying) throw new Error(`site ${name} is being destroyed`);
      if (!HOST_NAME_PATTERN.test(hostName)) throw new Error(`${hostName}: a host name is 1 to 6 characters a-z, 0-9`);
      const addr = testNetAddress(address);
      if (hosts.has(hostName)) throw new Error(`site ${name} already has a host ${hostName}`);
      hosts.add(hostName);
      const netns = name + HOST_SUFFIX + hostName;
      const port = `vh-${hostName}`; // at most 9 characters (15 allowed)
      const hostIp = (...args: string[]) => run('ip', ['-n', netns, ...args]);
      try {
        await run('ip', ['netns', 'add', netns]);
        await hostIp('link', 'set', 'lo', 'up');
        await ip('link', 'add', port, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', netns);
        await ip('link', 'set', port, 'master', 'br0');
        await ip('link', 'set', port, 'up');
        await hostIp('addr', 'add', addr.cidr, 'dev', 'eth0');
        await hostIp('link', 'set', 'eth0', 'up');
      } catch (err) {
        // Deleting the namespace takes eth0 with it, and so its peer on the bridge.
        await deleteNamespace(netns).catch(() => {});
        hosts.delete(hostName);
        throw err;
      }
      const operstate = async () => {
        const { stdout } = await hostIp('-j', 'link', 'show', 'dev', 'eth0');
        return (JSON.parse(stdout) as { operstate?: string }[])[0]?.operstate ?? 'UNKNOWN';
      };
      const host: Host = {
        name: hostName,
        netns,
        iface: 'eth0',
        address: addr.address,
        port,
        exec(command, args = [], execOpts = {}) {
          return run('ip', ['netns', 'exec', netns, command, ...args], execOpts.input);
        },
        spawn(command, args = [], spawnOpts = {}) {
          return spawnIn(netns, command, args, spawnOpts);
        },
        spawnNode(entry, args = [], spawnOpts = {}) {
          return spawnNodeIn(netns, entry, args, spawnOpts);
        },
        async setLink(up) {
          await ip('link', 'set', port, up ? 'up' : 'down');
          // The carrier follows at once, but the operstate is the kernel's linkwatch
          // work, which may lag by up to a second: wait for it, so that a caller's
          // next step (a ping, an appliance noticing) sees the link as set.
          const deadline = Date.now() + 5_000;
          for (;;) {
            const state = await operstate();
            if ((state === 'UP') === up) return;
            if (Date.now() > deadline) throw new Error(`${netns}: eth0 still ${state} 5 s after setting ${port} ${up ? 'up' : 'down'}`);
            await new Promise((r) => setTimeout(r, 50));
          }
        },
        async addresses() {
          const { stdout } = await hostIp('-j', '-4', 'addr', 'show', 'dev', 'eth0');
          const links = JSON.parse(stdout) as { addr_info?: { local?: string }[] }[];
          return links.flatMap((l) => (l.addr_info ?? []).flatMap((a) => (a.local ? [a.local] : [])));
        },
      };
      return host;
    },
    async setPacketLoss(percent, lossOpts = {}) {
      if (!(percent >= 0 && percent <= 100)) throw new Error(`packet loss ${percent}: a percentage 0..100`);
      if (lossRules) await site.exec('nft', ['delete', 'table', 'inet', 'bootfarm_loss']);
      lossRules = false;
      if (percent === 0) return;
      const drop = `numgen random mod 1000 < ${Math.round(percent * 10)} drop`;
      const dev = lossOpts.dev;
      if (dev !== undefined && !/^[\w.-]{1,15}$/.test(dev)) throw new Error(`${dev}: not an interface name`);
      // Traffic between two sockets of the namespace crosses output and input once each:
      // count it on output only, so every packet is dropped with the same probability.
      const rules = dev
        ? [`chain out { type filter hook output priority 0; oifname "${dev}" ${drop}; }`,
           `chain in { type filter hook input priority 0; iifname "${dev}" iifname != "lo" ${drop}; }`]
        : [`chain out { type filter hook output priority 0; ${drop}; }`,
           `chain in { type filter hook input priority 0; iifname != "lo" ${drop}; }`];
      await site.exec('nft', ['-f', '-'], { input: `table inet bootfarm_loss {\n${rules.join('\n')}\n}\n` });
      lossRules = true;
    },
    async startDhcp(dhcpOpts = {}) {
      const [first, last] = (dhcpOpts.range ?? ['192.0.2.100', '192.0.2.199']).map((a) => testNetAddress(a).address);
      const leaseFile = join(dir, 'dnsmasq.leases');
      let netns = name;
      let iface = 'br0';
      if (dhcpOpts.separateHost) {
        const host = testNetAddress(dhcpOpts.address ?? '192.0.2.2/24');
        netns = name + DHCP_HOST_SUFFIX;
        iface = 'eth0';
        await run('ip', ['netns', 'add', netns]);
        await run('ip', ['-n', netns, 'link', 'set', 'lo', 'up']);
        await ip('link', 'add', 'vdhcp', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', netns);
        await ip('link', 'set', 'vdhcp', 'master', 'br0');
        await ip('link', 'set', 'vdhcp', 'up');
        await run('ip', ['-n', netns, 'addr', 'add', host.cidr, 'dev', 'eth0']);
        await run('ip', ['-n', netns, 'link', 'set', 'eth0', 'up']);
      }
      const p = spawnProcess(
        'dnsmasq',
        [
          '--no-daemon', // foreground, no pid file, no change of user, logs to stderr
          '--conf-file=/dev/null',
          '--port=0', // no DNS
          `--interface=${iface}`,
          '--bind-interfaces',
          `--dhcp-range=${first},${last},${dhcpOpts.leaseTime ?? '1h'}`,
          `--dhcp-leasefile=${leaseFile}`,
          '--log-dhcp',
          '--log-facility=-',
          ...(dhcpOpts.extraArgs ?? []),
        ],
        { name: 'dnsmasq', netns, ...(opts.log ? { log: opts.log } : {}) },
      );
      processes.add(p);
      void p.exited.then(() => processes.delete(p));
      await p.waitForLine(/DHCP, IP range|started, version/, 10_000);
      return Object.assign(p, {
        leaseFile,
        netns,
        async waitForAck(mac: string, timeoutMs = 60_000) {
          const escaped = mac.toLowerCase().replace(/[^0-9a-f:]/g, '');
          const m = await p.waitForLine(new RegExp(`DHCPACK\\(${iface}\\) (192\\.0\\.2\\.\\d+) ${escaped}`), timeoutMs);
          return m[1]!;
        },
      });
    },
    async capture(captureOpts) {
      const p = site.spawn('tcpdump', ['-i', captureOpts.dev ?? 'br0', '-U', '-n', '-w', captureOpts.file, ...(captureOpts.filter ? [captureOpts.filter] : [])], {
        name: 'tcpdump',
      });
      await p.waitForLine(/listening on/, 10_000);
      return p;
    },
    destroy() {
      destroying ??= (async () => {
        await Promise.all([...processes].map((p) => p.kill()));
        await sweepOne(name);
        live.sites.delete(name);
      })();
      return destroying;
    },
  };

  try {
    await run('ip', ['netns', 'add', name]);
    await ip('link', 'set', 'lo', 'up');
    // STP off: a new tap forwards at once instead of listening for 15 s first.
    await ip('link', 'add', 'br0', 'type', 'bridge', 'stp_state', '0', 'forward_delay', '0');
    await ip('addr', 'add', bridge.cidr, 'dev', 'br0');
    await ip('link', 'set', 'br0', 'up');
  } catch (err) {
    await site.destroy();
    throw err;
  }
  return site;
}

// ---------------------------------------------------------------------- sweep

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function ownerOf(name: string): { pid: number; dir?: string } | undefined {
  try {
    return JSON.parse(readFileSync(join(OWNERS_DIR, `${name}.json`), 'utf8'));
  } catch {
    return undefined;
  }
}

function namespaceNames(): string[] {
  try {
    return readdirSync('/run/netns');
  } catch {
    return [];
  }
}

/** A site's companion namespaces (`-dhcp`, `-h<name>`) first, as they hang off its bridge, then its own. */
function namespacesOf(name: string): string[] {
  return [...namespaceNames().filter((n) => COMPANION_PATTERN.exec(n)?.[1] === name), name];
}

async function sweepOne(name: string): Promise<void> {
  for (const ns of namespacesOf(name)) await deleteNamespace(ns);
  const owner = ownerOf(name);
  if (owner?.dir?.includes('bootfarm-')) await rm(owner.dir, { recursive: true, force: true });
  await rm(join(OWNERS_DIR, `${name}.json`), { force: true });
}

async function deleteNamespace(name: string): Promise<void> {
  // Whatever still runs inside (a process spawned by hand, an orphan of a killed worker).
  if (existsSync(`/run/netns/${name}`)) {
    const { stdout } = await run('ip', ['netns', 'pids', name]).catch(() => ({ stdout: '' }));
    for (const pid of stdout.split(/\s+/).filter(Boolean).map(Number)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    // Deleting while a killed process still holds the namespace works: the kernel frees it last.
    await run('ip', ['netns', 'delete', name]).catch((err) => {
      if (existsSync(`/run/netns/${name}`)) throw err;
    });
  }
}

function sweepOneSync(name: string): void {
  for (const ns of namespacesOf(name)) deleteNamespaceSync(ns);
  const owner = ownerOf(name);
  if (owner?.dir?.includes('bootfarm-')) rmSync(owner.dir, { recursive: true, force: true });
  rmSync(join(OWNERS_DIR, `${name}.json`), { force: true });
}

function deleteNamespaceSync(name: string): void {
  if (!existsSync(`/run/netns/${name}`)) return;
  try {
    const pids = execFileSync('ip', ['netns', 'pids', name], { encoding: 'utf8', timeout: 5_000 });
    for (const pid of pids.split(/\s+/).filter(Boolean).map(Number)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    execFileSync('ip', ['netns', 'delete', name], { stdio: 'ignore', timeout: 5_000 });
  } catch {
    /* the sweep of a later run finishes the job */
  }
}

/** Names of the sites' namespaces on this machine (`bf-xxxxxx`; a site's `-dhcp` and `-h<name>` hosts come with it). */
export function listSiteNamespaces(): string[] {
  // An orphaned DHCP host or host counts as its site, so that the sweep removes it.
  return [...new Set(namespaceNames().map((n) => COMPANION_PATTERN.exec(n)?.[1] ?? n))].filter((n) => NAME_PATTERN.test(n));
}

/**
 * Deletes `bf-*` namespaces left by earlier runs (their owner process is gone, or
 * they have no owner record and are older than `minAgeMs`), killing what still
 * runs inside them. Sites of live test workers are left alone. Returns the names removed.
 */
export async function sweepStaleSites(opts: { minAgeMs?: number } = {}): Promise<string[]> {
  const removed: string[] = [];
  for (const name of listSiteNamespaces()) {
    if (live.sites.has(name)) continue;
    const owner = ownerOf(name);
    if (owner && owner.pid !== process.pid && isAlive(owner.pid)) continue;
    if (!owner) {
      // The site's own namespace says its age, or else (already gone) one of its companions.
      const stat = namespacesOf(name).reverse().map((ns) => statSync(`/run/netns/${ns}`, { throwIfNoEntry: false })).find(Boolean);
      if (!stat || Date.now() - stat.mtimeMs < (opts.minAgeMs ?? 60_000)) continue;
    }
    await sweepOne(name);
    removed.push(name);
  }
  return removed;
}
