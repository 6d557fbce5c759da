/**
 * A stand-in for the parts of the AWS Lambda Node.js runtime that a handler
 * sees, so the very bundle `cdk deploy` uploads can be invoked in a test:
 *
 * - the `awslambda` global (`streamifyResponse`, `HttpResponseStream`), which
 *   the runtime installs before it loads the function's module;
 * - the response stream a streaming handler writes to;
 * - what the Function URL service does with that stream (RESPONSE_STREAM
 *   mode): a JSON prelude, 8 NUL bytes, then the body;
 * - a buffered invocation (the handler's return value, as API Gateway or a
 *   BUFFERED Function URL reads it), with Lambda's 6 MB payload limits.
 *
 * Modelled on aws/aws-lambda-nodejs-runtime-interface-client:
 * - src/UserFunction.js `_loadUserApp`: `globalThis.awslambda = { streamifyResponse(handler, options) {
 *   handler[Symbol.for('aws.lambda.runtime.handler.streaming')] = 'response'; ... return handler }, HttpResponseStream }`,
 *   installed before the module is imported (so calling it at module load works).
 * - src/HttpResponseStream.js (and src/stream/http-response-stream.ts): `from(underlyingStream, prelude)` calls
 *   `underlyingStream.setContentType('application/vnd.awslambda.http-integration-response')`, and sets
 *   `underlyingStream._onBeforeFirstWrite = (write) => { write(JSON.stringify(prelude)); write(new Uint8Array(8)) }`.
 * - src/ResponseStream.js `createResponseStream`: default content type application/octet-stream; `write()` turns
 *   a chunk that is not a string, Buffer or Uint8Array into JSON, calls `_onBeforeFirstWrite(origWrite)` before the
 *   first write only; `setContentType` after the first write throws ("Cannot set content-type, too late.");
 *   the handler gets `writableStreamOnly(req)`: an object exposing only the Writable methods, EventEmitter
 *   methods, `setContentType` and a few properties (not the stream object itself).
 */
import { randomUUID } from 'node:crypto';
import { Writable } from 'node:stream';

const HANDLER_STREAMING = Symbol.for('aws.lambda.runtime.handler.streaming');
const HANDLER_HIGHWATERMARK = Symbol.for('aws.lambda.runtime.handler.streaming.highWaterMark');
const STREAM_RESPONSE = 'response';
export const METADATA_PRELUDE_CONTENT_TYPE = 'application/vnd.awslambda.http-integration-response';
const DELIMITER_LEN = 8;
const DEFAULT_CONTENT_TYPE = 'application/octet-stream';

/** Lambda's synchronous invocation limit, request and buffered response (6 MB: 6,291,456 bytes). */
export const MAX_BUFFERED_PAYLOAD = 6 * 1024 * 1024;
/** RESPONSE_STREAM Function URLs: "The maximum response payload size is 200 MB" (config-rs-invoke-furls). */
export const MAX_STREAMED_RESPONSE = 200 * 1024 * 1024;

export class InvalidStreamingOperation extends Error {
  override name = 'Runtime.InvalidStreamingOperation';
}

/** src/HttpResponseStream.js, as the runtime exposes it on `awslambda`. */
export class HttpResponseStream {
  static from(underlyingStream: RuntimeResponseStream, prelude: Record<string, unknown>): RuntimeResponseStream {
    underlyingStream.setContentType(METADATA_PRELUDE_CONTENT_TYPE);
    // JSON.stringify is required. NULL byte is not allowed in metadataPrelude.
    const metadataPrelude = JSON.stringify(prelude);
    underlyingStream._onBeforeFirstWrite = (write) => {
      write(metadataPrelude);
      // Write 8 null bytes after the JSON prelude.
      write(new Uint8Array(DELIMITER_LEN));
    };
    return underlyingStream;
  }
}

/** What a streaming handler receives (the runtime's writableStreamOnly view). */
export interface RuntimeResponseStream {
  write(chunk: unknown, encoding?: BufferEncoding | ((err?: Error | null) => void), callback?: (err?: Error | null) => void): boolean;
  end(...args: unknown[]): unknown;
  setContentType(contentType: string): void;
  on(event: string, listener: (...args: any[]) => void): unknown;
  once(event: string, listener: (...args: any[]) => void): unknown;
  _onBeforeFirstWrite?: (write: (chunk: string | Uint8Array) => void) => void;
  readonly writableEnded: boolean;
  readonly writableFinished: boolean;
  destroyed: boolean;
  writable: boolean;
  [key: string]: unknown;
}

/**
 * The transport behind the handler's stream (in Lambda an HTTP/1.1 chunked
 * request to the runtime API): records every byte and the content type.
 */
class InvocationResponse extends Writable {
  contentType = DEFAULT_CONTENT_TYPE;
  _onBeforeFirstWrite: ((write: (chunk: string | Uint8Array) => void) => void) | undefined;
  readonly chunks: Buffer[] = [];
  /** write() calls the handler made (the prelude's own writes not counted). */
  handlerWrites = 0;
  private status: 'ready' | 'write_called' = 'ready';

