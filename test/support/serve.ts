import type { AddressInfo } from 'node:net';
import { serve } from '@hono/node-server';
import type { TestFarm } from './farm.js';

/** Serves a test farm's app on a loopback port, for clients that speak real HTTP (the CLI's ApiClient). */
export async function serveFarm(farm: TestFarm): Promise<{ url: string; close(): Promise<void> }> {
  let server!: ReturnType<typeof serve>;
  const port = await new Promise<number>((ok) => {
    server = serve({ fetch: farm.app.fetch, port: 0, hostname: '127.0.0.1' }, (info: AddressInfo) => ok(info.port));
  });
  return { url: `http://127.0.0.1:${port}`, close: () => new Promise((ok) => server.close(() => ok())) };
}
