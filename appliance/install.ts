/**
 * `bootfarm appliance install`: checks the box, trades a one-time enrolment
 * token for the appliance's own credential, writes the config and the
 * credential (0600), and installs a systemd unit that restarts on failure.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rm, statfs, writeFile } from 'node:fs/promises';
import { hostname, networkInterfaces } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { writeFileAtomic } from './fs-atomic.js';
import { CONFIG_FILE, CREDENTIAL_FILE, isHttpsOrLoopback, parseConfig, type ApplianceConfig } from './config.js';
import { SNAPSHOT_FILE } from './snapshot-store.js';

export const UNIT_NAME = 'bootfarm-appliance.service';
/** First-stage files the Debian `ipxe` package provides (issue 5 serves them over TFTP). */
export const BOOTSTRAP_FILES = ['undionly.kpxe', 'ipxe.pxe', 'snponly.efi', 'ipxe.efi'];
export const MIN_NODE = [20, 19] as const;
export const DEFAULT_MIN_FREE_BYTES = 10 * 2 ** 30;

export interface Prerequisites {
  problems: string[];
  notes: string[];
}

/** Whether a program is on PATH (or in the sbin folders systemd's PATH has). */
function onPath(binary: string): boolean {
  return [...(process.env.PATH ?? '').split(':'), '/usr/sbin', '/sbin', '/usr/bin', '/bin'].some((d) => d && existsSync(join(d, binary)));
}

export async function checkPrerequisites(o: { dataDir: string; bootstrapDir: string; minFreeBytes: number; nodeVersion?: string; floating?: boolean }): Promise<Prerequisites> {
  const problems: string[] = [];
  const notes: string[] = [];
  // A floating address is added with ip and announced with arping (gratuitous ARP).
  if (o.floating) for (const [bin, pkg] of [['ip', 'iproute2'], ['arping', 'iputils-arping']]) if (!onPath(bin!)) problems.push(`site HA needs ${bin} (apt-get install ${pkg})`);
  const [major = 0, minor = 0] = (o.nodeVersion ?? process.versions.node).split('.').map(Number);
  if (major < MIN_NODE[0] || (major === MIN_NODE[0] && minor < MIN_NODE[1])) problems.push(`Node.js ${MIN_NODE.join('.')} or newer is required (this is ${o.nodeVersion ?? process.versions.node})`);
  const missing = BOOTSTRAP_FILES.filter((f) => !existsSync(join(o.bootstrapDir, f)));
  if (missing.length === BOOTSTRAP_FILES.length) problems.push(`no iPXE bootstrap files in ${o.bootstrapDir}: install the Debian package ipxe (apt-get install ipxe) or pass --bootstrap-dir`);
  else if (missing.length) notes.push(`${o.bootstrapDir} lacks ${missing.join(', ')}: targets needing them cannot PXE boot from this appliance`);
  // The data dir may not exist yet: measure the nearest existing parent.
  let dir = resolve(o.dataDir);
  while (!existsSync(dir) && dirname(dir) !== dir) dir = dirname(dir);
  const fs = await statfs(dir);
  const free = fs.bavail * fs.bsize;
  if (free < o.minFreeBytes) problems.push(`${dir} has ${gib(free)} free; the vDisk cache needs at least ${gib(o.minFreeBytes)} (--min-free to change)`);
  else notes.push(`${gib(free)} free in ${dir} for the vDisk cache`);
  return { problems, notes };
}

const gib = (n: number) => `${(n / 2 ** 30).toFixed(1)} GiB`;

/** The first non-internal IPv4 address: what peers and the console use to reach the appliance. */
export function defaultAddress(): string | null {
  for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  return null;
}

/** An appliance name from the host name: the API's name rules (letters, digits, . _ -). */
export function defaultName(): string {
  return (hostname().split('.')[0] ?? 'appliance').replace(/[^A-Za-z0-9._-]/g, '-').replace(/^[^A-Za-z0-9]+/, '').slice(0, 63) || 'appliance';
}

export function systemdUnit(o: { nodePath: string; cliPath: string; dataDir: string; siteName?: string }): string {
  return `# Installed by bootfarm appliance install
[Unit]
Description=bootfarm appliance${o.siteName ? ` (${o.siteName})` : ''}: vDisk cache, boot services and streaming for its site
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
ExecStart=${o.nodePath} ${o.cliPath} appliance run --data-dir ${o.dataDir}
# Floating addresses never outlive the daemon, however it ended (its own guard does the same).
ExecStopPost=${o.nodePath} ${o.cliPath} appliance release-addresses --data-dir ${o.dataDir}
Restart=on-failure
RestartSec=2
# Boot services bind privileged ports (DHCP 67, TFTP 69, HTTP 80) and take over peer addresses on failover.
AmbientCapabilities=CAP_NET_BIND_SERVICE CAP_NET_ADMIN CAP_NET_RAW
NoNewPrivileges=true
ProtectSystem=strict
ProtectHome=true
PrivateTmp=true
ReadWritePaths=${o.dataDir}
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
`;
}

