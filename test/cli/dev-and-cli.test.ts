/**
 * `npm start` as a user runs it: the real `bootfarm dev` process with its
 * DynamoDB Local and s3rver, driven by the real `bootfarm` CLI processes.
 */
import { spawn, spawnSync, execFile, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';

const run = promisify(execFile);
const BIN = join(import.meta.dirname, '../../bin/bootfarm.js');

interface Dev {
  proc: ChildProcess;
  lines: string[];
  api: string;
  token: string;
}

async function startDev(dataDir: string, env: NodeJS.ProcessEnv): Promise<Dev> {
  const proc = spawn(process.execPath, [BIN, 'dev', '--port', '0', '--appliance-port', '0', '--data-dir', dataDir], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  let buf = '';
  proc.stdout!.on('data', (d) => {
    buf += d;
    const parts = buf.split('\n');
    buf = parts.pop()!;
    lines.push(...parts);
  });
  proc.stderr!.on('data', (d) => lines.push(`stderr: ${d}`));
  const deadline = Date.now() + 60_000;
  while (!lines.some((l) => l.startsWith('Ctrl-C'))) {
    if (proc.exitCode !== null) throw new Error(`bootfarm dev exited ${proc.exitCode}:\n${lines.join('\n')}`);
    if (Date.now() > deadline) throw new Error(`bootfarm dev did not come up:\n${lines.join('\n')}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const api = lines.find((l) => l.startsWith('API: '))!.slice(5);
  const token = lines.find((l) => l.startsWith('Admin token: '))!.slice(13);
  return { proc, lines, api, token };
}

async function stopDev(dev: Dev): Promise<number | null> {
  const exited = new Promise<number | null>((r) => dev.proc.once('exit', (code) => r(code)));
  dev.proc.kill('SIGINT');
  return exited;
}

describe('bootfarm dev and the CLI', () => {
  let dir: string;
  let env: NodeJS.ProcessEnv;
  let dev: Dev;
  const cli = async (...args: string[]) => {
    try {
      const r = await run(process.execPath, [BIN, ...args], { env });
      return { code: 0, stdout: r.stdout, stderr: r.stderr };
    } catch (e) {
      const x = e as { code: number; stdout: string; stderr: string };
      return { code: x.code, stdout: x.stdout, stderr: x.stderr };
    }
  };

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'bootfarm-dev-'));
    env = { ...process.env, BOOTFARM_CONFIG: join(dir, 'cli.json'), BOOTFARM_API: '', BOOTFARM_TOKEN: '' };
    delete env.BOOTFARM_API;
    delete env.BOOTFARM_TOKEN;
    dev = await startDev(join(dir, 'data'), env);
  }, 90_000);

  afterAll(async () => {
    if (dev?.proc.exitCode === null) await stopDev(dev);
    await rm(dir, { recursive: true, force: true });
  });

  test('prints the API URL as the first URL, then an admin token, and seeds a demo farm', async () => {
    const firstUrlLine = dev.lines.find((l) => /https?:\/\//.test(l));
    expect(firstUrlLine).toMatch(/^API: http:\/\/127\.0\.0\.1:\d+$/);
    expect(dev.token).toMatch(/^bft_[a-z2-7]{16}_[A-Za-z0-9_-]{43}$/);
    const res = await fetch(`${dev.api}/v1/sites`, { headers: { authorization: `Bearer ${dev.token}` } });
    expect(res.status).toBe(200);
    const sites = (await res.json()) as { items: { name: string; defaultCollectionId: string }[] };
    expect(sites.items.map((s) => s.name)).toEqual(['Default']);
    expect(sites.items[0]!.defaultCollectionId).toMatch(/^col_/);
    expect((await stat(join(dir, 'data', 'admin-token'))).mode & 0o777).toBe(0o600);
  });

  test('the CLI config written by dev lets the CLI work with no flags (file mode 0600)', async () => {
    expect((await stat(join(dir, 'cli.json'))).mode & 0o777).toBe(0o600);
    const r = await cli('site', 'list');
    expect(r.code).toBe(0);
    expect(r.stdout.split('\n')[0]).toMatch(/^ID\s+NAME\s+PROXYDHCP/);
    expect(r.stdout).toContain('Default');
  });

  test('bootfarm login --api URL --token T checks them and writes a config the CLI then uses', async () => {
    const other = join(dir, 'login.json');
    const loginEnv = { ...env, BOOTFARM_CONFIG: other };
    const as = (...args: string[]) =>
      run(process.execPath, [BIN, ...args], { env: loginEnv }).then(
        (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
        (e) => e as { code: number; stdout: string; stderr: string },
      );
    const bad = await as('login', '--api', dev.api, '--token', 'bft_aaaaaaaaaaaaaaaa_nope');
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toContain('token is unknown, revoked or expired');
    await expect(stat(other)).rejects.toThrow();
    const ok = await as('login', '--api', `${dev.api}/`, '--token', dev.token);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toMatch(/^logged in to farm "/);
    expect((await stat(other)).mode & 0o777).toBe(0o600);
    expect(JSON.parse(await readFile(other, 'utf8'))).toEqual({ api: dev.api, token: dev.token });
    const list = await as('site', 'list');
    expect(list.stdout).toContain('Default');
    const missing = await as('login', '--api', dev.api);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('login needs --api <url> and --token <token>');
  });

  test('CLI creates objects by name and prints tables, or JSON with --json', async () => {
    expect((await cli('vdisk', 'create', 'win11', '--store', 'Default', '--size', '64G')).code).toBe(0);
    const t = await cli('target', 'create', '52-54-00-AA-00-01', '--name', 'pc-0001', '--collection', 'Default', '--vdisk', 'win11', '--set', 'personality=[{"name":"role","value":"kiosk"}]');
    expect(t.stderr).toBe('');
    expect(t.stdout).toContain('52:54:00:aa:00:01');
    const list = await cli('target', 'list', '--collection', 'Default');
    expect(list.stdout).toMatch(/52:54:00:aa:00:01\s+pc-0001/);
    const json = JSON.parse((await cli('--json', 'target', 'show', 'pc-0001')).stdout);
    expect(json).toMatchObject({ mac: '52:54:00:aa:00:01', name: 'pc-0001', personality: [{ name: 'role', value: 'kiosk' }] });
    expect(json.assignments).toHaveLength(1);
  });

  test('CLI updates with If-Match from the object it read', async () => {
    const r = await cli('--json', 'site', 'update', 'Default', '--set', 'bootstrap.pollingTimeoutMs=8000', '--set', 'proxyDhcp.enabled=true');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ bootstrap: { pollingTimeoutMs: 8000 }, proxyDhcp: { enabled: true }, version: 3 });
  });

  test('API errors are one clear line on stderr and a non-zero exit', async () => {
    const dup = await cli('target', 'create', '52:54:00:aa:00:01', '--name', 'pc-0002', '--collection', 'Default');
    expect(dup.code).toBe(1);
    expect(dup.stderr.trim()).toBe('bootfarm: mac: target 52:54:00:aa:00:01 already exists (HTTP 409 already_exists)');
    const bad = await cli('site', 'update', 'Default', '--set', 'bootstrap.pollingTimeoutMs=70000');
    expect(bad.code).toBe(1);
    expect(bad.stderr.trim()).toBe('bootfarm: bootstrap.pollingTimeoutMs: must be between 1000 and 60000 ms (HTTP 400 validation_failed)');
    const inUse = await cli('vdisk', 'delete', 'win11');
    expect(inUse.code).toBe(1);
    expect(inUse.stderr).toMatch(/still used by 1 target/);
    const unknown = await cli('site', 'show', 'Nowhere');
    expect(unknown.code).toBe(2);
    expect(unknown.stderr.trim()).toBe('bootfarm: no site named "Nowhere"');
    const noToken = await cli('--token', 'bft_aaaaaaaaaaaaaaaa_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx', 'site', 'list');
    expect(noToken.code).toBe(1);
    expect(noToken.stderr).toMatch(/HTTP 401/);
  });

  test('token create prints a token once that works with its role', async () => {
    const r = await cli('token', 'create', '--role', 'read-only', '--name', 'auditor');
    expect(r.code).toBe(0);
    const token = r.stdout.split('\n')[0]!;
    expect(token).toMatch(/^bft_/);
    const ok = await cli('--token', token, 'target', 'list');
    expect(ok.code).toBe(0);
    const denied = await cli('--token', token, 'site', 'create', 'Branch');
    expect(denied.code).toBe(1);
    expect(denied.stderr).toMatch(/HTTP 403 forbidden/);
    expect((await cli('token', 'list')).stdout).toMatch(/auditor\s+read-only/);
  });

  test('vdisk push prints one JSON result and no progress with --json, and status lines without', async () => {
    const img = join(dir, 'cli.raw');
    const { writeFile } = await import('node:fs/promises');
    const data = Buffer.alloc(8 * 2 ** 20);
    data.fill(7, 0, 2 ** 20);
    await writeFile(img, data);
    const r = await cli('--json', 'vdisk', 'push', '--store', 'Default', '--name', 'clidisk', img);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    expect(JSON.parse(r.stdout)).toMatchObject({ vdiskCreated: true, versionCreated: true, chunks: 2, zeroChunks: 1, uploadedChunks: 1, version: { number: 0, state: 'production' } });
    const again = await cli('vdisk', 'push', '--store', 'Default', '--name', 'clidisk', img);
    expect(again.stdout).toMatch(/^unchanged: version 0 of clidisk already has this content\n2 chunks of 4 MiB: 0 uploaded/);
  });

  test('runs a local appliance of the Default site that pulls the snapshot', async () => {
    const line = dev.lines.find((l) => l.startsWith('Appliance: '))!;
    expect(line).toMatch(/^Appliance: local-appliance-[0-9a-f]{4} \(app_[a-z2-7]{16}\) http:\/\/127\.0\.0\.1:\d+\/healthz$/);
    const health = await (await fetch(line.split(' ').pop()!)).json();
    expect(health).toMatchObject({ status: 'ok', snapshot: { source: 'control-plane' }, controlPlane: { reachable: true } });
    const apps = await cli('appliance', 'list');
    expect(apps.stdout).toMatch(/local-appliance-/);
  });

  test.skipIf(spawnSync('qemu-system-x86_64', ['--version']).status !== 0)('npm run demo:boot boots a VM from the local appliance and prints the demo disk\'s message', async () => {
    expect(dev.lines).toContain('Demo: vDisk "demo" and target demo-vm (52:54:00:12:34:56); boot it with npm run demo:boot');
    const appliance = dev.lines.find((l) => l.startsWith('Appliance: '))!.split(' ').pop()!.replace(/\/healthz$/, '');
    const r = await cli('demo', 'boot', '--appliance', appliance, '--timeout', '120');
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/the VM booted the demo vDisk in [\d.]+ s and printed: Hello from the bootfarm demo vDisk/);
  }, 150_000);

  test('an admin enrols an appliance with a one-time token; its config is checked at start', async () => {
    const tok = await cli('token', 'create', '--role', 'appliance-enrol', '--site', 'Default');
    expect(tok.code).toBe(0);
    expect(tok.stdout).toMatch(/role appliance-enrol, site site_[a-z2-7]{16}, one use, expires /);
    const secret = tok.stdout.split('\n')[0]!;
    const appDir = join(dir, 'app2');
    const args = ['--api', dev.api, '--token', secret, 'appliance', 'install', '--data-dir', appDir, '--name', 'branch-01', '--address', '127.0.0.1', '--port', '0', '--min-free', '0', '--no-systemd'];
    const inst = await cli(...args);
    expect(inst.stderr).toBe('');
    expect(inst.stdout).toMatch(/^enrolled appliance branch-01 \(app_[a-z2-7]{16}\) in site site_/);
    expect(inst.stdout).toContain('credential: ');
    expect((await stat(join(appDir, 'credential'))).mode & 0o777).toBe(0o600);
    // The token is spent; the data dir is taken.
    const again = await cli(...args.map((a) => (a === appDir ? join(dir, 'app3') : a)));
    expect(again.code).toBe(2);
    expect(again.stderr).toMatch(/enrolment refused .*token is unknown, revoked or expired/);
    expect((await cli('appliance', 'list')).stdout).toMatch(/branch-01/);

    // A bad value in the config stops start-up and names the field.
    const { writeFile } = await import('node:fs/promises');
    const configPath = join(appDir, 'appliance.json');
    const good = await readFile(configPath, 'utf8');
    await writeFile(configPath, JSON.stringify({ ...JSON.parse(good), intervals: { heartbeatMs: 5 } }));
    const bad = await cli('appliance', 'run', '--data-dir', appDir);
    expect(bad.code).toBe(2);
    expect(bad.stderr.trim()).toBe(`bootfarm: ${configPath}: intervals.heartbeatMs: must be between 1000 and 300000 ms`);
    // This appliance runs on the test machine itself: no DHCP or TFTP ports, NBD and HA heartbeats on any free port (the dev appliance has 10809 and 7947).
    await writeFile(configPath, JSON.stringify({ ...JSON.parse(good), boot: { proxyDhcp: { enabled: false }, tftp: { enabled: false } }, nbd: { host: '127.0.0.1', port: 0 }, ha: { host: '127.0.0.1', port: 0 } }));

    // With a good config it runs, pulls its site's snapshot and reports its heartbeat.
    const proc = spawn(process.execPath, [BIN, 'appliance', 'run', '--data-dir', appDir], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    try {
      let out = '';
      proc.stdout!.on('data', (d) => (out += d));
      const deadline = Date.now() + 30_000;
      while (!out.includes('"snapshot updated"') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      const listening = out.split('\n').map((l) => (l ? JSON.parse(l) : {})).find((l) => l.msg === 'appliance listening');
      const health = await (await fetch(`${listening.url}/healthz`)).json();
      expect(health).toMatchObject({ name: 'branch-01', status: 'ok' });
      const shown = await cli('--json', 'appliance', 'show', 'branch-01');
      const deadline2 = Date.now() + 15_000;
      let app = JSON.parse(shown.stdout);
      while (!app.lastHeartbeat && Date.now() < deadline2) {
        await new Promise((r) => setTimeout(r, 250));
        app = JSON.parse((await cli('--json', 'appliance', 'show', 'branch-01')).stdout);
      }
      expect(app.status).toMatchObject({ sessions: 0, offlineSince: null });
    } finally {
      proc.kill('SIGTERM');
    }
  }, 60_000);

  test('Ctrl-C stops everything; a second start finds the same farm and token', async () => {
    const javaPid = await childJavaPids(dev.proc.pid!);
    expect(javaPid.length).toBe(1);
    expect(await stopDev(dev)).toBe(0);
    for (const pid of javaPid) expect(alive(pid)).toBe(false);
    dev = await startDev(join(dir, 'data'), env);
    expect(dev.lines.join('\n')).not.toContain('seeded');
    const again = await readFile(join(dir, 'data', 'admin-token'), 'utf8');
    expect(dev.token).toBe(again.trim());
    const res = await fetch(`${dev.api}/v1/targets/52-54-00-aa-00-01`, { headers: { authorization: `Bearer ${dev.token}` } });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ name: 'pc-0001' });
    const list = await cli('--json', 'site', 'show', 'Default');
    expect(JSON.parse(list.stdout).bootstrap.pollingTimeoutMs).toBe(8000);
  }, 90_000);
});

async function childJavaPids(parent: number): Promise<number[]> {
  const { stdout } = await run('ps', ['-o', 'pid=,comm=', '--ppid', String(parent)]);
  return stdout
    .split('\n')
    .filter((l) => l.includes('java'))
    .map((l) => Number(l.trim().split(/\s+/)[0]));
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !s.split(' ')[2]!.startsWith('Z');
  } catch {
    return false;
  }
}
