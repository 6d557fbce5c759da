/**
 * The boot service's HTTP routes: `GET /boot.ipxe` (generic: asks again with
 * MAC and architecture), `GET /boot/{mac}.ipxe` (the target's script) and
 * `GET /bootstrap/{file}` (iPXE binaries for UEFI HTTP boot). All from the
 * cached snapshot: nothing here calls the cloud.
 */
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { Hono } from 'hono';
import { normalizeMac, type Snapshot, type TargetInput } from '../../model/index.js';
import type { LogFn } from '../log.js';
import { planBoot, type ApplianceState } from './plan.js';
import { bootScript, genericScript } from './script.js';

export interface BootRouteDeps {
  snapshot(): Snapshot | null;
  autoAdded(): readonly TargetInput[];
  /** Records an offline auto-add (disk + outbox). */
  recordAutoAdd(t: TargetInput): Promise<void>;
  /** Queues the boot event. */
  recordBoot(e: ReturnType<typeof planBoot>['event'] & { mac: string }): Promise<void>;
  self: string;
  state(applianceId: string): ApplianceState;
  /** Base URL of an appliance's HTTP service as targets reach it. */
  baseUrl(a: Snapshot['appliances'][number]): string;
  bootstrapDir: string;
  log: LogFn;
}

const text = { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' };

export function bootRoutes(deps: BootRouteDeps): Hono<{ Bindings: { incoming?: { socket?: { remoteAddress?: string } } } }> {
  const app = new Hono<{ Bindings: { incoming?: { socket?: { remoteAddress?: string } } } }>();

  app.get('/boot.ipxe', (c) => c.body(genericScript(), 200, text));

  app.get('/boot/:file', async (c) => {
    const file = c.req.param('file');
    const mac = file.endsWith('.ipxe') ? normalizeMac(file.slice(0, -5)) : null;
    if (!mac) return c.body(`#!ipxe\necho bootfarm: ${file.replace(/[^A-Za-z0-9.:-]/g, '?')} is not a MAC address script\nsleep 10\nreboot\n`, 404, text);
    const snapshot = deps.snapshot();
    if (!snapshot) return c.body('#!ipxe\necho bootfarm: this appliance has no farm configuration yet: asking again in 10 s\nsleep 10\nchain --autofree ${0} || reboot\n'.replace('${0}', c.req.url), 503, text);
    const clientIp = (c.env?.incoming?.socket?.remoteAddress ?? '').replace(/^::ffff:/, '') || null;
    // This appliance as the target reached it (through NAT, on another of its addresses): that address works for the target.
    const host = c.req.header('host');
    const base = (a: Snapshot['appliances'][number]) => (a.id === deps.self && host && /^[A-Za-z0-9.-]+(:\d{1,5})?$|^\[[0-9a-fA-F:.]+\](:\d{1,5})?$/.test(host) ? `http://${host}` : deps.baseUrl(a));
    const r = planBoot({
      snapshot,
      autoAdded: deps.autoAdded(),
      mac,
      clientIp,
      self: deps.self,
      state: deps.state,
      diskUrl: (a, vdiskId, n) => `${base(a)}/vdisks/${vdiskId}/${n}?mac=${mac.replace(/:/g, '-')}`,
      selfUrl: c.req.url,
    });
    if (r.added) {
      await deps.recordAutoAdd(r.added);
      deps.log('info', 'target added automatically at its first boot', { mac, name: r.added.name, collectionId: r.added.collectionId });
    }
    await deps.recordBoot({ ...r.event, mac });
    deps.log(r.event.outcome === 'refused' ? 'warn' : 'info', 'boot script', { mac, clientIp, arch: c.req.query('arch') ?? null, outcome: r.event.outcome, vdiskId: r.event.vdiskId, version: r.event.version, appliance: r.event.streamingApplianceId, message: r.event.message });
    return c.body(bootScript(r.plan, snapshot.site.bootstrap), 200, text);
  });

  // iPXE binaries for firmware that boots over HTTP (UEFI HTTP Boot): files of the bootstrap folder only.
  app.get('/bootstrap/:file', async (c) => {
    const file = c.req.param('file');
    const names = await readdir(deps.bootstrapDir).catch(() => [] as string[]);
    if (!names.includes(file) || !/^[A-Za-z0-9._-]+$/.test(file)) return c.body('no such bootstrap file\n', 404, text);
    const data = await readFile(join(deps.bootstrapDir, file));
    return c.body(new Uint8Array(data), 200, { 'content-type': 'application/octet-stream', 'content-length': String(data.length) });
  });

  return app;
}
