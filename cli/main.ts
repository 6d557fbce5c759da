/**
 * `bootfarm`: one CLI for the whole farm. Only this file reads flags and
 * the environment; commands talk to the API with a token like any client.
 */
import { Command, CommanderError, Option } from 'commander';
import { fileURLToPath } from 'node:url';
import { ROLES } from '../model/auth.js';
import { normalizeMac } from '../model/mac.js';
import { ApiClient, ApiError } from './client.js';
import { configPath, readConfig, resolveConnection, writeConfig } from './config.js';
import { UsageError, parseAssignments, parseSize, show, table, type Column } from './output.js';
import { replicationTable } from './replication-table.js';

type Row = Record<string, any>;
type Out = { log: (s: string) => void; err: (s: string) => void };

const ID = /^[a-z]{2,4}_[a-z2-7]{16}$/;

interface KindCli {
  name: string;
  path: string;
  plural: string;
  columns: Column<Row>[];
  /** Positional arguments and options of `create`, and how they make the request body. */
  create: { args: string[]; options: [flags: string, description: string][]; body(args: string[], opts: Row, c: ApiClient): Promise<Row> };
  /** List filters: option flag -> [query parameter, kind the value names]. */
  filters?: Record<string, [param: string, kind: string]>;
}

const KINDS: Record<string, KindCli> = {
  site: {
    name: 'site',
    path: '/sites',
    plural: 'sites',
    columns: [['id', (r) => r.id], ['name', (r) => r.name], ['proxydhcp', (r) => (r.proxyDhcp.enabled ? 'on' : 'off')], ['bootstrap', (r) => r.bootstrap.servers.map((s: Row) => `${s.address}:${s.port}`)], ['description', (r) => r.description]],
    create: { args: ['name'], options: [], body: async ([name]) => ({ name }) },
  },
  appliance: {
    name: 'appliance',
    path: '/appliances',
    plural: 'appliances',
    columns: [['id', (r) => r.id], ['name', (r) => r.name], ['site', (r) => r.siteId], ['address', (r) => r.managementAddress], ['power', (r) => r.powerRating], ['max', (r) => r.maxTargets], ['heartbeat', (r) => r.lastHeartbeat]],
    create: {
      args: ['name'],
      options: [['--site <site>', 'site (name or id)'], ['--address <host>', 'management address']],
      body: async ([name], o, c) => ({ name, siteId: await resolve(c, 'site', need(o.site, '--site')), managementAddress: need(o.address, '--address') }),
    },
    filters: { site: ['siteId', 'site'] },
  },
  store: {
    name: 'store',
    path: '/stores',
    plural: 'stores',
    columns: [['id', (r) => r.id], ['name', (r) => r.name], ['s3 prefix', (r) => r.s3Prefix], ['description', (r) => r.description]],
    create: { args: ['name'], options: [['--prefix <s3prefix>', 'S3 prefix (default stores/<name>/)']], body: async ([name], o) => ({ name, ...(o.prefix ? { s3Prefix: o.prefix } : {}) }) },
  },
  vdisk: {
    name: 'vdisk',
    path: '/vdisks',
    plural: 'vdisks',
    columns: [['id', (r) => r.id], ['name', (r) => r.name], ['store', (r) => r.storeId], ['size', (r) => humanSize(r.sizeBytes)], ['mode', (r) => r.accessMode], ['write cache', (r) => r.writeCacheType]],
    create: {
      args: ['name'],
      options: [['--store <store>', 'store (name or id)'], ['--size <size>', 'size, e.g. 64G']],
      body: async ([name], o, c) => ({ name, storeId: await resolve(c, 'store', need(o.store, '--store')), sizeBytes: parseSize(need(o.size, '--size')) }),
    },
    filters: { store: ['storeId', 'store'] },
  },
  collection: {
    name: 'collection',
    path: '/collections',
    plural: 'collections',
    columns: [['id', (r) => r.id], ['name', (r) => r.name], ['site', (r) => r.siteId], ['template', (r) => r.templateTargetMac], ['auto-add', (r) => `${r.autoAdd.prefix}${'#'.repeat(r.autoAdd.numberLength)}${r.autoAdd.suffix}`]],
    create: { args: ['name'], options: [['--site <site>', 'site (name or id)']], body: async ([name], o, c) => ({ name, siteId: await resolve(c, 'site', need(o.site, '--site')) }) },
    filters: { site: ['siteId', 'site'] },
  },
  target: {
    name: 'target',
    path: '/targets',
    plural: 'targets',
    columns: [['mac', (r) => r.mac], ['name', (r) => r.name], ['collection', (r) => r.collectionId], ['type', (r) => r.type], ['boot', (r) => r.bootFrom], ['vdisks', (r) => r.assignments.map((a: Row) => a.vdiskId)], ['disabled', (r) => (r.disabled ? 'yes' : '')]],
    create: {
      args: ['mac'],
      options: [['--name <name>', 'computer name (<= 15 characters)'], ['--collection <collection>', 'collection (name or id)'], ['--vdisk <vdisk>', 'vDisk to assign (name or id)']],
      body: async ([mac], o, c) => ({
        mac,
        name: need(o.name, '--name'),
        collectionId: await resolve(c, 'collection', need(o.collection, '--collection')),
        ...(o.vdisk ? { assignments: [{ vdiskId: await resolve(c, 'vdisk', o.vdisk) }] } : {}),
      }),
    },
    filters: { collection: ['collectionId', 'collection'], site: ['siteId', 'site'] },
  },
};

