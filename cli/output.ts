/** Human output: aligned tables for lists, key/value lines for one object. */

export type Column<T> = [header: string, value: (row: T) => unknown];

const cell = (v: unknown): string => {
  if (v === null || v === undefined || v === '') return '-';
  if (Array.isArray(v)) return v.length ? v.map(cell).join(',') : '-';
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
};

export function table<T>(rows: T[], columns: Column<T>[]): string {
  const cells = rows.map((r) => columns.map(([, f]) => cell(f(r))));
  const widths = columns.map(([h], i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  const line = (vals: string[]) => vals.map((v, i) => (i === vals.length - 1 ? v : v.padEnd(widths[i]!))).join('  ');
  return [line(columns.map(([h]) => h.toUpperCase())), ...cells.map(line)].join('\n');
}

/** Flattens nested objects into dotted keys, the same paths `--set` takes. */
export function keyValues(o: Record<string, unknown>, prefix = ''): [string, string][] {
  return Object.entries(o).flatMap(([k, v]) => {
    const key = prefix ? `${prefix}.${k}` : k;
    if (v && typeof v === 'object' && !Array.isArray(v) && Object.keys(v).length) return keyValues(v as Record<string, unknown>, key);
    return [[key, Array.isArray(v) ? (v.length ? JSON.stringify(v) : '[]') : cell(v)] as [string, string]];
  });
}

export function show(o: Record<string, unknown>): string {
  const kv = keyValues(o);
  const w = Math.max(...kv.map(([k]) => k.length));
  return kv.map(([k, v]) => `${k.padEnd(w)}  ${v}`).join('\n');
}

/** Parses `--set path=value`: JSON when it parses (numbers, booleans, null, arrays), a string otherwise. */
export function parseAssignments(sets: string[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const s of sets) {
    const eq = s.indexOf('=');
    if (eq <= 0) throw new UsageError(`--set ${s}: expected path=value, e.g. bootstrap.verbose=true`);
    const path = s.slice(0, eq).split('.');
    const raw = s.slice(eq + 1);
    let value: unknown;
    try {
      value = JSON.parse(raw);
    } catch {
      value = raw;
    }
    let node = out;
    for (const part of path.slice(0, -1)) {
      if (typeof node[part] !== 'object' || node[part] === null) node[part] = {};
      node = node[part] as Record<string, unknown>;
    }
    node[path.at(-1)!] = value;
  }
  return out;
}

/** Sizes like 64G, 512MiB, 1T, or plain bytes. */
export function parseSize(s: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)?$/i.exec(s.trim());
  if (!m) throw new UsageError(`size "${s}": expected bytes or a number with K, M, G or T (powers of 1024)`);
  const n = Number(m[1]) * 1024 ** ' kmgt'.indexOf((m[2] || ' ').toLowerCase());
  if (!Number.isSafeInteger(n)) throw new UsageError(`size "${s}": must be a whole number of bytes`);
  return n;
}

export class UsageError extends Error {}
