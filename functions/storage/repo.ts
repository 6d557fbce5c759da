/**
 * The storage interface the API owns. One implementation (DynamoDB, tested
 * against DynamoDB Local); the API never sees keys, indexes or transactions.
 */
import type { ApplianceSample, ApplianceStatus, AuditRecord, FarmSettings, Inventory, LastBoot, Principal, StoredEvent, Token, TokenInput } from '../../model/index.js';
import type { StoredKind } from './relations.js';

export type Obj = Record<string, unknown> & { id: string; version: number; createdAt: string; updatedAt: string };

export interface Page<T> {
  items: T[];
  nextCursor: string | null;
}

export interface ListQuery {
  /** Children of one parent (e.g. targets of a collection). */
  parent?: { kind: StoredKind; id: string };
  /** Objects of one site (targets). */
  siteId?: string;
  limit: number;
  cursor?: string | undefined;
}

export interface Mutation<T = Obj> {
  object: T;
  /** The farm revision right after the change. */
  revision: number;
}

/** Expected version for an update/delete: a number from If-Match, or null when the caller accepts any. */
export type Expected = number | null;

export interface FarmView {
  settings: FarmSettings;
  version: number;
  updatedAt: string | null;
  revision: number;
}

export interface AuditQuery {
  objectType?: string;
  objectId?: string;
  /** Only records of this site (for site-scoped tokens). */
  siteId?: string;
  /** Actor name or token id. */
  actor?: string;
  from?: string;
  to?: string;
  limit: number;
  cursor?: string | undefined;
}

export interface FarmRepo {
  get(kind: StoredKind, id: string): Promise<Obj | null>;
  list(kind: StoredKind, q: ListQuery): Promise<Page<Obj>>;
  /** `input` holds the object's fields and its id; system fields are added. */
  create(kind: StoredKind, input: Record<string, unknown> & { id: string }, actor: Principal): Promise<Mutation>;
  /** `change` computes the new fields from the current object; it may throw FarmError to refuse. */
  update(kind: StoredKind, id: string, expected: Expected, change: (current: Obj) => Record<string, unknown> | Promise<Record<string, unknown>>, actor: Principal): Promise<Mutation>;
  remove(kind: StoredKind, id: string, expected: Expected, check: (current: Obj) => void | Promise<void>, actor: Principal): Promise<Mutation>;

  farm(): Promise<FarmView>;
  updateFarm(expected: Expected, change: (current: FarmSettings) => FarmSettings, actor: Principal): Promise<Mutation<FarmView>>;
  revision(): Promise<number>;

  createToken(input: TokenInput, actor: Principal): Promise<{ token: Token; secret: string }>;
  /** The principal of a bearer token, or null when unknown, revoked, expired or malformed. */
  authenticate(bearer: string, now: Date): Promise<Principal | null>;
  listTokens(limit: number, cursor?: string): Promise<Page<Token>>;
  /** The credential an enrolled appliance uses (role appliance, scoped to its site and itself). */
  createApplianceCredential(appliance: { id: string; siteId: string; name: string }, actor: Principal): Promise<{ token: Token; secret: string }>;

  /** Heartbeat, status and inventory of an appliance: stored beside its configuration, without a revision bump or audit. */
  reportStatus(applianceId: string, report: { lastHeartbeat: string; status: ApplianceStatus; inventory?: Inventory }): Promise<void>;
  /** The appliance's samples of the last hour (one a minute, written by reportStatus), in no particular order. */
  applianceHistory(applianceId: string): Promise<ApplianceSample[]>;
  /**
   * A target's last boot, from its appliances' events: `change` gets the one stored (or null) and the target, and returns the new
   * one, or null to leave it. Stored beside the configuration like a heartbeat (no revision bump, no audit); false when the target
   * does not exist.
   */
  updateLastBoot(mac: string, change: (current: LastBoot | null, target: Obj) => LastBoot | null): Promise<boolean>;
  /** The secret a site's appliances share to authenticate each other on the LAN (made on first use). */
  peerSecret(siteId: string): Promise<string>;
  /** The key console session cookies are sealed with (made on first use). */
  consoleSecret(): Promise<string>;
  /** Console sessions, by the hash of their id: signing out deletes one, and it ends at `expiresAt` whatever the cookie says. */
  putConsoleSession(idHash: string, expiresAt: string): Promise<void>;
  consoleSessionExpiry(idHash: string): Promise<string | null>;
  deleteConsoleSession(idHash: string): Promise<void>;
  getEvent(siteId: string, id: string): Promise<StoredEvent | null>;
  /** Stores an event once: false when one with its id is already there. */
  putEvent(e: StoredEvent): Promise<boolean>;
  /** A site's events, newest first. */
  listEvents(siteId: string, limit: number, cursor?: string): Promise<Page<StoredEvent>>;
  revokeToken(id: string, actor: Principal): Promise<void>;

  audit(q: AuditQuery): Promise<Page<AuditRecord>>;

  /** How many objects of kind `from` reference this object (e.g. targets assigned to a vDisk). */
  refCount(kind: StoredKind, id: string, from: StoredKind | 'token'): Promise<number>;
  /** Chunk index: chunks stored in S3 and verified against their hash. */
  chunksStored(hashes: string[]): Promise<Set<string>>;
  recordChunks(chunks: { hash: string; size: number }[]): Promise<void>;
  forgetChunks(hashes: string[]): Promise<void>;
  /** Leases (strongly consistent): a lock is held until unlocked or until ttlMs passes. */
  tryLock(name: string, owner: string, ttlMs: number): Promise<boolean>;
  unlock(name: string, owner: string): Promise<void>;
  /** Names of unexpired locks starting with prefix. */
  activeLocks(prefix: string): Promise<string[]>;
}