export interface InstallOptions {
  apiUrl: string;
  token: string;
  dataDir: string;
  name?: string;
  managementAddress?: string;
  streamingAddresses?: string[];
  /** Site HA: this appliance's floating address (see model/appliance.ts). */
  floatingAddress?: string;
  /** Site HA: the interface floating addresses go on. */
  haInterface?: string;
  httpPort?: number;
  httpHost?: string;
  bootstrapDir: string;
  minFreeBytes: number;
  systemd: boolean;
  systemdDir?: string;
  /** Whether to run systemctl (only when systemd is the running init). */
  startService?: boolean;
  nodePath?: string;
  cliPath: string;
  /** Enrol again over an existing installation's credential. */
  force?: boolean;
  /** Enrol over plain http with a control plane that is not on loopback (labs without TLS). */
  allowInsecureHttp?: boolean;
  /** `warn`: report missing prerequisites as notes instead of refusing (the local dev farm). */
  prerequisites?: 'require' | 'warn';
  fetchImpl?: typeof fetch;
}

export interface InstallResult {
  config: ApplianceConfig;
  configPath: string;
  credentialPath: string;
  unitPath: string | null;
  notes: string[];
}

export class InstallError extends Error {
  override name = 'InstallError';
}

export async function install(o: InstallOptions): Promise<InstallResult> {
  const dataDir = resolve(o.dataDir);
  const pre = await checkPrerequisites({ dataDir, bootstrapDir: o.bootstrapDir, minFreeBytes: o.minFreeBytes, floating: Boolean(o.floatingAddress) });
  if (pre.problems.length && o.prerequisites !== 'warn') throw new InstallError(`cannot install:\n  - ${pre.problems.join('\n  - ')}`);
  const credentialPath = join(dataDir, CREDENTIAL_FILE);
  const configPath = join(dataDir, CONFIG_FILE);
  if (existsSync(credentialPath) && !o.force) {
    const existing = await readFile(configPath, 'utf8').then((t) => JSON.parse(t) as { name?: string; applianceId?: string }).catch(() => ({}) as { name?: string; applianceId?: string });
    throw new InstallError(`${dataDir} already holds an enrolled appliance${existing.name ? ` (${existing.name}, ${existing.applianceId})` : ''}: use --force to enrol again, or another --data-dir`);
  }
  const managementAddress = o.managementAddress ?? defaultAddress();
  if (!managementAddress) throw new InstallError('no IPv4 address found for this appliance: pass --address');
  const apiUrl = o.apiUrl.replace(/\/+$/, '');
  const name = o.name ?? defaultName();
  // The enrolment answer carries the keys the appliance will trust: it must not come over a path anyone can change.
  if (!o.allowInsecureHttp && !isHttpsOrLoopback(apiUrl)) throw new InstallError(`${apiUrl}: enrol over https (the answer holds the farm keys this appliance will trust), or pass --allow-insecure-http`);

  const res = await (o.fetchImpl ?? fetch)(`${apiUrl}/v1/appliances/enrol`, {
    method: 'POST',
    headers: { authorization: `Bearer ${o.token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ name, managementAddress, streamingAddresses: o.streamingAddresses ?? [managementAddress], ...(o.floatingAddress ? { floatingAddress: o.floatingAddress } : {}) }),
  }).catch((e: Error & { cause?: { code?: string } }) => {
    throw new InstallError(`cannot reach ${apiUrl}: ${e.cause?.code ?? e.message}`);
  });
  const body = (await res.json().catch(() => null)) as { appliance?: { id: string; siteId: string; name: string }; token?: string; signingKeys?: unknown; error?: { message: string } } | null;
  if (!res.ok || !body?.appliance || !body.token) throw new InstallError(`enrolment refused by ${apiUrl}: ${body?.error?.message ?? `HTTP ${res.status}`}`);

  const config = parseConfig(
    {
      apiUrl,
      applianceId: body.appliance.id,
      siteId: body.appliance.siteId,
      name: body.appliance.name,
      signingKeys: body.signingKeys,
      http: { host: o.httpHost ?? '0.0.0.0', port: o.httpPort ?? 80 },
      bootstrapDir: o.bootstrapDir,
      allowInsecureHttp: Boolean(o.allowInsecureHttp),
      ...(o.haInterface ? { ha: { interface: o.haInterface } } : {}),
    },
    'enrolment answer',
  );
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  // A new identity: the old one's snapshot (maybe of another site) and undelivered events go. The chunk cache stays: it is checked by hash.
  const notes = [...pre.problems.map((p) => `warning: ${p}`), ...pre.notes];
  if (o.force) {
    for (const old of [join(dataDir, SNAPSHOT_FILE), join(dataDir, 'outbox')]) if (existsSync(old)) {
      await rm(old, { recursive: true, force: true });
      notes.push(`removed ${old} of the previous enrolment`);
    }
  }
  await writeFileAtomic(credentialPath, `${body.token}\n`, 0o600);
  await writeFileAtomic(configPath, `${JSON.stringify(config, null, 2)}\n`, 0o600);

  let unitPath: string | null = null;
  if (o.systemd) {
    const dir = o.systemdDir ?? '/etc/systemd/system';
    unitPath = join(dir, UNIT_NAME);
    await mkdir(dir, { recursive: true });
    await writeFile(unitPath, systemdUnit({ nodePath: o.nodePath ?? process.execPath, cliPath: o.cliPath, dataDir }), { mode: 0o644 });
    const systemdRunning = existsSync('/run/systemd/system');
    if ((o.startService ?? true) && systemdRunning) {
      const run = promisify(execFile);
      await run('systemctl', ['daemon-reload']);
      await run('systemctl', ['enable', '--now', UNIT_NAME]);
      notes.push(`${UNIT_NAME} enabled and started`);
    } else notes.push(systemdRunning ? `start it with: systemctl enable --now ${UNIT_NAME}` : `systemd is not running here: start the appliance with bootfarm appliance run --data-dir ${dataDir}`);
  }
  return { config, configPath, credentialPath, unitPath, notes };
}
