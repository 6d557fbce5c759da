/**
 * `npm run bench -- <suite> [options]`: runs one benchmark suite and prints
 * its table. Only this file reads flags.
 *
 *   npm run bench -- vdisk [--size 2G] [--concurrency 4]
 *   npm run bench -- http [--size 256M] [--seconds 10] [--connections 16]
 *   npm run bench -- tftp [--size 16M] [--runs 5] [--concurrency 500]
 *   npm run bench -- nbd [--size 1G] [--runs 5] [--jobs 4] [--seconds 5]
 *   npm run bench -- failover [--runs 10] [--targets 50,200,500]   (root: network namespaces)
 *   npm run bench -- lambda [--runs 10] [--warm 20]
 *   npm run bench -- requests [--appliances 2] [--speed 10] [--rest-seconds 60] [--boots 10] [--auto-adds 3] [--billed-ms 25]
 */
import '../cli/node-warnings.js';
import { parseArgs } from 'node:util';
import { parseSize } from '../cli/output.js';

const SUITES: Record<string, (args: string[]) => Promise<void>> = {
  vdisk: async (args) => {
    const { values } = parseArgs({ args, options: { size: { type: 'string', default: '2G' }, concurrency: { type: 'string', default: '4' } }, strict: true });
    const concurrency = Number(values.concurrency);
    if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 64) throw new Error(`--concurrency ${values.concurrency}: must be 1-64`);
    const { benchVdisk } = await import('./vdisk.js');
    await benchVdisk({ sizeBytes: parseSize(values.size), concurrency, out: (s) => console.log(s), log: (s) => console.error(s) });
  },
  http: async (args) => {
    const { values } = parseArgs({ args, options: { size: { type: 'string', default: '256M' }, seconds: { type: 'string', default: '10' }, connections: { type: 'string', default: '16' } }, strict: true });
    const { benchHttp } = await import('./http.js');
    await benchHttp({ sizeBytes: parseSize(values.size), seconds: Number(values.seconds), connections: Number(values.connections), out: (s) => console.log(s), log: (s) => console.error(s) });
  },
  tftp: async (args) => {
    const { values } = parseArgs({ args, options: { size: { type: 'string', default: '16M' }, runs: { type: 'string', default: '5' }, concurrency: { type: 'string', default: '500' } }, strict: true });
    const { benchTftp } = await import('./tftp.js');
    await benchTftp({ sizeBytes: parseSize(values.size), runs: Number(values.runs), concurrency: Number(values.concurrency), out: (s) => console.log(s), log: (s) => console.error(s) });
  },
  nbd: async (args) => {
    const { values } = parseArgs({ args, options: { size: { type: 'string', default: '1G' }, runs: { type: 'string', default: '5' }, jobs: { type: 'string', default: '4' }, seconds: { type: 'string', default: '5' } }, strict: true });
    const int = (flag: string, v: string, min: number, max: number) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < min || n > max) throw new Error(`--${flag} ${v}: must be a whole number from ${min} to ${max}`);
      return n;
    };
    const { benchNbd } = await import('./nbd.js');
    await benchNbd({ sizeBytes: parseSize(values.size), runs: int('runs', values.runs, 1, 50), jobs: int('jobs', values.jobs, 1, 64), seconds: int('seconds', values.seconds, 1, 600), out: (s) => console.log(s), log: (s) => console.error(s) });
  },
  failover: async (args) => {
    const { values } = parseArgs({ args, options: { runs: { type: 'string', default: '10' }, targets: { type: 'string', default: '50,200,500' } }, strict: true });
    const runs = Number(values.runs);
    if (!Number.isInteger(runs) || runs < 1 || runs > 100) throw new Error(`--runs ${values.runs}: must be a whole number from 1 to 100`);
    // Up to 500: the site's appliances take at most 500 targets each by default, and the bench's 1-appliance peer runs them all on one.
    const targets = values.targets.split(',').map((t) => Number(t.trim()));
    if (!targets.length || targets.some((n) => !Number.isInteger(n) || n < 2 || n > 500)) throw new Error(`--targets ${values.targets}: comma-separated whole numbers from 2 to 500`);
    const { benchFailover } = await import('./failover.js');
    await benchFailover({ runs, targets, out: (s) => console.log(s), log: (s) => console.error(s) });
  },
  lambda: async (args) => {
    const { values } = parseArgs({ args, options: { runs: { type: 'string', default: '10' }, warm: { type: 'string', default: '20' } }, strict: true });
    const runs = Number(values.runs);
    const warm = Number(values.warm);
    if (!Number.isInteger(runs) || runs < 1 || runs > 100) throw new Error(`--runs ${values.runs}: must be a whole number from 1 to 100`);
    if (!Number.isInteger(warm) || warm < 1 || warm > 1000) throw new Error(`--warm ${values.warm}: must be a whole number from 1 to 1000`);
    const { benchLambda } = await import('./lambda.js');
    await benchLambda({ runs, warm, out: (s) => console.log(s), log: (s) => console.error(s) });
  },
  requests: async (args) => {
    const { values } = parseArgs({
      args,
      options: {
        appliances: { type: 'string', default: '2' },
        speed: { type: 'string', default: '10' },
        'rest-seconds': { type: 'string', default: '60' },
        boots: { type: 'string', default: '10' },
        'auto-adds': { type: 'string', default: '3' },
        'billed-ms': { type: 'string', default: '25' },
      },
      strict: true,
    });
    const int = (flag: string, v: string, min: number, max: number) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < min || n > max) throw new Error(`--${flag} ${v}: must be a whole number from ${min} to ${max}`);
      return n;
    };
    const { benchRequests } = await import('./requests.js');
    await benchRequests({
      appliances: int('appliances', values.appliances, 1, 10),
      speed: int('speed', values.speed, 1, 50),
      restSeconds: int('rest-seconds', values['rest-seconds'], 5, 3600),
      boots: int('boots', values.boots, 1, 200),
      autoAdds: int('auto-adds', values['auto-adds'], 1, 50),
      billedMs: int('billed-ms', values['billed-ms'], 1, 900_000),
      out: (s) => console.log(s),
      log: (s) => console.error(s),
    });
  },
};

const [suite, ...rest] = process.argv.slice(2);
const run = suite ? SUITES[suite] : undefined;
if (!run) {
  console.error(`usage: npm run bench -- <suite> [options]; suites: ${Object.keys(SUITES).join(', ')}`);
  process.exit(2);
}
try {
  await run(rest);
} catch (e) {
  console.error(`bench ${suite}: ${(e as Error).message}`);
  process.exitCode = 1;
}
