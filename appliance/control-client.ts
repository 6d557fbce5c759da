/**
 * The appliance's calls to the control plane. Two kinds of failure, kept
 * apart because the daemon treats them differently: `Unreachable` (network,
 * timeout, 5xx, throttling: retry with backoff, keep serving from the cache)
 * and `Refused` (4xx: our request or credential is wrong: log it loudly).
 */
import type { ApplianceEvent, ApplianceStatusReport, EventResult } from '../model/index.js';

export class Unreachable extends Error {
  override name = 'Unreachable';
}

export class Refused extends Error {
  override name = 'Refused';
  constructor(
    message: string,
    readonly status: number,
    readonly code: string | null,
  ) {
    super(message);
  }
}

export interface ControlClientOptions {
  apiUrl: string;
  credential: string;
  applianceId: string;
  siteId: string;
  timeoutMs: number;
  fetchImpl?: typeof fetch;
  userAgent?: string;
}

export type SnapshotFetch = { changed: false; etag: string } | { changed: true; etag: string; signed: unknown };

export class ControlClient {
  private readonly base: string;
  private readonly fetchImpl: typeof fetch;

  constructor(private readonly opts: ControlClientOptions) {
    this.base = opts.apiUrl.replace(/\/+$/, '');
    this.fetchImpl = opts.fetchImpl ?? fetch;
  }

  private async call(method: string, path: string, body?: unknown, headers: Record<string, string> = {}, signal?: AbortSignal): Promise<Response> {
    const timeout = AbortSignal.timeout(this.opts.timeoutMs);
    let res: Response;
    try {
      res = await this.fetchImpl(`${this.base}${path}`, {
        method,
        headers: {
          authorization: `Bearer ${this.opts.credential}`,
          'user-agent': this.opts.userAgent ?? 'bootfarm-appliance',
          ...(body === undefined ? {} : { 'content-type': 'application/json' }),
          ...headers,
        },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
      });
    } catch (e) {
      const cause = (e as { cause?: { code?: string } }).cause?.code ?? (e as Error).name;
      throw new Unreachable(`${method} ${path}: ${cause === 'TimeoutError' ? `no answer in ${this.opts.timeoutMs} ms` : cause}`);
    }
    if (res.status >= 500 || res.status === 429) {
      await res.body?.cancel();
      throw new Unreachable(`${method} ${path}: HTTP ${res.status}`);
    }
    if (res.status >= 400) {
      const text = await res.text();
      let code: string | null = null;
      let message = text.slice(0, 300);
      try {
        const j = JSON.parse(text) as { error?: { code?: string; message?: string } };
        code = j.error?.code ?? null;
        message = j.error?.message ?? message;
      } catch {
        /* not JSON */
      }
      throw new Refused(`${method} ${path}: HTTP ${res.status} ${code ?? ''} ${message}`.replace(/\s+/g, ' ').trim(), res.status, code);
    }
    return res;
  }

  /** The site snapshot, or "unchanged" when `etag` is still current (HTTP 304). */
  async snapshot(etag: string | null, signal?: AbortSignal): Promise<SnapshotFetch> {
    const res = await this.call('GET', `/v1/sites/${this.opts.siteId}/snapshot`, undefined, etag ? { 'if-none-match': etag } : {}, signal);
    if (res.status === 304) {
      await res.body?.cancel();
      return { changed: false, etag: etag! };
    }
    const signed = await res.json().catch(() => {
      throw new Unreachable('GET snapshot: truncated or non-JSON answer');
    });
    return { changed: true, etag: res.headers.get('etag') ?? '', signed };
  }

  async manifest(vdiskId: string, number: number, signal?: AbortSignal): Promise<unknown> {
    const res = await this.call('GET', `/v1/vdisks/${vdiskId}/versions/${number}/manifest`, undefined, {}, signal);
    return res.json();
  }

  /** Presigned S3 GET URLs for chunks of a version the site uses (at most 500 per call). */
  async chunkUrls(vdiskId: string, number: number, hashes: string[], signal?: AbortSignal): Promise<{ urls: Record<string, string>; expiresInSeconds: number }> {
    const res = await this.call('POST', `/v1/sites/${this.opts.siteId}/chunk-urls`, { vdiskId, number, hashes }, {}, signal);
    return (await res.json()) as { urls: Record<string, string>; expiresInSeconds: number };
  }

  async reportStatus(report: ApplianceStatusReport, signal?: AbortSignal): Promise<void> {
    const res = await this.call('PUT', `/v1/appliances/${this.opts.applianceId}/status`, report, {}, signal);
    await res.body?.cancel();
  }

  async deliverEvents(events: ApplianceEvent[], signal?: AbortSignal): Promise<EventResult[]> {
    const res = await this.call('POST', `/v1/appliances/${this.opts.applianceId}/events`, { events }, {}, signal);
    return ((await res.json()) as { results: EventResult[] }).results;
  }
}
