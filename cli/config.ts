/**
 * Where the CLI finds its API and token: flags, then environment
 * (BOOTFARM_API, BOOTFARM_TOKEN), then the config file
 * (BOOTFARM_CONFIG or ~/.config/bootfarm/config.json).
 */
import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { z } from 'zod';

export const CliConfigSchema = z.object({ api: z.url(), token: z.string().min(1) }).partial();
export type CliConfig = z.infer<typeof CliConfigSchema>;

export function configPath(env: NodeJS.ProcessEnv = process.env): string {
  return env.BOOTFARM_CONFIG ?? join(env.XDG_CONFIG_HOME ?? join(homedir(), '.config'), 'bootfarm', 'config.json');
}

export async function readConfig(path: string): Promise<CliConfig> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw e;
  }
  const parsed = CliConfigSchema.safeParse(JSON.parse(text));
  if (!parsed.success) throw new Error(`${path}: not a bootfarm CLI config (${parsed.error.issues[0]?.message})`);
  return parsed.data;
}

/** Writes the config with 0600 permissions (it holds a token), atomically. */
export async function writeConfig(path: string, config: CliConfig): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, `${JSON.stringify(config, null, 2)}\n`, { mode: 0o600 });
  await chmod(tmp, 0o600);
  await rename(tmp, path);
}

export async function resolveConnection(flags: { api?: string; token?: string }, env: NodeJS.ProcessEnv = process.env): Promise<{ api: string; token: string }> {
  const file = await readConfig(configPath(env));
  const api = flags.api ?? env.BOOTFARM_API ?? file.api;
  const token = flags.token ?? env.BOOTFARM_TOKEN ?? file.token;
  if (!api) throw new Error('no API URL: pass --api, set BOOTFARM_API, or run `bootfarm login --api URL --token TOKEN`');
  if (!token) throw new Error('no token: pass --token, set BOOTFARM_TOKEN, or run `bootfarm login --api URL --token TOKEN`');
  return { api: api.replace(/\/+$/, ''), token };
}
