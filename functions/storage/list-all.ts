import type { StoredKind } from './relations.js';
import type { FarmRepo, ListQuery, Obj } from './repo.js';

/** Every object of a listing, page by page (farm-configuration sizes: admin paths only, never a boot path). */
export async function listAll(repo: FarmRepo, kind: StoredKind, scope: Pick<ListQuery, 'parent' | 'siteId'> = {}): Promise<Obj[]> {
  const out: Obj[] = [];
  let cursor: string | undefined;
  do {
    const page = await repo.list(kind, { ...scope, limit: 1000, cursor });
    out.push(...page.items);
    cursor = page.nextCursor ?? undefined;
  } while (cursor);
  return out;
}