function need(v: unknown, flag: string): string {
  if (typeof v !== 'string' || !v) throw new UsageError(`${flag} is required`);
  return v;
}

function humanSize(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1 && n % 1024 === 0) {
    n /= 1024;
    i++;
  }
  return `${n} ${units[i]}`;
}

/** Turns a name or id (a MAC for targets) into the id the API uses. */
async function resolve(c: ApiClient, kind: string, ref: string): Promise<string> {
  if (kind === 'target') {
    const mac = normalizeMac(ref);
    if (mac) return mac;
  } else if (ID.test(ref)) return ref;
  const spec = KINDS[kind]!;
  const matches = (await c.all<Row>(`/v1${spec.path}`)).filter((r) => String(r.name).toLowerCase() === ref.toLowerCase());
  if (matches.length === 0) throw new UsageError(`no ${kind} named "${ref}"`);
  if (matches.length > 1) throw new UsageError(`${matches.length} ${spec.plural} are named "${ref}": use an id (${matches.map((m) => m.id).join(', ')})`);
  return matches[0]!.id;
}

export async function main(argv: string[], out: Out = { log: (s) => console.log(s), err: (s) => console.error(s) }): Promise<number> {
  const program = new Command('bootfarm')
    .description('bootfarm: stream operating systems to diskless machines (a serverless successor to Citrix PVS)')
    .option('--api <url>', 'control-plane API URL (env BOOTFARM_API)')
    .option('--token <token>', 'API token (env BOOTFARM_TOKEN)')
    .option('--json', 'machine-readable JSON output')
    .exitOverride()
    .configureOutput({ writeOut: (s) => out.log(s.trimEnd()), writeErr: (s) => out.err(s.trimEnd()) })
    .showHelpAfterError();

  const g = () => program.opts<{ api?: string; token?: string; json?: boolean }>();
  const client = async () => {
    const conn = await resolveConnection(g());
    return new ApiClient(conn.api, conn.token);
  };
  const print = (value: unknown, human: () => string) => out.log(g().json ? JSON.stringify(value, null, 2) : human());

  program
    .command('dev')
    .description('run a whole local farm: DynamoDB Local, S3 (s3rver) and the API on loopback')
    .option('--port <port>', 'API port (0 = any free port)', '7070')
    .option('--host <host>', 'API address', '127.0.0.1')
    .option('--data-dir <dir>', 'where the local farm keeps its data (env BOOTFARM_DATA_DIR)')
    .option('--no-seed', 'do not create the demo site, store and collection')
    .option('--no-configure-cli', 'do not point the CLI config at this farm')
    .option('--appliance-port <port>', 'HTTP port of the local appliance', '7071')
    .option('--no-appliance', 'do not run a local appliance')
    .action(async (o) => {
      const { runDev } = await import('../functions/local/dev.js');
      await runDev({
        port: Number(o.port),
        host: o.host,
        dataDir: o.dataDir ?? process.env.BOOTFARM_DATA_DIR ?? '.bootfarm',
        seed: o.seed,
        appliancePort: o.appliance ? Number(o.appliancePort) : null,
        log: out.log,
        onReady: async ({ api, token }) => {
          if (!o.configureCli) return;
          const path = configPath();
          const current = await readConfig(path).catch(() => ({ api: undefined }));
          if (current.api && !isLoopback(current.api)) return out.log(`CLI: left ${path} alone (it points at ${current.api})`);
          await writeConfig(path, { api, token });
          out.log(`CLI: ${path} now points at this farm; try \`npx bootfarm site list\``);
        },
      });
    });

  program
    .command('login')
    .description('check the API URL and token, and save them in the CLI config file: bootfarm login --api URL --token TOKEN')
    .action(async () => {
      // --api and --token are the program's own options (like appliance install): a second definition here would never see them.
      const { api, token } = g();
      if (!api || !token) throw new UsageError('login needs --api <url> and --token <token>');
      const c = new ApiClient(api.replace(/\/+$/, ''), token);
      const farm = (await c.get('/v1/farm')).body;
      await writeConfig(configPath(), { api: api.replace(/\/+$/, ''), token });
      out.log(`logged in to farm "${farm.name}" (revision ${farm.revision}); saved ${configPath()}`);
    });

  const farm = program.command('farm').description('farm settings (PVS: Farm Properties)');
  farm.command('show').action(async () => {
    const r = (await (await client()).get('/v1/farm')).body;
    print(r, () => show(r));
  });
  farm
    .command('update')
    .option('--set <path=value>', 'a setting, e.g. maxVersions=8 or autoAdd.enabled=true (repeatable)', collect, [])
    .action(async (o) => {
      const c = await client();
      const cur = await c.get('/v1/farm');
      const r = (await c.request('PATCH', '/v1/farm', parseAssignments(o.set), { 'if-match': cur.etag ?? '*' })).body;
      print(r, () => show(r));
    });

  for (const spec of Object.values(KINDS)) addKind(program, spec, client, print, out);

  const version = program.commands.find((c) => c.name() === 'vdisk')!.command('version').description('vDisk versions: list, create, promote, revert, delete');
  version.command('list <vdisk>').action(async (vdisk) => {
    const c = await client();
    const id = await resolve(c, 'vdisk', vdisk);
    const r = (await c.get(`/v1/vdisks/${id}/versions`)).body;
    print(r.items, () => table(r.items as Row[], [['version', (v) => v.number], ['parent', (v) => v.parent], ['state', (v) => v.state], ['created', (v) => v.createdAt], ['promoted', (v) => v.promotedAt], ['description', (v) => v.description]]));
  });
  version
    .command('create <vdisk>')
    .option('--description <text>', 'what changes in this version')
    .action(async (vdisk, o) => {
      const c = await client();
      const id = await resolve(c, 'vdisk', vdisk);
      const r = (await c.request('POST', `/v1/vdisks/${id}/versions`, o.description ? { description: o.description } : {})).body;
      print(r, () => `created version ${r.number} of ${id} (maintenance)`);
    });
  for (const [verb, help] of [['promote', 'maintenance -> test -> production'], ['revert', 'production -> test -> maintenance']] as const) {
    version
      .command(`${verb} <vdisk> <number>`)
      .description(help)
      .option('--to <state>', verb === 'promote' ? 'test or production (default: the next state)' : 'test or maintenance (default: the previous state)')
      .action(async (vdisk, number, o) => {
        const c = await client();
        const id = await resolve(c, 'vdisk', vdisk);
        const cur = await c.get(`/v1/vdisks/${id}/versions/${number}`);
        const order = ['maintenance', 'test', 'production'];
        const at = order.indexOf(cur.body.state);
        const to = o.to ?? order[verb === 'promote' ? at + 1 : at - 1];
        if (!to || at < 0) throw new UsageError(`version ${number} is ${cur.body.state}: nothing to ${verb} to`);
        const r = (await c.request('PATCH', `/v1/vdisks/${id}/versions/${number}`, { state: to }, { 'if-match': cur.etag ?? '*' })).body;
        print(r, () => `version ${r.number} of ${id}: ${cur.body.state} -> ${r.state}`);
      });
  }
  version.command('delete <vdisk> <number>').action(async (vdisk, number) => {
    const c = await client();
    const id = await resolve(c, 'vdisk', vdisk);
    await c.request('DELETE', `/v1/vdisks/${id}/versions/${number}`);
    print({ deleted: `${id}.${number}` }, () => `deleted version ${number} of ${id}`);
  });

  const targetCmd = program.commands.find((c) => c.name() === 'target')!;
  targetCmd.description(`${targetCmd.description()}, reset-cache`);
  targetCmd
    .command('reset-cache <mac-or-name>')
    .description("empty the target's persistent write cache at its next boot (PVS: reset a cache on server persistent)")
    .action(async (ref) => {
      const c = await client();
      const mac = await resolve(c, 'target', ref);
      const r = (await c.request('POST', `/v1/targets/${encodeURIComponent(mac)}/write-cache/reset`)).body;
      print(r, () => `write cache of target ${r.name} (${r.mac}) will be emptied at its next boot`);
    });

  const vdiskCmd = program.commands.find((c) => c.name() === 'vdisk')!;
  vdiskCmd
    .command('push <files...>')
    .description('upload a raw, VHD or VHDX image (or a differencing chain, base first) as a new version; creates the vDisk if needed')
    .requiredOption('--store <store>', 'store (name or id)')
    .requiredOption('--name <name>', 'vDisk name')
    .addOption(new Option('--state <state>', 'state of the new version (default: production for a new vDisk, else maintenance)').choices(['maintenance', 'test', 'production']))
    .option('--description <text>', 'what this version changes')
    .option('--concurrency <n>', 'chunks uploaded at once', '4')
    .action(async (files: string[], o) => {
      const c = await client();
      const { pushImage, progressBar } = await import('./push.js');
      const tty = !g().json && process.stderr.isTTY;
      const r = await pushImage(c, {
        storeId: await resolve(c, 'store', o.store),
        name: o.name,
        files,
        state: o.state,
        description: o.description,
        concurrency: Number(o.concurrency),
        onProgress: tty ? progressBar((s) => process.stderr.write(s)) : undefined,
      });
      const v = r.version as Row;
      print(r, () =>
        [
          r.versionCreated ? `pushed ${o.name} version ${v.number} (${v.state})` : `unchanged: version ${v.number} of ${o.name} already has this content`,
          `${r.chunks} chunks of ${humanSize(r.chunkSize)}: ${r.uploadedChunks} uploaded (${humanSize(r.uploadedBytes)}), ${r.reusedChunks} already in the farm, ${r.zeroChunks} all-zero; ${r.seconds.toFixed(1)} s`,
        ].join('\n'),
      );
    });
  vdiskCmd
    .command('status <vdisk>')
    .description('replication status: which appliance holds which version (ok, missing, 42%, CORRUPT, offline) and which versions are pending')
    .action(async (vdisk) => {
      const c = await client();
      const id = await resolve(c, 'vdisk', vdisk);
      const r = (await c.get(`/v1/vdisks/${id}/replication`)).body;
      print(r, () => replicationTable(r));
    });
  vdiskCmd
    .command('merge <vdisk>')
    .description('make a new base version from a version (default: the newest test/production one); older versions become merged')
    .option('--version <n>', 'version to merge')
    .addOption(new Option('--state <state>', 'state of the new base').choices(['maintenance', 'test', 'production']).default('production'))
    .action(async (vdisk, o) => {
      const c = await client();
      const id = await resolve(c, 'vdisk', vdisk);
      const r = (await c.request('POST', `/v1/vdisks/${id}/merge`, { ...(o.version !== undefined ? { version: Number(o.version) } : {}), state: o.state })).body;
      print(r, () => `merged: version ${r.number} of ${id} is the new base (${r.state})`);
    });
  program
    .command('image')
    .description('make vDisks from operating system packages')
    .command('build-linux')
    .description('build a diskless Debian vDisk (kernel and initramfs inside, root streamed over NBD; images/linux/README.md) and optionally push it. Runs as root')
    .option('--out <file>', 'write the raw image here (default: it stays in the cache)')
    .option('--cache-dir <dir>', 'debootstrapped roots and built images, kept between builds', '.bootfarm/cache/linux')
    .option('--size <MiB>', 'image size', '512')
    .option('--suite <suite>', 'Debian suite', 'bookworm')
    .option('--mirror <url>', 'Debian mirror', 'http://deb.debian.org/debian')
    .option('--package <name>', 'extra Debian package in the root (repeatable), e.g. systemd-sysv', collect, [])
    .option('--kernel-version <v>', 'kernel installed here to use (/boot/vmlinuz-V, /lib/modules/V; default: the newest)')
    .option('--init <path>', "the root's init (default: the login-less check; /sbin/init with --package systemd-sysv)")
    .option('--cmdline <text>', "the image's kernel command line before bootfarm's parameters", 'console=ttyS0,115200 panic=30')
    .option('--release <text>', 'first line of /etc/bootfarm-release')
    .option('--store <store>', 'push the image to this store (name or id) ...')
    .option('--name <name>', '... as this vDisk (created if needed; set its writeCacheType with vdisk update)')
    .addOption(new Option('--state <state>', 'state of the pushed version').choices(['maintenance', 'test', 'production']))
    .action(async (o) => {
      if (Boolean(o.store) !== Boolean(o.name)) throw new UsageError('--store and --name go together (push the image as vDisk NAME of store STORE)');
      const { buildLinuxImage, BuildError } = await import('../images/linux/build.js');
      let r;
      try {
        r = await buildLinuxImage({
          cacheDir: o.cacheDir,
          ...(o.out ? { out: o.out } : {}),
          sizeMiB: Number(o.size),
          suite: o.suite,
          mirror: o.mirror,
          packages: o.package,
          ...(o.kernelVersion ? { kernelVersion: o.kernelVersion } : {}),
          ...(o.init ? { init: o.init } : {}),
          cmdline: o.cmdline,
          ...(o.release ? { release: o.release } : {}),
          log: g().json ? undefined : (l) => out.err(l),
        });
      } catch (e) {
        if (e instanceof BuildError) throw new UsageError(e.message);
        throw e;
      }
      const mib = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;
      const lines = [
        `${r.reused ? 'image from the cache' : `image built in ${r.seconds.toFixed(0)} s`}: ${r.path}`,
        `${mib(r.sizeBytes)} raw (sparse); kernel ${r.kernelVersion} ${mib(r.kernelBytes)}, initramfs ${mib(r.initrdBytes)}, root files ${mib(r.rootBytes)}`,
        `release: ${r.release}`,
      ];
      let pushed: unknown = null;
      if (o.store) {
        const c = await client();
        const { pushImage } = await import('./push.js');
        const p = await pushImage(c, { storeId: await resolve(c, 'store', o.store), name: o.name, files: [r.path], state: o.state, description: `bootfarm image build-linux ${r.key}` });
        pushed = p;
        const v = p.version as Row;
        lines.push(p.versionCreated ? `pushed ${o.name} version ${v.number} (${v.state}): ${p.uploadedChunks} chunks uploaded, ${p.reusedChunks} already in the farm` : `unchanged: version ${v.number} of ${o.name} already has this content`);
      }
      print({ image: r, push: pushed }, () => lines.join('\n'));
    });

  program
    .command('gc')
    .description('delete vDisk chunks that no version or open upload uses')
    .option('--grace-seconds <n>', 'keep chunks younger than this', '3600')
    .action(async (o) => {
      const r = (await (await client()).request('POST', '/v1/gc', { graceSeconds: Number(o.graceSeconds) })).body;
      print(r, () => `scanned ${r.scanned} chunks in ${r.manifests} manifests: deleted ${r.deleted} (${humanSize(r.deletedBytes)}), kept ${r.keptYoung} young`);
    });

  const applianceCmd = program.commands.find((c) => c.name() === 'appliance')!;
  applianceCmd
    .command('install')
    .description('enrol this machine as an appliance of a site and install its systemd unit')
    .addHelpText('after', '\nNeeds --api <url> and --token <one-time enrolment token from: bootfarm token create --role appliance-enrol --site S>.')
    .option('--data-dir <dir>', 'where the appliance keeps its config, credential and vDisk cache', '/var/lib/bootfarm')
    .option('--name <name>', 'appliance name (default: the host name)')
    .option('--address <ip>', 'management address peers and the console use (default: the first IPv4 address)')
    .option('--streaming-address <ip>', 'address targets stream from (repeatable; default: the management address)', collect, [])
    .option('--floating-address <ip>', 'site HA: an IPv4 address no machine has, that this appliance serves on and a peer adopts when it goes silent')
    .option('--ha-interface <name>', 'site HA: the LAN interface floating addresses go on (default: the one holding --address)')
    .option('--port <port>', 'HTTP port of the appliance (health, metrics, peers, boot scripts)', '80')
    .option('--listen <host>', 'address the HTTP service binds', '0.0.0.0')
    .option('--bootstrap-dir <dir>', 'iPXE bootstrap files (Debian package ipxe)', '/usr/lib/ipxe')
    .option('--min-free <GiB>', 'free disk required for the vDisk cache', '10')
    .option('--no-systemd', 'do not install the systemd unit')
    .option('--systemd-dir <dir>', 'where the unit goes', '/etc/systemd/system')
    .option('--force', 'enrol again over an existing installation (drops its snapshot and undelivered events; keeps the vDisk cache)')
    .option('--allow-insecure-http', 'enrol with a control plane over plain http that is not on loopback (labs only)')
    .action(async (o) => {
      const { install, InstallError } = await import('../appliance/install.js');
      // --api and --token are the program's own options (bootfarm appliance install --api URL --token T).
      const { api, token: enrolToken } = g();
      if (!api || !enrolToken) throw new UsageError('appliance install needs --api <url> and --token <enrolment token>');
      try {
        const r = await install({
          apiUrl: api,
          token: enrolToken,
          dataDir: o.dataDir,
          name: o.name,
          managementAddress: o.address,
          streamingAddresses: o.streamingAddress.length ? o.streamingAddress : undefined,
          ...(o.floatingAddress ? { floatingAddress: o.floatingAddress } : {}),
          ...(o.haInterface ? { haInterface: o.haInterface } : {}),
          httpPort: Number(o.port),
          httpHost: o.listen,
          bootstrapDir: o.bootstrapDir,
          minFreeBytes: Number(o.minFree) * 2 ** 30,
          systemd: o.systemd,
          systemdDir: o.systemdDir,
          cliPath: fileURLToPath(new URL('../bin/bootfarm.js', import.meta.url)),
          force: Boolean(o.force),
          allowInsecureHttp: Boolean(o.allowInsecureHttp),
        });
        print({ ...r, config: r.config }, () =>
          [`enrolled appliance ${r.config.name} (${r.config.applianceId}) in site ${r.config.siteId}`, `config: ${r.configPath}`, `credential: ${r.credentialPath} (0600)`, ...(r.unitPath ? [`unit: ${r.unitPath}`] : []), ...r.notes].join('\n'),
        );
      } catch (e) {
        if (e instanceof InstallError) throw new UsageError(e.message);
        throw e;
      }
    });
  applianceCmd
    .command('run')
    .description('run the appliance daemon in the foreground (what the systemd unit calls)')
    .option('--data-dir <dir>', 'the appliance data folder', '/var/lib/bootfarm')
    .option('--log-level <level>', 'override the configured log level')
    .action(async (o) => {
      const { runAppliance } = await import('../appliance/run.js');
      const { ConfigError } = await import('../appliance/config.js');
      try {
        await runAppliance({ dataDir: o.dataDir, logLevel: o.logLevel, handleSignals: true });
      } catch (e) {
        if (e instanceof ConfigError) throw new UsageError(e.message);
        throw e;
      }
      await new Promise(() => undefined);
    });

  applianceCmd
    .command('release-addresses')
    .description("remove the floating addresses a stopped appliance may have left (the systemd unit's ExecStopPost; the appliance's own guard does it too)")
    .option('--data-dir <dir>', 'the appliance data folder', '/var/lib/bootfarm')
    .action(async (o) => {
      const { releaseState } = await import('../appliance/ha/addresses.js');
      const { join } = await import('node:path');
      const gone = await releaseState(join(o.dataDir, 'floating-addresses'), (level, msg, fields) => out.log(`${level}: ${msg} ${JSON.stringify(fields ?? {})}`));
      print({ released: gone }, () => (gone.length ? `released ${gone.join(', ')}` : 'no floating address to release'));
    });

  program
    .command('demo')
    .description('demos of the local farm')
    .command('boot')
    .description('boot a QEMU VM as the demo target from the local appliance (npm start first; needs qemu-system-x86)')
    .option('--appliance <url>', 'the local appliance', 'http://127.0.0.1:7071')
    .option('--timeout <seconds>', 'give up after', '180')
    .action(async (o) => {
      const { demoBoot, DemoError } = await import('./demo.js');
      try {
        const r = await demoBoot({ applianceUrl: o.appliance.replace(/\/+$/, ''), timeoutMs: Number(o.timeout) * 1000, log: out.log });
        out.log(`the VM booted the demo vDisk in ${r.seconds.toFixed(1)} s and printed: ${r.message}`);
      } catch (e) {
        if (e instanceof DemoError) throw new Error(e.message);
        throw e;
      }
    });

  const token = program.command('token').description('API tokens (farm admins)');
  token
    .command('create')
    .addOption(new Option('--role <role>', 'role').choices([...ROLES]).makeOptionMandatory())
    .option('--site <site>', 'limit the token to one site (required for site-admin and appliance-enrol)')
    .option('--name <name>', 'who or what uses the token')
    .option('--expires <time>', 'ISO 8601 expiry time')
    .action(async (o) => {
      const c = await client();
      const body = { role: o.role, name: o.name ?? `${o.role}-${new Date().toISOString().slice(0, 10)}`, siteId: o.site ? await resolve(c, 'site', o.site) : null, expiresAt: o.expires ?? null };
      const r = (await c.request('POST', '/v1/tokens', body)).body;
      print(r, () => `${r.token}\n(token ${r.id}, role ${r.role}${r.siteId ? `, site ${r.siteId}` : ''}${r.role === 'appliance-enrol' ? `, one use, expires ${r.expiresAt}` : ''}: shown once, store it now)`);
    });
  program
    .command('cloud')
    .description('a farm deployed to AWS with `cdk deploy` (docs/deploy.md)')
    .command('first-token')
    .description("create the farm's first farm-admin token, straight in the farm table, with your AWS credentials (run once after the first deploy; the stack's FirstTokenCommand output has the arguments)")
    .requiredOption('--table <name>', 'the farm table (stack output TableName)')
    .requiredOption('--region <region>', 'the stack\'s AWS region')
    .option('--name <name>', 'who uses the token', 'first-admin')
    .option('--expires <time>', 'ISO 8601 expiry time (default: never; revoke it once you have named tokens)')
    .option('--force', 'create one even though the farm has usable farm-admin tokens')
    .action(async (o) => {
      if (o.expires !== undefined && Number.isNaN(Date.parse(o.expires))) throw new UsageError(`--expires ${o.expires}: not an ISO 8601 time`);
      if (o.expires !== undefined && Date.parse(o.expires) <= Date.now()) throw new UsageError(`--expires ${o.expires}: is in the past`);
      const { dynamoRepo } = await import('../functions/storage/clients.js');
      const { createFirstToken, FarmAlreadyHasAdmin } = await import('./first-token.js');
      const { hostname, userInfo } = await import('node:os');
      const repo = dynamoRepo({ region: o.region }, o.table);
      let user: string;
      try {
        user = userInfo().username;
      } catch {
        // A container user with no passwd entry.
        user = process.env.USER ?? `uid ${process.getuid?.() ?? '?'}`;
      }
      try {
        const r = await createFirstToken({ repo, name: o.name, expiresAt: o.expires ? new Date(o.expires).toISOString() : null, operator: `${user}@${hostname()}`, now: new Date(), force: !!o.force });
        print({ token: r.secret, id: r.token.id, role: r.token.role, name: r.token.name, expiresAt: r.token.expiresAt }, () =>
          `${r.secret}\n(token ${r.token.id}, farm-admin, "${r.token.name}": shown once, store it now)\nnext: bootfarm login --api <ApiUrl output> --token <the token above>`,
        );
      } catch (e) {
        if (e instanceof FarmAlreadyHasAdmin) throw new UsageError(e.message);
        const name = (e as { name?: string }).name;
        if (name === 'ResourceNotFoundException') throw new UsageError(`no table "${o.table}" in ${o.region}: check the stack's TableName output and --region`);
        if (name === 'CredentialsProviderError') throw new UsageError(`no AWS credentials: this command writes the table with your own AWS credentials (AWS_PROFILE, aws sso login, ...)`);
        if (name === 'AccessDeniedException') throw new UsageError(`your AWS credentials may not read or write table "${o.table}" (${(e as Error).message}): use the role you deployed the stack with`);
        if (name === 'UnrecognizedClientException' || name === 'ExpiredTokenException' || name === 'InvalidSignatureException')
          throw new UsageError(`AWS refused your credentials (${name}): refresh them (aws sso login, new session) and run again`);
        throw e;
      }
    });

  token.command('list').action(async () => {
    const rows = await (await client()).all('/v1/tokens');
    print(rows, () => table(rows, [['id', (t) => t.id], ['name', (t) => t.name], ['role', (t) => t.role], ['site', (t) => t.siteId], ['expires', (t) => t.expiresAt], ['created', (t) => t.createdAt]]));
  });
  token.command('revoke <id>').action(async (id) => {
    await (await client()).request('DELETE', `/v1/tokens/${encodeURIComponent(id)}`);
    print({ revoked: id }, () => `revoked token ${id}`);
  });

  program
    .command('audit')
    .description('the audit trail, newest first')
    .option('--type <kind>', 'object type, e.g. target')
    .option('--object <id>', 'object id (with --type)')
    .option('--actor <name>', 'token name or id')
    .option('--from <time>', 'ISO 8601')
    .option('--to <time>', 'ISO 8601')
    .option('--limit <n>', 'records', '50')
    .action(async (o) => {
      const q = new URLSearchParams({ limit: o.limit });
      for (const [k, v] of [['objectType', o.type], ['objectId', o.object], ['actor', o.actor], ['from', o.from], ['to', o.to]]) if (v) q.set(k!, v);
      const r = (await (await client()).get(`/v1/audit?${q}`)).body;
      print(r.items, () =>
        table(r.items as Row[], [['time', (a) => a.at], ['who', (a) => a.actor.name], ['action', (a) => a.action], ['object', (a) => `${a.objectType} ${a.objectId}`], ['changes', (a) => a.changes.map((ch: Row) => `${ch.property}: ${JSON.stringify(ch.old)} -> ${JSON.stringify(ch.new)}`).join('; ')]]),
      );
    });

  try {
    await program.parseAsync(argv, { from: 'user' });
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : 2;
    if (e instanceof UsageError) {
      out.err(`bootfarm: ${e.message}`);
      return 2;
    }
    if (e instanceof ApiError) {
      out.err(`bootfarm: ${e.message}${e.status ? ` (HTTP ${e.status} ${e.code})` : ''}`);
      return 1;
    }
    out.err(`bootfarm: ${(e as Error).message}`);
    return 1;
  }
}

