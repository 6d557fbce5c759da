/**
 * MAC addresses: targets are keyed by MAC, as in PVS. Every accepted spelling
 * (00-15-5D-01-02-03, 00:15:5d:01:02:03, 0015.5d01.0203, 00155D010203) maps to
 * one canonical form, lower-case and colon-separated: the form iPXE's ${mac}
 * expands to, so a boot script URL needs no translation.
 */
const HEX12 = /^[0-9a-f]{12}$/;

export function normalizeMac(input: string): string | null {
  const raw = input.trim().toLowerCase();
  let hex: string;
  if (/^([0-9a-f]{2}[:-]){5}[0-9a-f]{2}$/.test(raw)) {
    if (new Set(raw.replace(/[0-9a-f]/g, '')).size !== 1) return null; // mixed separators
    hex = raw.replace(/[:-]/g, '');
  } else if (/^[0-9a-f]{4}\.[0-9a-f]{4}\.[0-9a-f]{4}$/.test(raw)) {
    hex = raw.replace(/\./g, '');
  } else {
    hex = raw;
  }
  if (!HEX12.test(hex)) return null;
  return hex.match(/../g)!.join(':');
}

/** The PVS display form, 00-15-5D-01-02-03. */
export function pvsMac(canonical: string): string {
  return canonical.toUpperCase().replace(/:/g, '-');
}

export function isMulticastMac(canonical: string): boolean {
  return (parseInt(canonical.slice(0, 2), 16) & 1) === 1;
}
