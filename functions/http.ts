import type { Context } from 'hono';
import { FarmError } from '../model/index.js';
import type { Expected } from './storage/repo.js';

/** ETag of a stored object: its version, as a strong validator. */
export const etag = (version: number) => `"${version}"`;

/**
 * If-Match → the version a write expects. `required` for PATCH: bootfarm never
 * lets a write silently overwrite a change the writer has not seen.
 */
export function expectedVersion(c: Context, required: boolean): Expected {
  const h = c.req.header('if-match');
  if (h === undefined || h === '') {
    if (required) throw new FarmError('precondition_required', 'If-Match header required: send the ETag of the object you read (or * to overwrite whatever is there)');
    return null;
  }
  if (h.trim() === '*') return null;
  const m = /^\s*(?:W\/)?"(\d{1,15})"\s*$/.exec(h);
  if (!m) throw new FarmError('bad_request', 'If-Match: must be an ETag such as "3"', 'If-Match');
  return Number(m[1]);
}
