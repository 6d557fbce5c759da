import { describe, expect, it } from 'vitest';
import { AutoAddNamingSchema, CollectionInputSchema, FarmError, autoAddName, checkCollection } from '../../model/index.js';

const naming = (o: Record<string, unknown> = {}) => AutoAddNamingSchema.parse(o);

describe('autoAddName', () => {
  it('is prefix + zero-filled number + suffix', () => {
    expect(autoAddName(naming({ prefix: 'lab-', numberLength: 4 }), 7)).toBe('lab-0007');
    expect(autoAddName(naming({ prefix: 'pc', numberLength: 3, suffix: '-x' }), 42)).toBe('pc042-x');
    expect(autoAddName(naming({ suffix: 'w', numberLength: 2 }), 5)).toBe('05w');
  });

  it('uses the full width when the number fills it exactly', () => {
    expect(autoAddName(naming({ prefix: 'a', numberLength: 2 }), 99)).toBe('a99');
  });

  it('refuses a number longer than numberLength (the numbers are used up)', () => {
    expect(() => autoAddName(naming({ prefix: 'a', numberLength: 2 }), 100)).toThrow(FarmError);
    expect(() => autoAddName(naming({ prefix: 'a', numberLength: 2 }), 100)).toThrow(/used up/);
  });
});

describe('checkCollection', () => {
  const col = (autoAdd: Record<string, unknown>) => CollectionInputSchema.parse({ siteId: 'site_aaaaaaaaaaaaaaaa', name: 'lab', autoAdd });

  it('defaults auto-add naming to target-NNNN', () => {
    const c = CollectionInputSchema.parse({ siteId: 'site_aaaaaaaaaaaaaaaa', name: 'lab' });
    expect(c.autoAdd).toEqual({ prefix: 'target-', numberLength: 4, suffix: '', startNumber: 1 });
    expect(() => checkCollection(c)).not.toThrow();
  });

  it('refuses names longer than 15 characters', () => {
    expect(() => checkCollection(col({ prefix: 'abcdefghij', numberLength: 6 }))).toThrow(/at most 15 characters/);
    expect(() => checkCollection(col({ prefix: 'abcdefghij', numberLength: 5 }))).not.toThrow();
  });

  it('refuses naming without a prefix or a suffix (names would be all digits)', () => {
    let err: unknown;
    try {
      checkCollection(col({ prefix: '' }));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(FarmError);
    expect((err as FarmError).field).toBe('autoAdd.prefix');
  });
});
