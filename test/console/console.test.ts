/**
 * The web console in a real browser: Playwright (playwright-core) driving
 * Debian's Chromium against the app served on loopback, with DynamoDB Local
 * and s3rver behind it. Screenshots go to test-artifacts/console/.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { fixtures, expectStatus, type Fixtures } from '../support/fixtures.js';
import { SYSTEM, testFarm, type TestFarm } from '../support/farm.js';
import { serveFarm } from '../support/serve.js';

const CHROMIUM = '/usr/bin/chromium';
const SHOTS = join(import.meta.dirname, '../../test-artifacts/console');

let farm: TestFarm;
let fx: Fixtures;
let server: Awaited<ReturnType<typeof serveFarm>>;
let browser: Browser;
let readOnlyToken: string;
let site: any;
let appliance: any;
let applianceSecret: string;
let collection: any;
let vdisk: any;

beforeAll(async () => {
  farm = await testFarm();
  fx = fixtures(farm);
  site = await fx.site({ name: 'Branch-12' });
  appliance = await fx.appliance(site.id, { name: 'branch-12-a' });
  collection = await fx.collection(site.id, { name: 'Classroom' });
  const store = await fx.store({ name: 'Main' });
  vdisk = await fx.vdisk(store.id, { name: 'win11' });
  // Version 0: a new maintenance version (the blank base), to be promoted in the browser.
  await fx.version(vdisk.id);
  applianceSecret = (await farm.repo.createApplianceCredential({ id: appliance.id, siteId: site.id, name: appliance.name }, SYSTEM)).secret;
  readOnlyToken = await farm.token({ role: 'read-only', name: 'auditor' });
  server = await serveFarm(farm);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    // The machine notes' flags: no sandbox as root, no GPU, and no background calls to a network that is not there.
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'],
  });
  await mkdir(SHOTS, { recursive: true });
}, 120_000);

afterAll(async () => {
  await browser?.close();
  await server?.close();
});

async function signedIn(token: string): Promise<Page> {
  const page = await browser.newPage({ viewport: { width: 1366, height: 850 } });
  await page.goto(`${server.url}/console`);
  // Keyboard only: the field has a label, Enter submits.
  await page.getByLabel('API token').fill(token);
  await page.getByLabel('API token').press('Enter');
  await page.waitForURL(`${server.url}/console`);
  return page;
}

describe('web console', () => {
  test('an unknown token is refused on the sign-in form; an admin token opens the farm tree', async () => {
    const page = await browser.newPage();
    await page.goto(`${server.url}/`);
    expect(page.url()).toBe(`${server.url}/console/login`);
    await page.getByLabel('API token').fill('bft_aaaaaaaaaaaaaaaa_wrongwrongwrongwrongwrongwrongwrongwrongwro');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await expect.poll(() => page.getByRole('alert').textContent()).toContain('unknown, revoked or expired');
    expect(await page.getByLabel('API token').getAttribute('aria-invalid')).toBe('true');
    await page.close();

    const admin = await signedIn(farm.adminToken);
    const tree = admin.getByRole('list', { name: 'Farm tree' });
    await expect.poll(() => tree.textContent()).toContain('Branch-12');
    const text = (await tree.textContent())!;
    expect(text).toContain('branch-12-a');
    expect(text).toContain('never reported');
    expect(text).toContain('Classroom');
    expect(text).toContain('win11');
    // The session cookie is HttpOnly, SameSite=Strict, scoped to the console, gone with the browser (no expiry); it holds a
    // session id and the sealed token, not the token; the token is nowhere in the page.
    const cookie = (await admin.context().cookies()).find((c) => c.name === 'bootfarm_console')!;
    expect(cookie).toMatchObject({ httpOnly: true, sameSite: 'Strict', path: '/console', expires: -1 });
    expect(cookie.value).not.toContain(farm.adminToken.split('_')[2]!);
    expect(await admin.content()).not.toContain(farm.adminToken);
    await admin.screenshot({ path: join(SHOTS, 'farm-tree.png'), fullPage: true });
    await admin.close();
  });

  test('an admin adds a target by MAC; a bad MAC is shown in the form with the API’s message', async () => {
    const page = await signedIn(farm.adminToken);
    await page.getByRole('link', { name: 'Targets' }).click();
    await page.getByLabel('MAC address').fill('52:54:00:zz:00:01');
    await page.getByLabel('Name (computer name)').fill('pc-0001');
    await page.getByLabel('Collection', { exact: true }).last().selectOption({ label: 'Classroom' });
    await page.getByRole('button', { name: 'Add target' }).click();
    const macField = page.getByLabel('MAC address');
    await expect.poll(() => macField.getAttribute('aria-invalid')).toBe('true');
    const error = await page.locator('#f-mac-error').textContent();
    expect(error).toMatch(/mac/i);
    // What was typed is kept.
    expect(await page.getByLabel('Name (computer name)').inputValue()).toBe('pc-0001');
    await page.screenshot({ path: join(SHOTS, 'target-validation-error.png'), fullPage: true });

    await macField.fill('52-54-00-AB-00-01');
    await page.getByLabel('vDisk').first().selectOption({ label: 'win11' });
    await page.getByRole('button', { name: 'Add target' }).click();
    await expect.poll(() => page.getByRole('status').first().textContent()).toContain('Target added.');
    const row = page.getByRole('table', { name: 'Targets' }).getByRole('row', { name: /52:54:00:ab:00:01/ });
    expect(await row.textContent()).toContain('pc-0001');
    expect(await row.textContent()).toContain('win11');
    // The API has it, exactly as the CLI would have created it, and the audit log says who.
    const t = expectStatus(await farm.api('GET', '/v1/targets/52:54:00:ab:00:01'), 200);
    expect(t).toMatchObject({ name: 'pc-0001', collectionId: collection.id, assignments: [{ vdiskId: vdisk.id }] });
    await page.screenshot({ path: join(SHOTS, 'target-added.png'), fullPage: true });
    await page.close();
  });

  test('an admin promotes a version, and the replication matrix changes when the appliance reports', async () => {
    const page = await signedIn(farm.adminToken);
    await page.goto(`${server.url}/console/vdisks/${vdisk.id}`);
    const matrix = page.getByRole('table', { name: 'Replication: versions by appliance' });
    const cell = matrix.locator('td[data-appliance="branch-12-a"][data-version="0"]');
    expect(await cell.getAttribute('data-state')).toBe('unreachable');

    await page.getByRole('button', { name: 'Promote to production: version 0' }).click();
    await expect.poll(() => page.getByRole('status').first().textContent()).toContain('Version state changed.');
    expect(await page.locator('table[aria-labelledby="versions"] tbody tr').first().textContent()).toContain('production');
    expect(expectStatus(await farm.api('GET', `/v1/vdisks/${vdisk.id}/versions/0`), 200).state).toBe('production');
    await page.screenshot({ path: join(SHOTS, 'version-promoted.png'), fullPage: true });

    // The appliance reports through its own API route, as a running appliance does: half of version 0 is there.
    const v0 = expectStatus(await farm.api('GET', `/v1/vdisks/${vdisk.id}/versions/0`), 200);
    const report = async (state: 'syncing' | 'verified', percent?: number) => {
      const now = new Date().toISOString();
      const inventory = { reportedAt: now, versions: [{ vdiskId: vdisk.id, number: 0, contentHash: v0.contentHash, state, ...(percent !== undefined ? { percent } : {}) }] };
      const status = { softwareVersion: '0.1.0', startedAt: now, load: 0.25, sessions: 3, snapshotRevision: null, inventoryDigest: 'x', cacheBytes: 1 << 20, outboxPending: 0, offlineSince: null };
      expectStatus(await farm.api('PUT', `/v1/appliances/${appliance.id}/status`, { token: applianceSecret, body: { status, inventory } }), 204);
    };
    await report('syncing', 50);
    // No reload: the matrix refreshes itself.
    await expect.poll(() => cell.getAttribute('data-state'), { timeout: 15_000 }).toBe('in-progress');
    expect(await cell.textContent()).toContain('50%');
    await page.screenshot({ path: join(SHOTS, 'matrix-syncing.png'), fullPage: true });
    await report('verified');
    await expect.poll(() => cell.getAttribute('data-state'), { timeout: 15_000 }).toBe('up-to-date');
    await page.screenshot({ path: join(SHOTS, 'matrix-up-to-date.png'), fullPage: true });

    // The farm tree now shows the appliance online with its load.
    await page.goto(`${server.url}/console`);
    const tree = (await page.getByRole('list', { name: 'Farm tree' }).textContent())!;
    expect(tree).toMatch(/online\s*branch-12-a/);
    expect(tree).toContain('load 0.25 · 3 sessions');
    await page.close();
  }, 60_000);

  test('the site page charts sessions and throughput per appliance over the last hour, live, with sessions per vDisk', async () => {
    const startedAt = new Date(Date.now() - 3_600_000).toISOString();
    const status = (sessions: number, bytesServed: number) => ({ softwareVersion: '0.1.0', startedAt, load: 0.5, sessions, snapshotRevision: null, inventoryDigest: 'x', cacheBytes: 1 << 20, outboxPending: 0, offlineSince: null, sessionsByVdisk: { [vdisk.id]: sessions }, bytesServed });
    // Three earlier minutes, written as the status route writes them (the route stamps the time it receives a report).
    const now = Date.now();
    for (const [ago, sessions, bytes] of [[3, 2, 0], [2, 4, 60 * 2 ** 20], [1, 8, 240 * 2 ** 20]] as const)
      await farm.repo.reportStatus(appliance.id, { lastHeartbeat: new Date(now - ago * 60_000).toISOString(), status: status(sessions, bytes) });
    const report = async (sessions: number, bytes: number) =>
      expectStatus(await farm.api('PUT', `/v1/appliances/${appliance.id}/status`, { token: applianceSecret, body: { status: status(sessions, bytes) } }), 204);
    await report(9, 300 * 2 ** 20);

    const page = await signedIn(farm.adminToken);
    await page.getByRole('link', { name: 'Branch-12' }).click();
    await page.getByRole('heading', { name: 'Activity' }).waitFor();
    const sessionsChart = page.getByRole('img', { name: /^Sessions over the last hour/ });
    const throughputChart = page.getByRole('img', { name: /^Throughput over the last hour/ });
    const values = async (chart: typeof sessionsChart) => ((await chart.locator('g[data-appliance="branch-12-a"]').getAttribute('data-values')) ?? '').split(',').map(Number);
    // Sessions per minute as reported; throughput is the counter's growth per second: 60 MiB in a minute is 1 MiB/s, 180 MiB is 3.
    expect((await values(sessionsChart)).slice(0, 3)).toEqual([2, 4, 8]);
    expect((await values(throughputChart)).slice(0, 2)).toEqual([1, 3]);
    expect(await sessionsChart.getAttribute('aria-label')).toMatch(/now: branch-12-a 9$/);
    expect(await page.locator('td[data-sessions="branch-12-a"]').textContent()).toContain('win11: 9');
    await page.screenshot({ path: join(SHOTS, 'site-activity.png'), fullPage: true });

    // The appliance reports again: the chart follows without a reload.
    await report(12, 330 * 2 ** 20);
    await expect.poll(async () => (await values(sessionsChart)).at(-1), { timeout: 20_000 }).toBe(12);
    await page.close();
  }, 60_000);

  test("the targets page shows each target's last boot: where it streamed from and how long it took", async () => {
    const mac = '52:54:00:ab:00:01';
    const bootAt = new Date(Date.now() - 30_000);
    const eventId = (t: Date) => `${t.getTime().toString(36).padStart(9, '0')}-${Math.random().toString(36).slice(2, 12).padEnd(8, '0')}`;
    const bootId = `${bootAt.getTime().toString(16).padStart(12, '0')}0badcafe`;
    const events = [
      { id: eventId(bootAt), at: bootAt.toISOString(), type: 'boot', data: { mac, targetId: mac, outcome: 'vdisk', vdiskId: vdisk.id, version: 0, streamingApplianceId: appliance.id, message: '', bootId } },
      { id: eventId(new Date(bootAt.getTime() + 12_345)), at: new Date(bootAt.getTime() + 12_345).toISOString(), type: 'boot-completed', data: { mac, vdiskId: vdisk.id, version: 0, bootId, bootStartedAt: bootAt.toISOString(), durationMs: 12_345 } },
    ];
    expectStatus(await farm.api('POST', `/v1/appliances/${appliance.id}/events`, { token: applianceSecret, body: { events } }), 200);
    const page = await signedIn(farm.adminToken);
    await page.goto(`${server.url}/console/targets?q=pc-0001`);
    const row = page.getByRole('table', { name: 'Targets' }).getByRole('row', { name: /pc-0001/ });
    const text = (await row.textContent())!;
    expect(text).toContain('win11 v0 from branch-12-a');
    expect(text).toContain('up in 12.3 s');
    await page.screenshot({ path: join(SHOTS, 'targets-last-boot.png'), fullPage: true });
    await page.close();
  });

  test('a read-only user sees the same pages with no action buttons', async () => {
    const page = await signedIn(readOnlyToken);
    await page.goto(`${server.url}/console/vdisks/${vdisk.id}`);
    expect(await page.getByRole('heading', { name: 'vDisk win11' }).count()).toBe(1);
    expect(await page.getByRole('button', { name: /Promote|Revert|Merge|Delete|New maintenance version|Save/ }).count()).toBe(0);
    await page.goto(`${server.url}/console/targets`);
    expect(await page.getByRole('button', { name: /Add target|Apply to the collection/ }).count()).toBe(0);
    await page.goto(`${server.url}/console/sites/${site.id}`);
    expect(await page.getByRole('button', { name: 'Save site settings' }).count()).toBe(0);
    expect(await page.getByLabel('Polling timeout (ms)').isDisabled()).toBe(true);
    await page.screenshot({ path: join(SHOTS, 'read-only-site.png'), fullPage: true });
    await page.close();
  });

  test('the audit log filters by object and shows old and new values', async () => {
    const page = await signedIn(farm.adminToken);
    await page.getByRole('link', { name: 'Audit log' }).click();
    await page.getByLabel('Object type').selectOption('version');
    await page.getByRole('button', { name: 'Filter' }).click();
    const rows = page.getByRole('table', { name: 'Audit records, newest first' }).locator('tbody tr');
    await expect.poll(() => rows.count()).toBeGreaterThan(0);
    const all = (await rows.allTextContents()).join('\n');
    expect(all).toMatch(/update version/);
    expect(all).toMatch(/state: maintenance → production/);
    expect(all).not.toMatch(/create target/);
    await page.screenshot({ path: join(SHOTS, 'audit.png'), fullPage: true });
    await page.close();
  });

  test('a session is the server\'s: signing out ends it for a copied cookie too; a revoked token ends it at once', async () => {
    const token = await farm.token({ role: 'farm-admin', name: 'short-lived' });
    const cookie = await signInCookie(token);
    const open = (c: string) => fetch(`${server.url}/console`, { headers: { accept: 'text/html', cookie: c }, redirect: 'manual' });
    expect((await open(cookie)).status).toBe(200);
    // A cookie edited by one character, or naming another session, opens nothing.
    const [id, sealed] = cookie.split('=')[1]!.split('.');
    expect((await open(`bootfarm_console=${id}.${sealed!.slice(0, -2)}AA`)).status).toBe(303);
    expect((await open(`bootfarm_console=${'A'.repeat(32)}.${sealed}`)).status).toBe(303);
    expect((await open(`bootfarm_console=${token}`)).status).toBe(303);
    const out = await fetch(`${server.url}/console/logout`, { method: 'POST', headers: { cookie, 'sec-fetch-site': 'same-origin' }, redirect: 'manual' });
    expect(out.status).toBe(303);
    expect((await open(cookie)).status).toBe(303);
    // The token itself still works for the CLI: signing out of the console does not revoke it.
    expect((await farm.api('GET', '/v1/sites', { token })).status).toBe(200);

    const again = await signInCookie(token);
    const tokens = expectStatus(await farm.api('GET', '/v1/tokens?limit=100'), 200).items as any[];
    expect((await farm.api('DELETE', `/v1/tokens/${tokens.find((t) => t.name === 'short-lived').id}`)).status).toBe(204);
    const after = await open(again);
    expect(after.status).toBe(303);
    expect(after.headers.get('location')).toBe('/console/login');
  });

  test('a cross-site form post is refused (Sec-Fetch-Site, or Origin when a browser sends no Sec-Fetch-Site); signed out goes to sign-in', async () => {
    const cookie = await signInCookie(farm.adminToken);
    const post = (headers: Record<string, string>) =>
      fetch(`${server.url}/console/targets`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', cookie, ...headers }, body: `mac=52:54:00:00:00:99&name=evil&collectionId=${collection.id}`, redirect: 'manual' });
    expect((await post({ 'sec-fetch-site': 'cross-site' })).status).toBe(403);
    expect((await post({ origin: 'https://evil.example' })).status).toBe(403);
    expect((await post({ origin: 'null' })).status).toBe(403);
    expect((await post({ origin: server.url, 'sec-fetch-site': 'same-site' })).status).toBe(403);
    expect((await farm.api('GET', '/v1/targets/52:54:00:00:00:99')).status).toBe(404);
    // The same post from the console's own origin goes through.
    expect((await post({ origin: server.url, 'sec-fetch-site': 'same-origin' })).status).toBe(303);
    expect((await farm.api('GET', '/v1/targets/52:54:00:00:00:99')).status).toBe(200);
    const anon = await fetch(`${server.url}/console/targets`, { headers: { accept: 'text/html' }, redirect: 'manual' });
    expect(anon.status).toBe(303);
    expect(anon.headers.get('location')).toBe('/console/login');
    expect(anon.headers.get('content-security-policy')).toContain("script-src 'self'");
    expect((await fetch(`${server.url}/console/`, { redirect: 'manual' })).headers.get('location')).toBe('/console');
  });

  test('what the API refuses outside a form is an HTML page with its reason, not a server error', async () => {
    const cookie = await signInCookie(farm.adminToken);
    for (const path of ['/console/vdisks/not%20an%20id', '/console/vdisks/vd_aaaaaaaaaaaaaaaa', `/console/sites/x/activity`]) {
      const r = await fetch(`${server.url}${path}`, { headers: { accept: 'text/html', cookie } });
      expect(r.status, path).toBeGreaterThanOrEqual(400);
      expect(r.status, path).toBeLessThan(500);
      expect(r.headers.get('content-type'), path).toMatch(/^text\/html/);
      expect(await r.text(), path).toContain('role="alert"');
    }
  });

  test('site settings keep an IPv6 bootstrap server and its port; a conflicting save shows the site as it is now', async () => {
    expectStatus(await farm.api('PATCH', `/v1/sites/${site.id}`, { body: { bootstrap: { servers: [{ address: '2001:db8::a:1', port: 80 }, { address: '2001:db8::10', port: 8080 }] } }, headers: { 'if-match': '*', 'content-type': 'application/merge-patch+json' } }), 200);
    const page = await signedIn(farm.adminToken);
    await page.goto(`${server.url}/console/sites/${site.id}`);
    expect(await page.getByLabel('Server 1 address').inputValue()).toBe('2001:db8::a:1');
    expect(await page.getByLabel('Server 2 address').inputValue()).toBe('[2001:db8::10]:8080');
    await page.getByLabel('Polling timeout (ms)').fill('7000');
    await page.getByRole('button', { name: 'Save site settings' }).click();
    await expect.poll(() => page.getByRole('status').first().textContent()).toContain('Site settings saved.');
    const saved = expectStatus(await farm.api('GET', `/v1/sites/${site.id}`), 200);
    expect(saved.bootstrap.servers).toEqual([{ address: '2001:db8::a:1', port: 80 }, { address: '2001:db8::10', port: 8080 }]);
    expect(saved.bootstrap.pollingTimeoutMs).toBe(7000);

    // Someone else changes the site while the page is open: saving does not overwrite it.
    await page.reload();
    expectStatus(await farm.api('PATCH', `/v1/sites/${site.id}`, { body: { bootstrap: { generalTimeoutMs: 9000 } }, headers: { 'if-match': '*', 'content-type': 'application/merge-patch+json' } }), 200);
    await page.getByLabel('General timeout (ms)').fill('6000');
    await page.getByRole('button', { name: 'Save site settings' }).click();
    await expect.poll(() => page.getByRole('alert').first().textContent()).toContain('as it is now');
    expect(await page.getByLabel('General timeout (ms)').inputValue()).toBe('9000');
    expect(expectStatus(await farm.api('GET', `/v1/sites/${site.id}`), 200).bootstrap.generalTimeoutMs).toBe(9000);
    await page.close();
  });

  test('merge is offered on the newest test or production version only, and the new base keeps its state', async () => {
    const d = await fx.vdisk((await fx.store({ name: 'merge-store' })).id, { name: 'merge-me' });
    await fx.version(d.id);
    expectStatus(await farm.api('PATCH', `/v1/vdisks/${d.id}/versions/0`, { body: { state: 'production' }, headers: { 'if-match': '*' } }), 200);
    await fx.version(d.id);
    expectStatus(await farm.api('PATCH', `/v1/vdisks/${d.id}/versions/1`, { body: { state: 'test' }, headers: { 'if-match': '*' } }), 200);
    const page = await signedIn(farm.adminToken);
    page.on('dialog', (dlg) => void dlg.accept());
    await page.goto(`${server.url}/console/vdisks/${d.id}`);
    expect(await page.getByRole('button', { name: 'Merge into a new base: version 0' }).count()).toBe(0);
    await page.getByRole('button', { name: 'Merge into a new base: version 1' }).click();
    await expect.poll(() => page.getByRole('status').first().textContent()).toContain('Merged into a new base version.');
    const states = (expectStatus(await farm.api('GET', `/v1/vdisks/${d.id}/versions`), 200).items as any[]).map((v) => [v.number, v.state]);
    // Untested content did not reach production targets: the base is in test, production still boots version 0's content until promoted.
    expect(states).toEqual([[0, 'merged'], [1, 'merged'], [2, 'test']]);
    await page.close();
  });

  test('bulk edit: a device operator may enable or disable a collection but not reassign it; a failure says how far it got', async () => {
    const col = await fx.collection(site.id, { name: 'Bulk' });
    for (let i = 1; i <= 3; i++) await fx.target(col.id, { mac: `52:54:00:bb:00:0${i}`, name: `bulk-${i}` });
    const operator = await farm.token({ role: 'device-operator', siteId: site.id, name: 'op' });
    const page = await signedIn(operator);
    page.on('dialog', (dlg) => void dlg.accept());
    await page.goto(`${server.url}/console/targets?collection=${col.id}`);
    expect(await page.getByLabel(/Assign vDisk/).count()).toBe(0);
    await page.getByLabel('Collection', { exact: true }).last().selectOption({ label: 'Bulk' });
    await page.getByLabel('Enabled').selectOption('true');
    await page.getByRole('button', { name: 'Apply to the collection' }).click();
    await expect.poll(() => page.getByRole('status').first().textContent()).toContain('The collection was updated.');
    for (let i = 1; i <= 3; i++) expect(expectStatus(await farm.api('GET', `/v1/targets/52:54:00:bb:00:0${i}`), 200).disabled).toBe(true);
    await page.close();

    const admin = await signedIn(farm.adminToken);
    admin.on('dialog', (dlg) => void dlg.accept());
    await admin.goto(`${server.url}/console/targets?collection=${col.id}`);
    // The second target is changed behind the console's back between its read and its write: its If-Match no longer holds.
    const orig = farm.repo.update.bind(farm.repo);
    let n = 0;
    farm.repo.update = (async (kind: any, id: string, expected: any, change: any, actor: any) => {
      if (kind === 'target' && ++n === 2) await orig(kind, id, null, (cur: any) => ({ ...cur, description: 'changed meanwhile' }), actor);
      return orig(kind, id, expected, change, actor);
    }) as typeof farm.repo.update;
    try {
      await admin.getByLabel('Collection', { exact: true }).last().selectOption({ label: 'Bulk' });
      await admin.getByLabel('Enabled').selectOption('false');
      await admin.getByRole('button', { name: 'Apply to the collection' }).click();
      await expect.poll(() => admin.getByRole('alert').first().textContent()).toMatch(/Changed 1 of 3 targets; stopped at bulk-2 \(52:54:00:bb:00:02\)/);
    } finally {
      farm.repo.update = orig;
    }
    await admin.close();
  });
});

/** Signs in over HTTP as the login form does; the session cookie as a Cookie header. */
async function signInCookie(token: string): Promise<string> {
  const r = await fetch(`${server.url}/console/login`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', 'sec-fetch-site': 'same-origin' }, body: `token=${encodeURIComponent(token)}`, redirect: 'manual' });
  expect(r.status).toBe(303);
  return r.headers.get('set-cookie')!.split(';')[0]!;
}