function isLoopback(url: string): boolean {
  try {
    const h = new URL(url).hostname;
    return h === 'localhost' || h.startsWith('127.') || h === '[::1]';
  } catch {
    return false;
  }
}

function collect(v: string, prev: string[]) {
  return [...prev, v];
}

function addKind(program: Command, spec: KindCli, client: () => Promise<ApiClient>, print: (v: unknown, human: () => string) => void, out: Out) {
  const cmd = program.command(spec.name).description(`${spec.plural}: list, show, create, update, delete`);
  const ref = spec.name === 'target' ? '<mac-or-name>' : `<${spec.name}>`;
  const list = cmd.command('list').description(`list ${spec.plural}`);
  for (const flag of Object.keys(spec.filters ?? {})) list.option(`--${flag} <${flag}>`, `only ${spec.plural} of this ${flag} (name or id)`);
  list.action(async (o) => {
    const c = await client();
    const q = new URLSearchParams();
    for (const [flag, [param, kind]] of Object.entries(spec.filters ?? {})) if (o[flag]) q.set(param, await resolve(c, kind, o[flag]));
    const rows = await c.all<Row>(`/v1${spec.path}${q.size ? `?${q}` : ''}`);
    rows.sort((a, b) => String(a.name).localeCompare(String(b.name)));
    print(rows, () => (rows.length ? table(rows, spec.columns) : `no ${spec.plural}`));
  });

  cmd.command(`show ${ref}`).action(async (r) => {
    const c = await client();
    const o = (await c.get(`/v1${spec.path}/${encodeURIComponent(await resolve(c, spec.name, r))}`)).body;
    print(o, () => show(o));
  });

  const create = cmd.command(`create ${spec.create.args.map((a) => `<${a}>`).join(' ')}`).description(`create a ${spec.name}`);
  for (const [flags, help] of spec.create.options) create.option(flags, help);
  create
    .option('--set <path=value>', 'any other field, e.g. description="Lab PCs" (repeatable)', collect, [])
    .option('--file <json>', 'the whole request body from a JSON file')
    .action(async (...a: unknown[]) => {
      const args = a.slice(0, spec.create.args.length) as string[];
      const o = a[spec.create.args.length] as Row;
      const c = await client();
      const fromFile = o.file ? JSON.parse(await (await import('node:fs/promises')).readFile(o.file, 'utf8')) : {};
      const body = { ...fromFile, ...(await spec.create.body(args, o, c)), ...parseAssignments(o.set) };
      const r = (await c.request('POST', `/v1${spec.path}`, body)).body;
      print(r, () => `created ${spec.name} ${r.name ?? ''} (${r.id})`.replace('  ', ' '));
    });

  cmd
    .command(`update ${ref}`)
    .description(`change fields of a ${spec.name}`)
    .option('--set <path=value>', 'field to change, e.g. bootstrap.verbose=true (repeatable)', collect, [])
    .action(async (r, o) => {
      if (!o.set.length) throw new UsageError('nothing to change: give --set path=value');
      const c = await client();
      const path = `/v1${spec.path}/${encodeURIComponent(await resolve(c, spec.name, r))}`;
      const cur = await c.get(path);
      const res = (await c.request('PATCH', path, parseAssignments(o.set), { 'if-match': cur.etag ?? '*' })).body;
      print(res, () => show(res));
    });

  cmd.command(`delete ${ref}`).action(async (r) => {
    const c = await client();
    const id = await resolve(c, spec.name, r);
    await c.request('DELETE', `/v1${spec.path}/${encodeURIComponent(id)}`);
    print({ deleted: id }, () => `deleted ${spec.name} ${id}`);
  });
}
