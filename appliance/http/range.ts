/**
 * HTTP byte ranges (RFC 9110 14.1-14.4) for disk reads: one range per request,
 * as iPXE sends. iPXE's SAN reads must get exactly the bytes asked for (a 200
 * with the whole disk would overflow its buffer), so anything else is refused.
 */
export type RangeResult =
  | { kind: 'whole' }
  | { kind: 'range'; start: number; end: number }
  /** 416: not satisfiable for this size (or several ranges, which disks never need). */
  | { kind: 'unsatisfiable'; why: string };

export function parseRange(header: string | undefined, size: number): RangeResult {
  if (header === undefined) return { kind: 'whole' };
  const m = /^\s*bytes\s*=\s*(.*)$/i.exec(header);
  if (!m) return { kind: 'unsatisfiable', why: 'only byte ranges are served' };
  const specs = m[1]!.split(',').map((x) => x.trim()).filter(Boolean);
  if (specs.length !== 1) return { kind: 'unsatisfiable', why: 'one range per request' };
  const r = /^(\d*)-(\d*)$/.exec(specs[0]!);
  if (!r || (r[1] === '' && r[2] === '')) return { kind: 'unsatisfiable', why: `malformed range ${specs[0]}` };
  if (r[1] === '') {
    // Suffix: the last N bytes.
    const n = Number(r[2]);
    if (!Number.isSafeInteger(n) || n === 0) return { kind: 'unsatisfiable', why: 'empty suffix range' };
    return { kind: 'range', start: Math.max(0, size - n), end: size - 1 };
  }
  const start = Number(r[1]);
  const end = r[2] === '' ? size - 1 : Math.min(Number(r[2]), size - 1);
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start >= size || end < start) return { kind: 'unsatisfiable', why: `range ${specs[0]} is outside the ${size}-byte disk` };
  return { kind: 'range', start, end };
}
