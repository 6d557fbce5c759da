/**
 * Builders for API tests: create farm objects through the real app with
 * valid defaults, and assert error responses in one line.
 */
import { expect } from 'vitest';
import type { ApiResult, TestFarm } from './farm.js';

type Body = Record<string, unknown>;
type Opts = { token?: string | null; headers?: Record<string, string> };

/** The n-th test MAC, in a locally administered unicast range: 52:54:00:00:00:01, … */
export function macOf(n: number): string {
  const hex = n.toString(16).padStart(6, '0');
  return `52:54:00:${hex.slice(0, 2)}:${hex.slice(2, 4)}:${hex.slice(4, 6)}`;
}

/** Asserts an error response: status, code, and (when given) the field the error names. */
export function expectError(res: ApiResult, status: number, code: string, field?: string): void {
  expect(res.status, JSON.stringify(res.body)).toBe(status);
  expect(res.body?.error?.code, JSON.stringify(res.body)).toBe(code);
  expect(typeof res.body.error.message).toBe('string');
  if (field !== undefined) {
    expect(res.body.error.field).toBe(field);
    expect(res.body.error.message).toContain(field);
  }
}

export function expectStatus(res: ApiResult, status: number): any {
  expect(res.status, JSON.stringify(res.body)).toBe(status);
  return res.body;
}

export interface Fixtures {
  /** A fresh name: `<prefix>-<n>`, unique within this farm. */
  name(prefix?: string): string;
  nextMac(): string;
  site(body?: Body, o?: Opts): Promise<any>;
  appliance(siteId: string, body?: Body, o?: Opts): Promise<any>;
  store(body?: Body, o?: Opts): Promise<any>;
  vdisk(storeId: string, body?: Body, o?: Opts): Promise<any>;
  collection(siteId: string, body?: Body, o?: Opts): Promise<any>;
  target(collectionId: string, body?: Body, o?: Opts): Promise<any>;
  version(vdiskId: string, o?: Opts): Promise<any>;
  /** PATCH with the object's current ETag (read first unless `etag` is given). */
  patch(path: string, body: unknown, o?: Opts & { etag?: string }): Promise<ApiResult>;
  /** Every item of a listing, following nextCursor page by page. */
  listAll(path: string, o?: Opts & { limit?: number }): Promise<{ items: any[]; pages: number }>;
}

export function fixtures(farm: TestFarm): Fixtures {
  let n = 0;
  const name = (prefix = 'obj') => `${prefix}-${++n}`;
  const create = async (path: string, body: Body, o: Opts = {}) => expectStatus(await farm.api('POST', path, { ...o, body }), 201);
  const fx: Fixtures = {
    name,
    nextMac: () => macOf(++n),
    site: (body = {}, o) => create('/v1/sites', { name: name('site'), ...body }, o),
    appliance: (siteId, body = {}, o) => create('/v1/appliances', { siteId, name: name('app'), managementAddress: '192.0.2.10', ...body }, o),
    store: (body = {}, o) => create('/v1/stores', { name: name('store'), ...body }, o),
    vdisk: (storeId, body = {}, o) => create('/v1/vdisks', { storeId, name: name('vdisk'), sizeBytes: 1 << 30, ...body }, o),
    collection: (siteId, body = {}, o) => create('/v1/collections', { siteId, name: name('col'), ...body }, o),
    target: (collectionId, body = {}, o) => create('/v1/targets', { mac: fx.nextMac(), name: name('tgt'), collectionId, ...body }, o),
    version: async (vdiskId, o = {}) => expectStatus(await farm.api('POST', `/v1/vdisks/${vdiskId}/versions`, o), 201),
    patch: async (path, body, o = {}) => {
      const etag = o.etag ?? (await farm.api('GET', path)).headers.get('etag')!;
      return farm.api('PATCH', path, { token: o.token, body, headers: { 'if-match': etag, ...o.headers } });
    },
    listAll: async (path, o = {}) => {
      const items: any[] = [];
      let cursor: string | null = null;
      let pages = 0;
      const sep = path.includes('?') ? '&' : '?';
      do {
        const q: string = `limit=${o.limit ?? 100}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`;
        const page = expectStatus(await farm.api('GET', `${path}${sep}${q}`, o), 200);
        items.push(...page.items);
        cursor = page.nextCursor;
        pages++;
      } while (cursor);
      return { items, pages };
    },
  };
  return fx;
}
