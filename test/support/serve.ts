import type { AddressInfo } from 'node:net';
import { serve } from '@hono/node-server';
import type { TestFarm } from './farm.js';

/**
 * Serves a test farm's app on a loopback port, for clients that speak real HTTP
 * (the CLI's ApiClient, appliances). `port` lets a test bring the API back on
 * the address appliances were enrolled with after stopping it.
 */
export async function serveFarm(farm: TestFarm, opts: { port?: number } = {}): Promise<{ url: string; port: number; close(): Promise<void> }> {
  let server!: ReturnType<typeof serve>;
  const port = await new Promise<number>((ok, fail) => {
    server = serve({ fetch: farm.app.fetch, port: opts.port ?? 0, hostname: '127.0.0.1' }, (info: AddressInfo) => ok(info.port));
    server.once('error', fail);
  });
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    close: () =>
      new Promise((ok) => {
        // Appliances keep connections alive: an outage test needs them cut, not drained.
        (server as unknown as { closeAllConnections?: () => void }).closeAllConnections?.();
        server.close(() => ok());
      }),
  };
}
