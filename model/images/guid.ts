/**
 * GUIDs as Microsoft stores them on disk (MS-DTYP 2.3.4.2): Data1, Data2 and
 * Data3 little-endian, Data4 as bytes. Strings are lower-case, without braces.
 */
export function guidToString(buf: Buffer, offset = 0): string {
  const hex = (start: number, end: number) => buf.subarray(offset + start, offset + end).toString('hex');
  const d1 = buf.readUInt32LE(offset).toString(16).padStart(8, '0');
  const d2 = buf.readUInt16LE(offset + 4).toString(16).padStart(4, '0');
  const d3 = buf.readUInt16LE(offset + 6).toString(16).padStart(4, '0');
  return `${d1}-${d2}-${d3}-${hex(8, 10)}-${hex(10, 16)}`;
}

const GUID_TEXT = /^\{?([0-9a-f]{8})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{12})\}?$/i;

/** Parses `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, braces optional; undefined when it is not a GUID. */
export function normalizeGuid(text: string): string | undefined {
  const m = GUID_TEXT.exec(text.trim());
  return m ? m.slice(1).join('-').toLowerCase() : undefined;
}

/** The 16 on-disk bytes of a GUID string. */
export function guidToBytes(text: string): Buffer {
  const g = normalizeGuid(text);
  if (!g) throw new Error(`not a GUID: ${text}`);
  const [d1, d2, d3, d4a, d4b] = g.split('-') as [string, string, string, string, string];
  const out = Buffer.alloc(16);
  out.writeUInt32LE(parseInt(d1, 16), 0);
  out.writeUInt16LE(parseInt(d2, 16), 4);
  out.writeUInt16LE(parseInt(d3, 16), 6);
  Buffer.from(d4a + d4b, 'hex').copy(out, 8);
  return out;
}

export const isZeroGuid = (buf: Buffer, offset = 0): boolean => buf.subarray(offset, offset + 16).every((b) => b === 0);
