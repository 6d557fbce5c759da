/**
 * Real event shapes for the API's Lambda handlers, built from an HTTP request
 * (method, path, query, headers, body):
 *
 * - a Lambda Function URL event: payload format 2.0 with the placeholders a
 *   Function URL puts where API Gateway features would be (routeKey and stage
 *   `$default`, accountId `anonymous` with auth type NONE, no authorizer);
 *   awsdocs/aws-lambda-developer-guide doc_source/urls-invocation.md
 *   "Request payload format";
 * - an API Gateway HTTP API event, payload format 2.0, `$default` route and
 *   stage, no authorizer; awsdocs/amazon-api-gateway-developer-guide
 *   doc_source/http-api-develop-integrations-lambda.md.
 *
 * Both services (same docs): duplicate headers are combined with commas in
 * `headers`, duplicate query parameters with commas in
 * `queryStringParameters`; cookies arrive in `cookies`, not as a header;
 * header names are lower case; a body of a binary content type is base64 with
 * `isBase64Encoded: true`. Which types are text is not enumerated by AWS;
 * measured against HTTP APIs (ministackorg/ministack#766): text/*,
 * application/json, application/xml and application/javascript arrive as
 * text, everything else (no Content-Type, application/x-www-form-urlencoded,
 * application/merge-patch+json, application/octet-stream...) as base64. Function URLs
 * are taken to follow the same rule (same payload format and wording).
 *
 * Addresses are from 192.0.2.0/24 (TEST-NET-1), the account is 123456789012.
 */
import { randomBytes, randomUUID } from 'node:crypto';

export interface HttpRequest {
  method: string;
  /** Path without query, as sent (percent-encoding kept). */
  path: string;
  /** Raw query string (no leading ?) or parameters (repeat a name with an array). */
  query?: string | Record<string, string | string[]>;
  /** Header values; an array is a header sent several times. */
  headers?: Record<string, string | string[]>;
  body?: string | Uint8Array;
  sourceIp?: string;
}

export interface V2Event {
  version: '2.0';
  routeKey: string;
  rawPath: string;
  rawQueryString: string;
  cookies?: string[];
  headers: Record<string, string>;
  queryStringParameters?: Record<string, string>;
  requestContext: {
    accountId: string;
    apiId: string;
    /** Absent: no mutual TLS (API Gateway), unused (Function URLs). */
    authentication?: null;
    /** Absent: no authorizer (API Gateway), auth type NONE (Function URLs). */
    authorizer?: unknown;
    domainName: string;
    domainPrefix: string;
    http: { method: string; path: string; protocol: string; sourceIp: string; userAgent: string };
    requestId: string;
    routeKey: string;
    stage: string;
    time: string;
    timeEpoch: number;
  };
  body?: string;
  pathParameters?: Record<string, string> | null;
  isBase64Encoded: boolean;
  stageVariables?: Record<string, string> | null;
}

export const REGION = 'eu-west-1';
export const ACCOUNT = '123456789012';
export const SOURCE_IP = '192.0.2.10';
/** A Function URL id: 32 lower-case letters and digits. */
export const URL_ID = 'bf7x2k4qz3m5n6p8r9s2t4v6w8y3a5c7';
export const API_ID = 'a1b2c3d4e5';

const TEXT_TYPES = new Set(['application/json', 'application/xml', 'application/javascript']);

/** Whether the services pass a body of this Content-Type as text (else base64). */
export function isTextContentType(contentType: string | undefined): boolean {
  if (!contentType) return false;
  const essence = contentType.split(';')[0]!.trim().toLowerCase();
  return essence.startsWith('text/') || TEXT_TYPES.has(essence);
}

/** 12/Mar/2020:19:03:58 +0000, the services' requestContext.time. */
export function clfTime(d: Date): string {
  const months = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
  const p = (n: number) => String(n).padStart(2, '0');
  return `${p(d.getUTCDate())}/${months[d.getUTCMonth()]}/${d.getUTCFullYear()}:${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())} +0000`;
}

function rawQuery(q: HttpRequest['query']): string {
  if (q === undefined) return '';
  if (typeof q === 'string') return q.replace(/^\?/, '');
  const parts: string[] = [];
  for (const [k, v] of Object.entries(q)) for (const one of Array.isArray(v) ? v : [v]) parts.push(`${encodeURIComponent(k)}=${encodeURIComponent(one)}`);
  return parts.join('&');
}

/** queryStringParameters: decoded, duplicates joined with commas; absent when there is no query. */
function queryParameters(raw: string): Record<string, string> | undefined {
  if (!raw) return undefined;
  const out: Record<string, string> = {};
  for (const [k, v] of new URLSearchParams(raw)) out[k] = k in out ? `${out[k]},${v}` : v;
  return out;
}

