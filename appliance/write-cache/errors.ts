/**
 * What a write-cache overlay throws besides RangeError (bad offsets) and the
 * file system's own errno errors, which pass through untouched.
 */

/**
 * A write needed new blocks beyond the overlay's limit: nothing of that
 * request was written. Carries `code: 'ENOSPC'` so an errno mapping that
 * looks at `code` (nbd/server.ts `errnoOf`) answers ENOSPC without knowing
 * this class.
 */
export class OverlayFull extends Error {
  readonly code = 'ENOSPC';
  constructor(
    message: string,
    /** Bytes of data blocks the request would have added. */
    readonly neededBytes: number,
    readonly usedBytes: number,
    readonly limitBytes: number,
  ) {
    super(message);
    this.name = 'OverlayFull';
  }
}

/** The folder holds an overlay made for another disk (identity or geometry): discard it and make a new one. */
export class OverlayMismatch extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'OverlayMismatch';
  }
}

/**
 * The folder's files are not a usable overlay (meta.json unreadable or of an
 * unknown format, a file missing or of the wrong size, an invalid map entry).
 * A kind of mismatch, so a caller that discards on OverlayMismatch discards
 * this too; one that wants to keep the evidence can tell them apart.
 */
export class OverlayCorrupt extends OverlayMismatch {
  constructor(message: string) {
    super(message);
    this.name = 'OverlayCorrupt';
  }
}
