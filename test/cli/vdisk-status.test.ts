/**
 * `bootfarm vdisk status`: the CLI in-process against the real app served on
 * loopback (DynamoDB Local behind it).
 */
import { serve } from '@hono/node-server';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../cli/main.js';
import { cellText } from '../../cli/replication-table.js';
import { fixtures } from '../support/fixtures.js';
import { SYSTEM, testFarm, type TestFarm } from '../support/farm.js';

const NOW = new Date('2026-03-01T12:00:00.000Z');
let farm: TestFarm;
let server: ReturnType<typeof serve>;
let api: string;
let vdisk: any;
const ids: Record<string, string> = {};

beforeAll(async () => {
  farm = await testFarm({ clock: () => NOW });
  const fx = fixtures(farm);
  const site = await fx.site();
  for (const name of ['pvs-01', 'pvs-02', 'pvs-03', 'pvs-04']) ids[name] = (await fx.appliance(site.id, { name })).id;
  const store = await fx.store();
  vdisk = await fx.vdisk(store.id, { name: 'win11' });
  await fx.version(vdisk.id);
  await fx.target((await fx.collection(site.id)).id, { assignments: [{ vdiskId: vdisk.id }] });
  const hash = (await farm.api('GET', `/v1/vdisks/${vdisk.id}/versions/0`)).body.contentHash;
  const report = async (name: string, state: string, ageMs: number, extra: object = {}) =>
    farm.repo.update(
      'appliance',
      ids[name]!,
      null,
      (cur) => ({ ...cur, lastHeartbeat: new Date(NOW.getTime() - ageMs).toISOString(), inventory: { reportedAt: NOW.toISOString(), versions: [{ vdiskId: vdisk.id, number: 0, contentHash: hash, state, ...extra }] } }),
      SYSTEM,
    );
  await report('pvs-01', 'verified', 1000);
  await report('pvs-02', 'syncing', 1000, { percent: 42 });
  await report('pvs-03', 'corrupt', 1000);
  await report('pvs-04', 'verified', 3_600_000);
  await new Promise<void>((ok) => {
    server = serve({ fetch: farm.app.fetch, port: 0, hostname: '127.0.0.1' }, (info: AddressInfo) => {
      api = `http://127.0.0.1:${info.port}`;
      ok();
    });
  });
});

afterAll(async () => {
  await new Promise<void>((ok) => server?.close(() => ok()));
});

async function cli(...args: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(['--api', api, '--token', farm.adminToken, ...args], { log: (s) => out.push(s), err: (s) => err.push(s) });
  return { code, stdout: out.join('\n'), stderr: err.join('\n') };
}

describe('bootfarm vdisk status', () => {
  it('prints versions down and appliances across, with short cells and what is pending', async () => {
    const r = await cli('vdisk', 'status', 'win11');
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.split('\n');
    expect(lines[0]!.split(/\s+/)).toEqual(['VERSION', 'STATE', 'PENDING', 'PVS-01', 'PVS-02', 'PVS-03', 'PVS-04']);
    expect(lines[1]!.split(/\s+/)).toEqual(['0', 'maintenance', 'yes', 'ok', '42%', 'CORRUPT', 'offline']);
    expect(r.stdout).toContain('version 0 pending: waiting for pvs-02, pvs-03, pvs-04');
    expect(r.stdout).toMatch(/offline \(no heartbeat for 90 s\): pvs-04 \(last 2026-03-01T11:00:00.000Z\)/);
  });

  it('gives the API body with --json', async () => {
    const r = await cli('--json', 'vdisk', 'status', vdisk.id);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual((await farm.api('GET', `/v1/vdisks/${vdisk.id}/replication`)).body);
  });

  it('says which vDisk name it does not know', async () => {
    const r = await cli('vdisk', 'status', 'nope');
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('no vdisk named "nope"');
  });

  it('maps every cell state to its text', () => {
    expect(['up-to-date', 'missing', 'in-progress', 'corrupt', 'unreachable'].map((state) => cellText({ state, percent: 7 }))).toEqual(['ok', 'missing', '7%', 'CORRUPT', 'offline']);
  });
});
