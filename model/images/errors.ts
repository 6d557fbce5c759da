/**
 * The one error type of the image readers. Every message starts with the file
 * it is about, so a CLI can print it as is.
 *
 * - `malformed`: the file breaks its format (bad signature, checksum, size, offset).
 * - `unsupported`: valid but outside what these readers handle (a required
 *   region or metadata item they do not know, a VHDX log that needs replay).
 * - `dirty`: a VHDX whose log still holds updates (not closed cleanly); reading
 *   it without replaying the log would return stale data.
 * - `chain`: the files do not form a differencing chain in the order given.
 * - `range`: a caller asked for bytes outside the virtual disk.
 */
export type ImageErrorCode = 'malformed' | 'unsupported' | 'dirty' | 'chain' | 'range';

export class ImageError extends Error {
  constructor(
    readonly code: ImageErrorCode,
    /** The file the problem is in (as the caller named it); empty when it is about no one file. */
    readonly file: string,
    problem: string,
  ) {
    super(file ? `${file}: ${problem}` : problem);
    this.name = 'ImageError';
  }
}

export const isImageError = (e: unknown): e is ImageError => e instanceof ImageError;
