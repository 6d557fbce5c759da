/**
 * The daemon where it meets a hostile or broken world: snapshots of another
 * site or replayed from the past, a control plane that keeps sending what it
 * cannot verify, a revoked credential, an outbox backlog, many snapshot changes.
 * The replay is the one fake: a fetch wrapper standing in for whoever sits on
 * the network path (a failure the real control plane cannot produce).
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { loadConfig, loadCredential } from '../../appliance/config.js';
import { startAppliance, type ApplianceHandle } from '../../appliance/daemon.js';
import { expectStatus } from '../support/fixtures.js';
import { testSite, until, type LogLine, type TestSite } from './support/site.js';

let t: TestSite;
beforeAll(async () => {
  t = await testSite({ imageMiB: 1 });
});
afterAll(async () => {
  await t?.api.close();
});

async function start(dataDir: string, o: { logs?: LogLine[]; fetchImpl?: typeof fetch; pollMs?: number; keys?: 'wrong' } = {}): Promise<ApplianceHandle> {
  const config = await loadConfig(dataDir);
  config.intervals = { ...config.intervals, heartbeatMs: 1000, pollMs: o.pollMs ?? 1000, retryMinMs: 100, retryMaxMs: 1000, requestTimeoutMs: 5000 };
  if (o.keys === 'wrong') {
    const { generateKeyPairSync } = await import('node:crypto');
    const { keyIdOf } = await import('../../model/index.js');
    const pub = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).publicKey.export({ type: 'spki', format: 'pem' }).toString();
    config.signingKeys = [{ keyId: keyIdOf(pub), publicKeyPem: pub }];
  }
  return startAppliance({ config, credential: await loadCredential(dataDir), dataDir, log: (level, msg, fields) => o.logs?.push({ level, msg, ...fields }), ...(o.fetchImpl ? { fetchImpl: o.fetchImpl } : {}) });
}

it("refuses another site's snapshot in its cache, however well signed", async () => {
  const a = await t.enrol('scope-a');
  const res = await t.farm.api('GET', `/v1/sites/${t.otherSiteId}/snapshot`);
  await writeFile(join(a.dataDir, 'snapshot.json'), JSON.stringify({ etag: res.headers.get('etag'), signed: expectStatus(res, 200) }));
  await t.stopApi();
  try {
    const logs: LogLine[] = [];
    const h = await start(a.dataDir, { logs });
    expect(h.snapshot()).toBeNull();
    expect(logs.find((l) => l.msg.startsWith('cached snapshot refused'))?.reason).toContain(`it is the snapshot of site ${t.otherSiteId}`);
    await h.stop();
  } finally {
    await t.startApi();
  }
});

it('refuses a snapshot replayed from an older farm revision and keeps the newer one', async () => {
  const a = await t.enrol('scope-b');
  const old = expectStatus(await t.farm.api('GET', `/v1/sites/${t.siteId}/snapshot`), 200);
  await t.fx.patch(`/v1/sites/${t.siteId}`, { description: 'newer' });
  let replay = false;
  const fetchImpl: typeof fetch = async (input, init) => {
    if (replay && String(input).endsWith('/snapshot')) return new Response(JSON.stringify(old), { status: 200, headers: { etag: '"replayed"', 'content-type': 'application/json' } });
    return fetch(input, init);
  };
  const logs: LogLine[] = [];
  const h = await start(a.dataDir, { logs, fetchImpl });
  await until('snapshot', () => h.snapshot());
  const newer = h.snapshot()!.revision;
  replay = true;
  await until('replay refused', () => logs.find((l) => l.msg.startsWith('snapshot from the control plane refused')));
  expect(logs.find((l) => l.msg.startsWith('snapshot from the control plane refused'))!.reason).toMatch(/older than the one in use/);
  expect(h.snapshot()!.revision).toBe(newer);
  expect(h.snapshot()!.site.description).toBe('newer');
  await h.stop();
});

it('does not poll faster than its interval while every snapshot fails verification', async () => {
  const a = await t.enrol('wrong-key');
  let gets = 0;
  const fetchImpl: typeof fetch = async (input, init) => {
    if (String(input).endsWith('/snapshot')) gets++;
    return fetch(input, init);
  };
  const logs: LogLine[] = [];
  const h = await start(a.dataDir, { logs, fetchImpl, keys: 'wrong' });
  await new Promise((r) => setTimeout(r, 3500));
  await h.stop();
  expect(logs.some((l) => l.msg.startsWith('snapshot from the control plane refused') && String(l.reason).includes('unknown key'))).toBe(true);
  // pollMs 1000 over 3.5 s: the first request and at most one per second after it.
  expect(gets).toBeGreaterThanOrEqual(2);
  expect(gets).toBeLessThanOrEqual(5);
});

it('says when the control plane no longer accepts its credential, and keeps serving', async () => {
  const a = await t.enrol('revoked');
  const logs: LogLine[] = [];
  const h = await start(a.dataDir, { logs });
  await until('snapshot', () => h.snapshot());
  expectStatus(await t.farm.api('DELETE', `/v1/tokens/${a.credential.slice(4, 20)}`), 204);
  const health = await until('refusal noticed', async () => {
    const body = await h.health();
    return body.controlPlane.credentialRefused ? body : null;
  });
  expect(health.status).toBe('degraded');
  expect(health.snapshot).not.toBeNull();
  expect(logs.filter((l) => l.msg.startsWith('the control plane no longer accepts this appliance credential'))).toHaveLength(1);
  await h.stop();
});

it('keeps its heartbeat while a backlog of events drains, and follows many snapshot changes without leaking listeners', async () => {
  const a = await t.enrol('drain');
  await t.stopApi();
  const h0 = await start(a.dataDir);
  for (let i = 0; i < 400; i++) await h0.emit({ type: 'boot', data: { mac: '52:54:00:00:00:01', targetId: null, outcome: 'refused', vdiskId: null, version: null, streamingApplianceId: null, message: 'unknown target' } });
  await h0.stop();
  await t.startApi();
  const beats: number[] = [];
  const warnings: string[] = [];
  const onWarning = (w: Error) => warnings.push(`${w.name}: ${w.message}`);
  process.on('warning', onWarning);
  try {
    const fetchImpl: typeof fetch = async (input, init) => {
      if (init?.method === 'PUT' && String(input).endsWith('/status')) beats.push(Date.now());
      return fetch(input, init);
    };
    const h = await start(a.dataDir, { fetchImpl, pollMs: 300 });
    await until('drained', async () => (await h.health()).outbox.pending === 0, 60_000);
    for (let i = 0; i < 12; i++) {
      const rev = h.snapshot()!.revision;
      await t.fx.patch(`/v1/sites/${t.siteId}`, { description: `change ${i}` });
      await until('snapshot change', () => (h.snapshot()!.revision > rev ? true : null));
    }
    await h.stop();
    let gap = 0;
    for (let i = 1; i < beats.length; i++) gap = Math.max(gap, beats[i]! - beats[i - 1]!);
    expect(gap).toBeLessThan(2500);
    expect(warnings.filter((w) => w.includes('MaxListenersExceeded'))).toEqual([]);
  } finally {
    process.off('warning', onWarning);
  }
}, 120_000);