  constructor(highWaterMark?: number) {
    super(highWaterMark ? { highWaterMark } : {});
  }

  setContentType(contentType: string): void {
    if (this.status !== 'ready') throw new InvalidStreamingOperation('Cannot set content-type, too late.');
    this.contentType = contentType;
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.chunks.push(Buffer.from(chunk));
    callback();
  }

  override write(chunk: any, encoding?: any, callback?: any): boolean {
    if (typeof chunk !== 'string' && !Buffer.isBuffer(chunk) && chunk?.constructor !== Uint8Array) chunk = JSON.stringify(chunk);
    if (this.status === 'ready' && typeof this._onBeforeFirstWrite === 'function') this._onBeforeFirstWrite((ch) => super.write(ch));
    this.handlerWrites++;
    const ret = super.write(chunk, encoding, callback);
    if (this.status === 'ready') this.status = 'write_called';
    return ret;
  }
}

/** src/ResponseStream.js writableStreamOnly: the handler sees these members only. */
function writableStreamOnly(inner: InvocationResponse): RuntimeResponseStream {
  const fns = [
    'cork', 'destroy', 'end', 'uncork', 'write',
    'addListener', 'emit', 'eventNames', 'getMaxListeners', 'listenerCount', 'listeners', 'off', 'on', 'once',
    'prependListener', 'prependOnceListener', 'rawListeners', 'removeAllListeners', 'removeListener', 'setMaxListeners',
    'setContentType',
  ] as const;
  const propsReadWrite = ['destroyed', 'writable', '_onBeforeFirstWrite'] as const;
  const propsReadOnly = [
    'writableFinished', 'writableObjectMode', 'writableBuffer', 'writableEnded', 'writableNeedDrain', 'writableHighWaterMark', 'writableCorked', 'writableLength',
  ] as const;
  const target = inner as unknown as Record<string, any>;
  const stream = Object.fromEntries(fns.map((fn) => [fn, (target[fn] as (...a: unknown[]) => unknown).bind(inner)]));
  for (const prop of propsReadWrite)
    Object.defineProperty(stream, prop, { get: () => target[prop], set: (v) => (target[prop] = v), enumerable: true });
  for (const prop of propsReadOnly) Object.defineProperty(stream, prop, { get: () => target[prop], enumerable: true });
  return stream as unknown as RuntimeResponseStream;
}

type AnyHandler = ((...args: any[]) => unknown) & { [HANDLER_STREAMING]?: unknown; [HANDLER_HIGHWATERMARK]?: unknown };

export const awslambda = {
  streamifyResponse<H extends AnyHandler>(handler: H, options?: { highWaterMark?: number }): H {
    handler[HANDLER_STREAMING] = STREAM_RESPONSE;
    if (typeof options?.highWaterMark === 'number') handler[HANDLER_HIGHWATERMARK] = Math.trunc(options.highWaterMark);
    return handler;
  },
  HttpResponseStream,
};

/** Installs `awslambda` on globalThis (before the function's module is imported); returns the uninstaller. */
export function installLambdaRuntime(): () => void {
  const g = globalThis as Record<string, unknown>;
  const had = Object.prototype.hasOwnProperty.call(g, 'awslambda');
  const previous = g.awslambda;
  g.awslambda = awslambda;
  return () => {
    if (had) g.awslambda = previous;
    else delete g.awslambda;
  };
}

/** The runtime's UserFunction.getHandlerMetadata: 'response' for a streaming handler, false otherwise. */
export function isStreamingHandler(handler: unknown): boolean {
  return typeof handler === 'function' && (handler as AnyHandler)[HANDLER_STREAMING] === STREAM_RESPONSE;
}

export interface LambdaContext {
  functionName: string;
  functionVersion: string;
  invokedFunctionArn: string;
  memoryLimitInMB: string;
  awsRequestId: string;
  logGroupName: string;
  logStreamName: string;
  callbackWaitsForEmptyEventLoop: boolean;
  getRemainingTimeInMillis(): number;
}

export function lambdaContext(overrides: Partial<LambdaContext> = {}): LambdaContext {
  const deadline = Date.now() + 15 * 60 * 1000;
  return {
    functionName: 'bootfarm-dev-ApiFunction',
    functionVersion: '$LATEST',
    invokedFunctionArn: 'arn:aws:lambda:eu-west-1:123456789012:function:bootfarm-dev-ApiFunction',
    memoryLimitInMB: '1024',
    awsRequestId: randomUUID(),
    logGroupName: '/aws/lambda/bootfarm-dev-ApiFunction',
    logStreamName: `2024/01/01/[$LATEST]${randomUUID().replace(/-/g, '')}`,
    callbackWaitsForEmptyEventLoop: true,
    getRemainingTimeInMillis: () => Math.max(0, deadline - Date.now()),
    ...overrides,
  };
}

/** The HTTP response a client of the Function URL / API Gateway would get. */
export interface HttpResult {
  statusCode: number;
  /** Header names lower-cased (set-cookie excluded: see cookies). */
  headers: Record<string, string>;
  cookies: string[];
  body: Buffer;
}

