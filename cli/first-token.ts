/**
 * `bootfarm cloud first-token`: the first farm-admin token of a farm
 * deployed by `cdk deploy`. Nothing can call the API before a token exists,
 * so this writes it straight into the farm table with the operator's own AWS
 * credentials (the same trust as `cdk deploy` itself). The secret is printed
 * once, to the operator only: nothing secret passes through CloudFormation.
 */
import type { Principal, Token } from '../model/index.js';
import type { FarmRepo } from '../functions/storage/repo.js';

export interface FirstTokenOptions {
  repo: FarmRepo;
  /** The token's name (who uses it). */
  name: string;
  expiresAt: string | null;
  /** Who ran the command (recorded in the audit log). */
  operator: string;
  now: Date;
  /** Create one even though usable farm-admin tokens exist (lost token, new admin with no API access). */
  force?: boolean;
}

export class FarmAlreadyHasAdmin extends Error {}

/** Usable farm-admin tokens: not expired (revoked tokens are gone from the list). */
export async function activeFarmAdmins(repo: FarmRepo, now: Date): Promise<Token[]> {
  const out: Token[] = [];
  let cursor: string | undefined;
  do {
    const page = await repo.listTokens(100, cursor);
    out.push(...page.items.filter((t) => t.role === 'farm-admin' && (t.expiresAt === null || Date.parse(t.expiresAt) > now.getTime())));
    cursor = page.nextCursor ?? undefined;
  } while (cursor);
  return out;
}

export async function createFirstToken(opts: FirstTokenOptions): Promise<{ token: Token; secret: string }> {
  const existing = await activeFarmAdmins(opts.repo, opts.now);
  if (existing.length && !opts.force)
    throw new FarmAlreadyHasAdmin(
      `this farm already has ${existing.length} farm-admin token(s) (${existing.map((t) => `${t.id} "${t.name}"`).join(', ')}): ` +
        'create more with `bootfarm token create --role farm-admin`, or pass --force if none of them can be used any more',
    );
  const actor: Principal = { tokenId: 'cloud-first-token', name: `bootfarm cloud first-token (${opts.operator})`, role: 'farm-admin', siteId: null };
  return opts.repo.createToken({ name: opts.name, role: 'farm-admin', siteId: null, expiresAt: opts.expiresAt }, actor);
}
