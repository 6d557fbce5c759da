/**
 * `bootfarm image build-linux` as an administrator runs it: the real CLI
 * process builds the Debian vDisk (or takes it from the cache the Linux
 * target test shares) and pushes it to a farm with the existing push path.
 * Needs root and the Debian tools, like the build itself.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testFarm, type TestFarm } from '../support/farm.js';
import { expectStatus, fixtures } from '../support/fixtures.js';
import { serveFarm } from '../support/serve.js';

const run = promisify(execFile);
const REPO = fileURLToPath(new URL('../..', import.meta.url));
const BIN = join(REPO, 'bin/bootfarm.js');
const CACHE = process.env.BOOTFARM_IMAGE_CACHE ?? join(REPO, '.bootfarm/cache/linux');
const tools = ['debootstrap', 'mkfs.ext4', 'cpio', 'gcc', 'busybox'].filter((t) => !['/usr/sbin', '/usr/bin', '/sbin', '/bin'].some((d) => existsSync(join(d, t))));
const why = process.getuid?.() !== 0 ? 'not root' : tools.length ? `missing ${tools.join(', ')}` : null;

const cli = (args: string[], env: NodeJS.ProcessEnv = process.env) =>
  run(process.execPath, [BIN, ...args], { env, maxBuffer: 16 * 2 ** 20 }).then(
    (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
    (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
  );

describe('bootfarm image build-linux', () => {
  it('wants --store and --name together', async () => {
    const r = await cli(['image', 'build-linux', '--store', 'Default']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--store and --name go together');
  });

  describe.skipIf(why !== null)(`building and pushing${why ? ` (skipped: ${why})` : ''}`, () => {
    let farm: TestFarm;
    let api: Awaited<ReturnType<typeof serveFarm>>;
    let dir: string;
    beforeAll(async () => {
      farm = await testFarm();
      api = await serveFarm(farm);
      dir = await mkdtemp(join(tmpdir(), 'bootfarm-build-linux-'));
    });
    afterAll(async () => {
      await api?.close();
      await rm(dir, { recursive: true, force: true });
    });

    it('writes the image where asked and pushes it as a production version of a new vDisk', async () => {
      const store = await fixtures(farm).store({ name: 'images' });
      const out = join(dir, 'debian.raw');
      const r = await cli(['--api', api.url, '--token', farm.adminToken, 'image', 'build-linux', '--cache-dir', CACHE, '--out', out, '--store', 'images', '--name', 'debian12', '--state', 'production']);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toMatch(/^image (built in \d+ s|from the cache): /m);
      expect(r.stdout).toMatch(/^512\.0 MiB raw \(sparse\); kernel \S+ [\d.]+ MiB, initramfs [\d.]+ MiB, root files [\d.]+ MiB$/m);
      expect(r.stdout).toMatch(/^pushed debian12 version 0 \(production\): \d+ chunks uploaded, 0 already in the farm$/m);
      expect((await stat(out)).size).toBe(512 * 2 ** 20);
      const vdisks = expectStatus(await farm.api('GET', `/v1/vdisks?storeId=${store.id}`), 200).items;
      expect(vdisks).toMatchObject([{ name: 'debian12', sizeBytes: 512 * 2 ** 20 }]);
      // Built again with the same inputs: the cache answers, and the farm already has this content.
      const again = await cli(['--api', api.url, '--token', farm.adminToken, 'image', 'build-linux', '--cache-dir', CACHE, '--store', 'images', '--name', 'debian12']);
      expect(again.code, again.stderr).toBe(0);
      expect(again.stdout).toMatch(/^image from the cache: /m);
      expect(again.stdout).toMatch(/^unchanged: version 0 of debian12 already has this content$/m);
    }, 1_800_000);
  });
});
