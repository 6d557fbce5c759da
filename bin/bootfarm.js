#!/usr/bin/env node
// The bootfarm CLI. Sources are TypeScript, loaded through tsx's ESM hooks so
// a fresh `npm install` needs no build step.
import { register } from 'tsx/esm/api';

register();
await import('../cli/node-warnings.ts');
const { main } = await import('../cli/main.ts');
process.exitCode = await main(process.argv.slice(2));
