import { describe, expect, it } from 'vitest';
import { diffObjects } from '../../model/index.js';

describe('diffObjects', () => {
  it('reports nothing for equal objects, key order aside', () => {
    expect(diffObjects({ a: 1, b: { c: [1, 2] } }, { b: { c: [1, 2] }, a: 1 })).toEqual([]);
  });

  it('walks nested objects and names changes with dotted paths, sorted', () => {
    expect(diffObjects({ name: 'a', bootstrap: { verbose: false, pollingTimeoutMs: 5000 } }, { name: 'b', bootstrap: { verbose: true, pollingTimeoutMs: 5000 } })).toEqual([
      { property: 'bootstrap.verbose', old: false, new: true },
      { property: 'name', old: 'a', new: 'b' },
    ]);
  });

  it('compares arrays whole', () => {
    expect(diffObjects({ servers: [{ address: '192.0.2.1' }] }, { servers: [{ address: '192.0.2.2' }] })).toEqual([
      { property: 'servers', old: [{ address: '192.0.2.1' }], new: [{ address: '192.0.2.2' }] },
    ]);
  });

  it('records added and removed properties with null on the missing side', () => {
    expect(diffObjects({}, { a: 1, n: { x: true } })).toEqual([
      { property: 'a', old: null, new: 1 },
      { property: 'n.x', old: null, new: true },
    ]);
    expect(diffObjects({ a: 1 }, {})).toEqual([{ property: 'a', old: 1, new: null }]);
  });

  it('records nothing for a property that is absent on one side and null on the other', () => {
    expect(diffObjects({}, { templateTargetMac: null, autoAdd: { siteId: null } })).toEqual([]);
  });

  it('treats a change between null and an object as one change of the whole value', () => {
    expect(diffObjects({ lastBoot: null }, { lastBoot: { at: 't' } })).toEqual([{ property: 'lastBoot', old: null, new: { at: 't' } }]);
  });
});