export interface StreamingResult extends HttpResult {
  /** Content type the handler's stream carried (the integration type when it used HttpResponseStream.from). */
  streamContentType: string;
  /** Everything the handler wrote, prelude included. */
  raw: Buffer;
  /** write() calls the handler made on the stream. */
  writes: number;
}

/** The event as Lambda delivers it: JSON on the wire (no Buffers, no undefined), at most 6 MB. */
function overTheWire(event: unknown): unknown {
  const json = JSON.stringify(event);
  if (Buffer.byteLength(json) > MAX_BUFFERED_PAYLOAD) throw new Error(`Request must be smaller than ${MAX_BUFFERED_PAYLOAD} bytes for the InvokeFunction operation`);
  return JSON.parse(json);
}

function lowerCaseHeaders(h: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries((h ?? {}) as Record<string, unknown>)) out[k.toLowerCase()] = String(v);
  return out;
}

/**
 * Splits what a streaming handler wrote the way a RESPONSE_STREAM Function URL
 * does: with the integration content type, the JSON prelude runs up to the
 * first 8 NUL bytes (JSON cannot contain a raw NUL), the body is the rest.
 * Without it, the whole stream is a 200 body of the stream's content type.
 */
export function parseStreamedResponse(raw: Buffer, streamContentType: string): HttpResult {
  if (streamContentType !== METADATA_PRELUDE_CONTENT_TYPE) return { statusCode: 200, headers: { 'content-type': streamContentType }, cookies: [], body: raw };
  const at = raw.indexOf(Buffer.alloc(DELIMITER_LEN));
  if (at < 0) throw new Error(`streamed response: no ${DELIMITER_LEN}-NUL delimiter after the prelude (${raw.length} bytes written)`);
  const prelude = JSON.parse(raw.subarray(0, at).toString('utf8')) as { statusCode?: number; headers?: Record<string, string>; cookies?: string[] };
  return {
    statusCode: prelude.statusCode ?? 200,
    headers: lowerCaseHeaders(prelude.headers),
    cookies: prelude.cookies ?? [],
    body: raw.subarray(at + DELIMITER_LEN),
  };
}

/**
 * Invokes a streaming handler as the runtime does (event, responseStream,
 * context), waits for the handler and the end of its stream, and returns the
 * HTTP response the Function URL would send.
 */
export async function invokeStreaming(handler: unknown, event: unknown, context: LambdaContext = lambdaContext()): Promise<StreamingResult> {
  if (!isStreamingHandler(handler)) throw new Error('not a streaming handler: awslambda.streamifyResponse was not applied');
  const h = handler as AnyHandler;
  const hwm = typeof h[HANDLER_HIGHWATERMARK] === 'number' ? (h[HANDLER_HIGHWATERMARK] as number) : undefined;
  const inner = new InvocationResponse(hwm);
  const finished = new Promise<void>((resolve, reject) => {
    inner.once('finish', () => resolve());
    inner.once('error', reject);
  });
  await h(overTheWire(event), writableStreamOnly(inner), context);
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    finished,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error('the handler returned but never ended its response stream')), 10_000);
    }),
  ]).finally(() => clearTimeout(timer));
  const raw = Buffer.concat(inner.chunks);
  if (raw.length > MAX_STREAMED_RESPONSE) throw new Error(`streamed response of ${raw.length} bytes exceeds ${MAX_STREAMED_RESPONSE}`);
  return { ...parseStreamedResponse(raw, inner.contentType), streamContentType: inner.contentType, raw, writes: inner.handlerWrites };
}

/**
 * Invokes a buffered handler (event, context), checks Lambda's 6 MB response
 * limit on the serialised result, and maps it as API Gateway / a BUFFERED
 * Function URL does (payload 2.0: statusCode, headers, cookies, body, isBase64Encoded).
 */
export async function invokeBuffered(handler: unknown, event: unknown, context: LambdaContext = lambdaContext()): Promise<HttpResult & { result: Record<string, unknown> }> {
  if (typeof handler !== 'function') throw new Error('handler is not a function');
  if (isStreamingHandler(handler)) throw new Error('a streaming handler cannot be invoked buffered');
  const returned = await (handler as AnyHandler)(overTheWire(event), context);
  const json = JSON.stringify(returned);
  if (Buffer.byteLength(json) > MAX_BUFFERED_PAYLOAD) throw new Error(`Response payload size exceeded maximum allowed payload size (${MAX_BUFFERED_PAYLOAD} bytes).`);
  const result = JSON.parse(json) as { statusCode?: number; headers?: Record<string, string>; cookies?: string[]; body?: string; isBase64Encoded?: boolean };
  const body = result.body === undefined ? Buffer.alloc(0) : result.isBase64Encoded ? Buffer.from(result.body, 'base64') : Buffer.from(result.body, 'utf8');
  return { statusCode: result.statusCode ?? 200, headers: lowerCaseHeaders(result.headers), cookies: result.cookies ?? [], body, result: result as Record<string, unknown> };
}
