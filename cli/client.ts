/** A small JSON client for the control-plane API: one clear error per failure. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly field?: string,
  ) {
    super(message);
  }
}

export interface ApiResponse<T> {
  status: number;
  body: T;
  etag: string | null;
}

export class ApiClient {
  constructor(
    private readonly api: string,
    private readonly token: string,
    private readonly fetchImpl: typeof fetch = fetch,
  ) {}

  async request<T = any>(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<ApiResponse<T>> {
    let res: Response;
    try {
      res = await this.fetchImpl(`${this.api}${path}`, {
        method,
        headers: { authorization: `Bearer ${this.token}`, accept: 'application/json', ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      throw new ApiError(0, 'unreachable', `cannot reach ${this.api}: ${(e as Error & { cause?: Error }).cause?.message ?? (e as Error).message}`);
    }
    const text = await res.text();
    let parsed: any = null;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      parsed = text;
    }
    if (!res.ok) {
      const err = parsed?.error;
      throw new ApiError(res.status, err?.code ?? 'http_error', err?.message ?? `${method} ${path}: HTTP ${res.status}`, err?.field);
    }
    return { status: res.status, body: parsed as T, etag: res.headers.get('etag') };
  }

  get<T = any>(path: string) {
    return this.request<T>('GET', path);
  }

  /** Every item of a paginated listing. */
  async all<T = any>(path: string): Promise<T[]> {
    const out: T[] = [];
    let cursor: string | null = null;
    do {
      const sep = path.includes('?') ? '&' : '?';
      const page: { items: T[]; nextCursor: string | null } = (await this.get(`${path}${sep}limit=1000${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`)).body;
      out.push(...page.items);
      cursor = page.nextCursor;
    } while (cursor);
    return out;
  }
}