function bodyBytes(body: HttpRequest['body']): Buffer | undefined {
  if (body === undefined) return undefined;
  return typeof body === 'string' ? Buffer.from(body, 'utf8') : Buffer.from(body);
}

/** Headers as the services deliver them: lower-case names, repeats joined by commas, cookies split off. */
function foldHeaders(headers: HttpRequest['headers']): { headers: Record<string, string>; cookies: string[] } {
  const out: Record<string, string> = {};
  const cookies: string[] = [];
  for (const [name, value] of Object.entries(headers ?? {})) {
    const key = name.toLowerCase();
    const values = Array.isArray(value) ? value : [value];
    if (key === 'cookie') {
      for (const v of values) cookies.push(...v.split(';').map((c) => c.trim()).filter(Boolean));
      continue;
    }
    out[key] = key in out ? `${out[key]},${values.join(',')}` : values.join(',');
  }
  return { headers: out, cookies };
}

interface Service {
  accountId: string;
  apiId: string;
  domainName: string;
  requestId: string;
  /** Headers the service adds to every request. */
  added: Record<string, string>;
}

function v2Event(req: HttpRequest, svc: Service): V2Event {
  const now = new Date();
  const method = req.method.toUpperCase();
  const query = rawQuery(req.query);
  const bytes = bodyBytes(req.body);
  const folded = foldHeaders(req.headers);
  const sourceIp = req.sourceIp ?? SOURCE_IP;
  const headers: Record<string, string> = {
    ...(bytes ? { 'content-length': String(bytes.length) } : {}),
    host: svc.domainName,
    'x-amzn-trace-id': `Root=1-${Math.floor(now.getTime() / 1000).toString(16)}-${randomBytes(12).toString('hex')}`,
    'x-forwarded-for': sourceIp,
    'x-forwarded-port': '443',
    'x-forwarded-proto': 'https',
    ...svc.added,
    ...folded.headers,
  };
  const text = isTextContentType(headers['content-type']);
  const params = queryParameters(query);
  return {
    version: '2.0',
    routeKey: '$default',
    rawPath: req.path,
    rawQueryString: query,
    ...(folded.cookies.length ? { cookies: folded.cookies } : {}),
    headers,
    ...(params ? { queryStringParameters: params } : {}),
    requestContext: {
      accountId: svc.accountId,
      apiId: svc.apiId,
      domainName: svc.domainName,
      domainPrefix: svc.domainName.split('.')[0]!,
      http: { method, path: req.path, protocol: 'HTTP/1.1', sourceIp, userAgent: headers['user-agent'] ?? '' },
      requestId: svc.requestId,
      routeKey: '$default',
      stage: '$default',
      time: clfTime(now),
      timeEpoch: now.getTime(),
    },
    ...(bytes ? { body: text ? bytes.toString('utf8') : bytes.toString('base64') } : {}),
    isBase64Encoded: !!bytes && !text,
  };
}

/**
 * A Lambda Function URL event (auth type NONE): accountId "anonymous" (the
 * caller is not signed), no authorizer; pathParameters and stageVariables left out.
 */
export function functionUrlEvent(req: HttpRequest): V2Event {
  const domainName = `${URL_ID}.lambda-url.${REGION}.on.aws`;
  return v2Event(req, {
    accountId: 'anonymous',
    apiId: URL_ID,
    domainName,
    requestId: randomUUID(),
    added: { 'x-amzn-tls-version': 'TLSv1.3', 'x-amzn-tls-cipher-suite': 'TLS_AES_128_GCM_SHA256' },
  });
}

/** An API Gateway HTTP API event ($default route and stage, no authorizer, so no pathParameters or authorizer). */
export function httpApiEvent(req: HttpRequest): V2Event {
  // API Gateway request ids look like "JK3tbh0LIAMEM9w=": 14 characters of base64 and a pad.
  const requestId = `${randomBytes(11).toString('base64').slice(0, 15)}=`;
  return v2Event(req, {
    accountId: ACCOUNT,
    apiId: API_ID,
    domainName: `${API_ID}.execute-api.${REGION}.amazonaws.com`,
    requestId,
    added: {},
  });
}

/** A request from `fetch`-style arguments (what ApiClient sends), for the builders above. */
export async function requestFromFetch(input: string | URL | Request, init: RequestInit = {}): Promise<HttpRequest> {
  const req = new Request(input, init);
  const url = new URL(req.url);
  const headers: Record<string, string> = {};
  req.headers.forEach((v, k) => (headers[k] = v));
  const body = req.body ? new Uint8Array(await req.arrayBuffer()) : undefined;
  return { method: req.method, path: url.pathname, query: url.search.slice(1), headers, ...(body && body.length ? { body } : {}) };
}
