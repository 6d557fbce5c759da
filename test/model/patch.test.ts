import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { SiteInputSchema, describeIssues, mergePatch, patchSchemaOf } from '../../model/index.js';

describe('mergePatch', () => {
  it('merges objects member by member and keeps what the patch does not name', () => {
    expect(mergePatch({ a: 1, n: { x: 1, y: 2 } }, { n: { y: 3 } })).toEqual({ a: 1, n: { x: 1, y: 3 } });
  });

  it('replaces arrays and scalars whole', () => {
    expect(mergePatch({ list: [1, 2, 3], s: 'a' }, { list: [4], s: 'b' })).toEqual({ list: [4], s: 'b' });
  });

  it('sets a field to null on null instead of removing it (unlike RFC 7396)', () => {
    expect(mergePatch({ a: 'x', n: { y: 1 } }, { a: null, n: null })).toEqual({ a: null, n: null });
  });

  it('puts an object where there was null or nothing', () => {
    expect(mergePatch({ a: null } as Record<string, unknown>, { a: { b: 1 }, c: { d: 2 } })).toEqual({ a: { b: 1 }, c: { d: 2 } });
  });

  it('ignores undefined members and does not modify its inputs', () => {
    const target = { a: 1, n: { x: 1 } };
    const patch = { a: undefined, n: { x: 2 } };
    expect(mergePatch(target, patch)).toEqual({ a: 1, n: { x: 2 } });
    expect(target).toEqual({ a: 1, n: { x: 1 } });
  });

  it('returns the patch itself when either side is not an object', () => {
    expect(mergePatch({ a: 1 }, [1])).toEqual([1]);
    expect(mergePatch('x', { a: 1 })).toEqual({ a: 1 });
  });
});

describe('patchSchemaOf', () => {
  const patch = patchSchemaOf(SiteInputSchema);

  it('accepts an empty patch and adds no defaults', () => {
    expect(patch.parse({})).toEqual({});
    expect(patch.parse({ bootstrap: { verbose: true } })).toEqual({ bootstrap: { verbose: true } });
  });

  it('keeps the field rules and strictness at every level', () => {
    expect(patch.safeParse({ bootstrap: { pollingTimeoutMs: 10 } }).success).toBe(false);
    expect(patch.safeParse({ id: 'x' }).success).toBe(false);
    expect(patch.safeParse({ bootstrap: { nope: 1 } }).success).toBe(false);
  });

  it('keeps nullable fields nullable and optional fields optional', () => {
    const s = patchSchemaOf(z.object({ a: z.string().nullable().default(null), b: z.number().optional() }).strict());
    expect(s.parse({ a: null })).toEqual({ a: null });
    expect(s.parse({})).toEqual({});
    expect(s.safeParse({ b: 'x' }).success).toBe(false);
  });
});

describe('describeIssues', () => {
  const issues = (schema: z.ZodType, value: unknown) => describeIssues(schema.safeParse(value).error!);

  it('names the dotted field of the first issue', () => {
    expect(issues(SiteInputSchema, { name: 'a', bootstrap: { servers: [{ address: '192.0.2.1', port: 0 }] } })).toEqual({
      message: expect.stringMatching(/^bootstrap\.servers\.0\.port: /),
      field: 'bootstrap.servers.0.port',
    });
  });

  it('names an unknown field, nested or not, and lists the others', () => {
    expect(issues(SiteInputSchema, { name: 'a', colour: 1 })).toEqual({ message: 'colour: unknown field', field: 'colour' });
    expect(issues(SiteInputSchema, { name: 'a', bootstrap: { x: 1, y: 2 } })).toEqual({ message: 'bootstrap.x: unknown field (also y)', field: 'bootstrap.x' });
  });

  it('has no field for an issue at the root', () => {
    expect(issues(z.object({}), 'text')).toEqual({ message: expect.any(String), field: undefined });
  });
});
