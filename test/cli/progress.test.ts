import { describe, expect, it } from 'vitest';
import { progressBar } from '../../cli/push.js';

describe('push progress bar', () => {
  it('shows bytes, percent, rate and ETA on one rewritten line per phase', () => {
    const out: string[] = [];
    let t = 0;
    const bar = progressBar((s) => out.push(s), () => t);
    const MiB = 2 ** 20;
    bar({ phase: 'upload', doneBytes: 0, totalBytes: 100 * MiB });
    t = 2000;
    bar({ phase: 'upload', doneBytes: 50 * MiB, totalBytes: 100 * MiB });
    expect(out.at(-1)).toBe(`\ruploading [${'#'.repeat(15)}${'.'.repeat(15)}]  50% 50.0 MiB/100.0 MiB 25.0 MiB/s ETA 2s `);
    bar({ phase: 'commit', doneBytes: 0, totalBytes: 0 });
    expect(out.slice(-2)).toEqual(['\n', 'verifying and committing...\n']);
  });

  it('redraws at most every 100 ms, but always draws completion', () => {
    const out: string[] = [];
    let t = 1000;
    const bar = progressBar((s) => out.push(s), () => t);
    bar({ phase: 'scan', doneBytes: 1, totalBytes: 10 });
    t += 10;
    bar({ phase: 'scan', doneBytes: 2, totalBytes: 10 });
    expect(out).toHaveLength(1);
    bar({ phase: 'scan', doneBytes: 10, totalBytes: 10 });
    expect(out).toHaveLength(2);
    expect(out[1]).toContain('100%');
  });
});
