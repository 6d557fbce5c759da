/**
 * Synthesises the stack in-process (as `cdk synth` does, bundling included)
 * for the tests and `npm run bench -- lambda`: the template and the very
 * bundle that `cdk deploy` would upload.
 */
import { App } from 'aws-cdk-lib';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CONTEXT_KEYS, parseStackConfig, type StackConfigInput } from './config.js';
import { BootfarmStack } from './stack.js';

export interface Synthesised {
  app: App;
  stack: BootfarmStack;
  /** The cloud assembly directory. */
  outdir: string;
  /** The synthesised CloudFormation template (JSON file). */
  templateFile: string;
  /** The API function's bundle: a directory holding index.mjs (and its source map); null when not bundled. */
  apiAssetDir: string | null;
}

export interface SynthOptions {
  /** Run esbuild (as `cdk synth` does). Off: the template only, with a placeholder asset. @default true */
  bundle?: boolean;
}

/** Synthesises with cdk.json's context, overridden by `config` (field names as in StackConfig). */
export function synthFarm(outdir: string, config: Partial<Record<keyof StackConfigInput, unknown>> = {}, opts: SynthOptions = {}): Synthesised {
  const context: Record<string, unknown> = JSON.parse(readFileSync(new URL('../../cdk.json', import.meta.url), 'utf8')).context;
  for (const [field, v] of Object.entries(config)) context[CONTEXT_KEYS[field as keyof typeof CONTEXT_KEYS]] = v;
  // The CLI's own switch for "bundle no stack" (cdk synth --exclusively / bundling-stacks).
  if (opts.bundle === false) context['aws:cdk:bundling-stacks'] = [];
  const app = new App({ outdir, context });
  const parsed = parseStackConfig((k) => app.node.tryGetContext(k));
  const stack = new BootfarmStack(app, `bootfarm-${parsed.stage}`, { config: parsed, env: { account: '123456789012', region: 'eu-west-1' } });
  app.synth();
  const templateFile = join(outdir, `${stack.artifactId}.template.json`);
  const template = JSON.parse(readFileSync(templateFile, 'utf8'));
  if (opts.bundle === false) return { app, stack, outdir, templateFile, apiAssetDir: null };
  const fn = template.Resources[stack.getLogicalId(stack.api.fn.node.defaultChild as never)];
  const key: unknown = fn?.Properties?.Code?.S3Key;
  if (typeof key !== 'string' || !key.endsWith('.zip')) throw new Error('synth: the API function has no asset S3Key');
  const apiAssetDir = join(outdir, `asset.${key.slice(0, -'.zip'.length)}`);
  if (!existsSync(join(apiAssetDir, 'index.mjs'))) throw new Error(`synth: no index.mjs in ${apiAssetDir}`);
  return { app, stack, outdir, templateFile, apiAssetDir };
}
