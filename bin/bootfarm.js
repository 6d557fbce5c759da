#!/usr/bin/env node
// The bootfarm CLI. Sources are TypeScript, loaded through tsx's ESM hooks so
// a fresh `npm install` needs no build step.

// The appliance's disk reads and write-cache syncs run on libuv's thread pool
// (4 threads by default), with HTTP, TFTP and NBD: a few targets flushing to a
// slow disk must not hold up everyone's reads. Set before anything uses the pool.
process.env.UV_THREADPOOL_SIZE ??= '16';
const { register } = await import('tsx/esm/api');

register();
await import('../cli/node-warnings.ts');
const { main } = await import('../cli/main.ts');
process.exitCode = await main(process.argv.slice(2));
