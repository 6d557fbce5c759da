/**
 * The closed set of failures the farm reports. Every layer throws FarmError;
 * each edge maps the code once: HTTP status in functions/errors.ts, later TFTP
 * error packets and NBD errno on the appliance.
 */
export const ERROR_CODES = [
  'bad_request',
  'validation_failed',
  'unauthenticated',
  'forbidden',
  'not_found',
  'already_exists',
  'version_mismatch',
  'in_use',
  'upload_incomplete',
  'precondition_required',
  'internal',
] as const;
export type ErrorCode = (typeof ERROR_CODES)[number];

export class FarmError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    /** The request field the error is about, dotted (e.g. `bootstrap.servers.0.port`). */
    readonly field?: string,
  ) {
    super(message);
    this.name = 'FarmError';
  }
}

export const isFarmError = (e: unknown): e is FarmError => e instanceof FarmError;
