/**
 * The one place FarmError codes become HTTP. Every error response has the
 * same body: { error: { code, message, field? } }.
 */
import type { Context } from 'hono';
import { HTTPException } from 'hono/http-exception';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import { z } from 'zod';
import { ERROR_CODES, FarmError, describeIssues, type ErrorCode } from '../model/index.js';

export const HTTP_STATUS: Record<ErrorCode, ContentfulStatusCode> = {
  bad_request: 400,
  validation_failed: 400,
  unauthenticated: 401,
  forbidden: 403,
  not_found: 404,
  already_exists: 409,
  version_mismatch: 409,
  in_use: 409,
  upload_incomplete: 409,
  precondition_required: 428,
  internal: 500,
};

export const ErrorBodySchema = z
  .object({
    error: z.object({
      code: z.enum(ERROR_CODES),
      message: z.string(),
      field: z.string().optional(),
    }),
  })
  .meta({ id: 'Error' });

export function errorBody(code: ErrorCode, message: string, field?: string) {
  return { error: field ? { code, message, field } : { code, message } };
}

export function validationError(error: z.ZodError, where?: string): FarmError {
  const { message, field } = describeIssues(error);
  return new FarmError('validation_failed', where && !field ? `${where}: ${message}` : message, field);
}

export function toResponse(err: unknown, c: Context, log: (line: string) => void): Response {
  if (err instanceof FarmError) {
    if (err.code === 'unauthenticated') c.header('WWW-Authenticate', 'Bearer realm="bootfarm"');
    return c.json(errorBody(err.code, err.message, err.field), HTTP_STATUS[err.code]);
  }
  if (err instanceof HTTPException) {
    const status = err.status;
    const code: ErrorCode = status === 413 ? 'bad_request' : status === 401 ? 'unauthenticated' : status < 500 ? 'bad_request' : 'internal';
    return c.json(errorBody(code, err.message || 'bad request'), status as ContentfulStatusCode);
  }
  log(`internal error on ${c.req.method} ${c.req.path}: ${(err as Error)?.stack ?? String(err)}`);
  return c.json(errorBody('internal', 'internal error; the details are in the server log'), 500);
}
