#!/usr/bin/env node
// The bootfarm CLI. Sources are TypeScript, loaded through tsx's ESM hooks so
// a fresh `npm install` needs no build step.
import { register } from 'tsx/esm/api';

// The AWS SDK warns on every start under Node 20 that its 2027 releases need
// Node 22 (the Lambda runtime is Node 22). Drop that one notice; keep all others.
const emitWarning = process.emitWarning.bind(process);
process.emitWarning = (warning, ...rest) => {
  if (String(warning).startsWith('NodeVersionSupportWarning')) return;
  emitWarning(warning, ...rest);
};

register();
const { main } = await import('../cli/main.ts');
process.exitCode = await main(process.argv.slice(2));
