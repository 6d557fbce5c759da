/**
 * `cdk synth` / `cdk deploy` entry: reads context, builds the stack. Nothing
 * else reads context or the environment.
 *
 *   npx cdk deploy -c bootfarm:stage=prod -c bootfarm:alarmEmail=ops@example.com
 */
import { App } from 'aws-cdk-lib';
import { parseStackConfig } from '../lib/config.js';
import { BootfarmStack } from '../lib/stack.js';

const app = new App();
const config = parseStackConfig((key) => app.node.tryGetContext(key));
new BootfarmStack(app, `bootfarm-${config.stage}`, {
  config,
  description: `bootfarm control plane (${config.stage}): API, farm table, vDisk bucket, signing key`,
  // The account and region of the deploying credentials (CDK_DEFAULT_*). Without credentials (offline synth) the
  // template stays environment-agnostic rather than pinned to the CLI's fallback region.
  env: process.env.CDK_DEFAULT_ACCOUNT ? { account: process.env.CDK_DEFAULT_ACCOUNT, region: process.env.CDK_DEFAULT_REGION } : undefined,
  tags: { 'bootfarm:stage': config.stage },
});
