/**
 * `npm run synth` as a fresh clone runs it: the real cdk CLI, in a network
 * namespace that has nothing but loopback (no network at all), with no AWS
 * credentials. It must bundle the API with the local esbuild (no Docker)
 * and write the template.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, test } from 'vitest';

const root = join(import.meta.dirname, '../..');

test('npm run synth works offline, without Docker or AWS credentials', async () => {
  const ns = `bf-offline-${process.pid}`;
  // A namespace left by a killed run of this test (its pid is gone) is removed first.
  for (const line of execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' }).split('\n')) {
    const m = /^bf-offline-(\d+)\b/.exec(line);
    if (m && !existsSync(`/proc/${m[1]}`)) execFileSync('ip', ['netns', 'del', `bf-offline-${m[1]}`]);
  }
  const out = await mkdtemp(join(tmpdir(), 'bootfarm-synth-'));
  execFileSync('ip', ['netns', 'add', ns]);
  try {
    execFileSync('ip', ['netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up']);
    // Proof the namespace is offline: it has no route anywhere.
    expect(execFileSync('ip', ['netns', 'exec', ns, 'ip', 'route', 'show'], { encoding: 'utf8' }).trim()).toBe('');
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('AWS_') && !k.startsWith('CDK_')));
    const r = spawnSync('ip', ['netns', 'exec', ns, 'npm', 'run', 'synth', '--', '-o', out], { cwd: root, env: { ...env, PATH: `/usr/sbin:/usr/bin:/sbin:/bin:${process.env.PATH}` }, encoding: 'utf8', timeout: 120_000 });
    expect(r.status, `npm run synth failed:\n${r.stdout}\n${r.stderr}`).toBe(0);
    const template = JSON.parse(readFileSync(join(out, 'bootfarm-dev.template.json'), 'utf8'));
    expect(Object.values(template.Resources as Record<string, { Type: string }>).map((x) => x.Type)).toContain('AWS::Lambda::Function');
    const assets = readdirSync(out).filter((f) => f.startsWith('asset.'));
    expect(assets).toHaveLength(1);
    expect(existsSync(join(out, assets[0]!, 'index.mjs'))).toBe(true);
    expect(r.stdout + r.stderr).not.toMatch(/docker/i);
  } finally {
    execFileSync('ip', ['netns', 'del', ns]);
    await rm(out, { recursive: true, force: true });
  }
}, 150_000);
