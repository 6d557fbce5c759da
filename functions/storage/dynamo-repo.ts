/**
 * FarmRepo on one DynamoDB table (layout: docs/data-model.md).
 *
 * Every change is one TransactWriteItems call that holds, together:
 * the object (conditional on its version), its uniqueness guards, the
 * reference counters of what it points to, the farm revision counter and the
 * audit record. So uniqueness, referential integrity, optimistic concurrency
 * and "every change bumps the revision" are enforced by the database.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import {
  BatchGetCommand,
  BatchWriteCommand,
  DeleteCommand,
  GetCommand,
  PutCommand,
  QueryCommand,
  TransactWriteCommand,
  UpdateCommand,
  type DynamoDBDocumentClient,
  type QueryCommandInput,
  type TransactWriteCommandInput,
} from '@aws-sdk/lib-dynamodb';
import {
  FarmError,
  FarmSettingsFields,
  diffObjects,
  type AuditChange,
  type AuditRecord,
  type ApplianceSample,
  type ApplianceStatus,
  type Inventory,
  type LastBoot,
  sampleMinute,
  type StoredEvent,
  type FarmSettings,
  type Principal,
  type Token,
  type TokenInput,
} from '../../model/index.js';
import { randomBase32 } from './ids.js';
import { KIND_LABEL, RELATIONS, siteOf, type Ref, type StoredKind } from './relations.js';
import type { AuditQuery, Expected, FarmRepo, FarmView, ListQuery, Mutation, Obj, Page } from './repo.js';
import { GSI1, GSI2 } from './table.js';

type TxItem = NonNullable<TransactWriteCommandInput['TransactItems']>[number];
type Raw = Record<string, unknown>;

export interface DynamoRepoDeps {
  doc: DynamoDBDocumentClient;
  tableName: string;
  clock?: () => Date;
  /** Attempts for a transaction that conflicts with a concurrent one (TransactionConflict). */
  maxAttempts?: number;
}

const FARM_KEY = { pk: 'farm', sk: 'settings' };
const REVISION_KEY = { pk: 'farm', sk: 'revision' };
const SYSTEM = new Set(['id', 'version', 'createdAt', 'updatedAt']);
const refAttr = (kind: StoredKind | 'token') => `ref_${kind}`;
/** Prefix of the attributes appliances write about themselves (heartbeat, status, inventory). */
const REPORTED = 'reported_';
/** An appliance's minute samples: items of their own (small, in no index), one per minute of the hour, overwritten an hour later. */
const samplePk = (applianceId: string) => `appliance-sample#${applianceId}`;
/** Bumped with every last-boot write: the condition that makes read-modify-write safe. */
const LAST_BOOT_SEQ = 'lastboot_seq';

/** Thrown inside an attempt to ask for a fresh read and another attempt. */
class Retry extends Error {}

export class DynamoFarmRepo implements FarmRepo {
  private readonly doc: DynamoDBDocumentClient;
  private readonly table: string;
  private readonly clock: () => Date;
  private readonly maxAttempts: number;

  constructor(deps: DynamoRepoDeps) {
    this.doc = deps.doc;
    this.table = deps.tableName;
    this.clock = deps.clock ?? (() => new Date());
    this.maxAttempts = deps.maxAttempts ?? 12;
  }

  // ---------------------------------------------------------------- reads

  private key(kind: StoredKind, id: string) {
    return kind === 'farm' ? FARM_KEY : { pk: kind, sk: id };
  }

  private async getRaw(kind: StoredKind, id: string): Promise<Raw | null> {
    const r = await this.doc.send(new GetCommand({ TableName: this.table, Key: this.key(kind, id), ConsistentRead: true }));
    return (r.Item as Raw | undefined) ?? null;
  }

  private static toObj(raw: Raw): Obj {
    const o = { ...(raw.data as Record<string, unknown>), version: raw.version as number } as Obj;
    // What an appliance reported about itself (reportStatus) wins over the copy in `data`.
    for (const [k, v] of Object.entries(raw)) if (k.startsWith(REPORTED)) o[k.slice(REPORTED.length)] = v;
    return o;
  }

  async get(kind: StoredKind, id: string): Promise<Obj | null> {
    const raw = await this.getRaw(kind, id);
    return raw ? DynamoFarmRepo.toObj(raw) : null;
  }

  async list(kind: StoredKind, q: ListQuery): Promise<Page<Obj>> {
    const rel = RELATIONS[kind];
    let input: QueryCommandInput;
    let expectKey: [string, string];
    if (q.parent) {
      const pk = `${q.parent.kind}#${q.parent.id}#${kind}`;
      input = { IndexName: GSI1.name, KeyConditionExpression: '#k = :k', ExpressionAttributeNames: { '#k': GSI1.pk }, ExpressionAttributeValues: { ':k': pk }, TableName: this.table };
      expectKey = [GSI1.pk, pk];
    } else if (q.siteId && rel.site) {
      const pk = `site#${q.siteId}#${kind}`;
      input = { IndexName: GSI2.name, KeyConditionExpression: '#k = :k', ExpressionAttributeNames: { '#k': GSI2.pk }, ExpressionAttributeValues: { ':k': pk }, TableName: this.table };
      expectKey = [GSI2.pk, pk];
    } else {
      input = { TableName: this.table, KeyConditionExpression: 'pk = :k', ExpressionAttributeValues: { ':k': kind }, ConsistentRead: true };
      expectKey = ['pk', kind];
    }
    const page = await this.query(input, q.limit, q.cursor, expectKey);
    return { items: page.items.map(DynamoFarmRepo.toObj), nextCursor: page.nextCursor };
  }

  private async query(input: QueryCommandInput, limit: number, cursor: string | undefined, expectKey: [string, string]): Promise<Page<Raw>> {
    const r = await this.doc.send(new QueryCommand({ ...input, Limit: limit, ExclusiveStartKey: decodeCursor(cursor, expectKey) }));
    return { items: (r.Items ?? []) as Raw[], nextCursor: r.LastEvaluatedKey ? encodeCursor(r.LastEvaluatedKey) : null };
  }

  async refCount(kind: StoredKind, id: string, from: StoredKind | 'token'): Promise<number> {
    const raw = await this.getRaw(kind, id);
    return Number(raw?.[refAttr(from)] ?? 0);
  }

  // ---------------------------------------------------------------- locks

  async tryLock(name: string, owner: string, ttlMs: number): Promise<boolean> {
    const now = this.clock().getTime();
    try {
      await this.doc.send(
        new PutCommand({
          TableName: this.table,
          Item: { pk: 'lock', sk: name, owner, expiresAt: now + ttlMs },
          ConditionExpression: 'attribute_not_exists(pk) OR expiresAt < :now OR #o = :owner',
          ExpressionAttributeNames: { '#o': 'owner' },
          ExpressionAttributeValues: { ':now': now, ':owner': owner },
        }),
      );
      return true;
    } catch (e) {
      if ((e as Error).name === 'ConditionalCheckFailedException') return false;
      throw e;
    }
  }

  async unlock(name: string, owner: string): Promise<void> {
    try {
      await this.doc.send(new DeleteCommand({ TableName: this.table, Key: { pk: 'lock', sk: name }, ConditionExpression: '#o = :owner', ExpressionAttributeNames: { '#o': 'owner' }, ExpressionAttributeValues: { ':owner': owner } }));
    } catch (e) {
      if ((e as Error).name !== 'ConditionalCheckFailedException') throw e;
    }
  }

  async activeLocks(prefix: string): Promise<string[]> {
    const r = await this.doc.send(
      new QueryCommand({
        TableName: this.table,
        KeyConditionExpression: 'pk = :p AND begins_with(sk, :s)',
        FilterExpression: 'expiresAt >= :now',
        ExpressionAttributeValues: { ':p': 'lock', ':s': prefix, ':now': this.clock().getTime() },
        ConsistentRead: true,
      }),
    );
    return (r.Items ?? []).map((i) => i.sk as string);
  }

  // --------------------------------------------------------- chunk index

  async chunksStored(hashes: string[]): Promise<Set<string>> {
    const found = new Set<string>();
    const unique = [...new Set(hashes)];
    for (let i = 0; i < unique.length; i += 100) {
      let keys: Record<string, unknown>[] | undefined = unique.slice(i, i + 100).map((h) => ({ pk: 'chunk', sk: h }));
      for (let attempt = 1; keys?.length; attempt++) {
        const r = await this.doc.send(new BatchGetCommand({ RequestItems: { [this.table]: { Keys: keys, ConsistentRead: true, ProjectionExpression: 'sk' } } }));
        for (const item of r.Responses?.[this.table] ?? []) found.add(item.sk as string);
        keys = r.UnprocessedKeys?.[this.table]?.Keys as Record<string, unknown>[] | undefined;
        if (keys?.length) await backoff(Math.min(attempt, 6));
      }
    }
    return found;
  }

  async recordChunks(chunks: { hash: string; size: number }[]): Promise<void> {
    const at = this.clock().toISOString();
    await this.batchWrite(chunks.map((c) => ({ PutRequest: { Item: { pk: 'chunk', sk: c.hash, size: c.size, verifiedAt: at } } })));
  }

  async forgetChunks(hashes: string[]): Promise<void> {
    await this.batchWrite(hashes.map((h) => ({ DeleteRequest: { Key: { pk: 'chunk', sk: h } } })));
  }

  private async batchWrite(requests: Record<string, unknown>[]): Promise<void> {
    for (let i = 0; i < requests.length; i += 25) {
      let batch: Record<string, unknown>[] | undefined = requests.slice(i, i + 25);
      for (let attempt = 1; batch?.length; attempt++) {
        const r = await this.doc.send(new BatchWriteCommand({ RequestItems: { [this.table]: batch as never } }));
        batch = r.UnprocessedItems?.[this.table] as Record<string, unknown>[] | undefined;
        if (batch?.length) await backoff(Math.min(attempt, 6));
      }
    }
  }

  async revision(): Promise<number> {
    const r = await this.doc.send(new GetCommand({ TableName: this.table, Key: REVISION_KEY, ConsistentRead: true }));
    return (r.Item?.rev as number | undefined) ?? 0;
  }

  // --------------------------------------------------------------- writes

  async create(kind: StoredKind, input: Record<string, unknown> & { id: string }, actor: Principal): Promise<Mutation> {
    const now = this.clock().toISOString();
    const obj = { ...input, createdAt: now, updatedAt: now, version: 1 } as Obj;
    const rel = RELATIONS[kind];
    const data = stripVersion(obj);
    const tx: TxItem[] = [];
    const onFail: ((o: Obj) => FarmError)[] = [];
    tx.push({
      Put: {
        TableName: this.table,
        Item: { ...this.key(kind, obj.id), ...this.indexKeys(kind, obj), data, version: 1 },
        ConditionExpression: 'attribute_not_exists(pk)',
      },
    });
    const idField = kind === 'target' ? 'mac' : 'id';
    onFail.push(() => new FarmError('already_exists', `${idField}: ${KIND_LABEL[kind][0]} ${obj.id} already exists`, idField));
    for (const u of rel.uniques(obj)) {
      tx.push(this.putGuard(u.scope, u.value, kind, obj.id));
      onFail.push(() => new FarmError('already_exists', `${u.field}: ${u.what} already exists`, u.field));
    }
    for (const ref of rel.refs(obj)) {
      tx.push(this.addRef(ref, kind, 1));
      onFail.push(() => missingRef(ref));
    }
    const settings = await this.settings();
    await this.commit(kind, tx, onFail, settings.auditing ? this.auditItem(kind, obj, 'create', diffObjects({}, auditable(obj)), actor, now) : null);
    return { object: obj, revision: await this.revision() };
  }

  async update(
    kind: StoredKind,
    id: string,
    expected: Expected,
    change: (current: Obj) => Record<string, unknown> | Promise<Record<string, unknown>>,
    actor: Principal,
  ): Promise<Mutation> {
    return this.attempts(async () => {
      const current = kind === 'farm' ? await this.farmObj() : await this.get(kind, id);
      if (!current) throw notFound(kind, id);
      // The change callback authorizes and validates first: a caller without the right learns nothing about versions.
      const fields = await change(current);
      checkExpected(kind, current, expected);
      const now = this.clock().toISOString();
      const next = { ...fields, id: current.id, createdAt: current.createdAt, updatedAt: now, version: current.version + 1 } as Obj;
      const changes = diffObjects(auditable(current), auditable(next));
      if (changes.length === 0) return { object: current, revision: await this.revision() };

      const rel = RELATIONS[kind];
      const tx: TxItem[] = [];
      const onFail: ((o: Obj) => FarmError)[] = [];
      const idx = this.indexKeys(kind, next);
      const names: Record<string, string> = { '#data': 'data', '#version': 'version' };
      const values: Record<string, unknown> = { ':data': stripVersion(next), ':next': next.version };
      const sets = ['#data = :data', '#version = :next'];
      Object.entries(idx).forEach(([k, v], i) => {
        names[`#i${i}`] = k;
        values[`:i${i}`] = v;
        sets.push(`#i${i} = :i${i}`);
      });
      const isNewFarm = kind === 'farm' && current.version === 0;
      if (!isNewFarm) values[':cur'] = current.version;
      tx.push({
        Update: {
          TableName: this.table,
          Key: this.key(kind, id),
          UpdateExpression: `SET ${sets.join(', ')}`,
          ConditionExpression: isNewFarm ? 'attribute_not_exists(pk)' : '#version = :cur',
          ExpressionAttributeNames: names,
          ExpressionAttributeValues: values,
        },
      });
      onFail.push(() => {
        if (expected !== null) return stale(kind, id);
        throw new Retry();
      });

      const oldU = new Map(rel.uniques(current).map((u) => [`${u.scope}\0${u.value}`, u]));
      const newU = new Map(rel.uniques(next).map((u) => [`${u.scope}\0${u.value}`, u]));
      for (const [k, u] of oldU) if (!newU.has(k)) {
        tx.push(this.deleteGuard(u.scope, u.value));
        onFail.push(() => new FarmError('internal', `uniqueness guard ${u.scope} for ${id} is missing`));
      }
      for (const [k, u] of newU) if (!oldU.has(k)) {
        tx.push(this.putGuard(u.scope, u.value, kind, id));
        onFail.push(() => new FarmError('already_exists', `${u.field}: ${u.what} already exists`, u.field));
      }
      const refKey = (r: Ref) => `${r.kind}#${r.id}`;
      const oldR = new Map(rel.refs(current).map((r) => [refKey(r), r]));
      const newR = new Map(rel.refs(next).map((r) => [refKey(r), r]));
      for (const [k, r] of oldR) if (!newR.has(k)) {
        tx.push(this.addRef(r, kind, -1));
        onFail.push(() => new FarmError('internal', `referenced ${r.kind} ${r.id} is missing`));
      }
      for (const [k, r] of newR) if (!oldR.has(k)) {
        tx.push(this.addRef(r, kind, 1));
        onFail.push(() => missingRef(r));
      }
      const settings = kind === 'farm' ? (next as unknown as FarmSettings) : await this.settings();
      const audit = settings.auditing || (kind === 'farm' && changes.some((c) => c.property === 'auditing'));
      await this.commit(kind, tx, onFail, audit ? this.auditItem(kind, next, 'update', changes, actor, now) : null);
      return { object: next, revision: await this.revision() };
    });
  }

  async remove(kind: StoredKind, id: string, expected: Expected, check: (current: Obj) => void | Promise<void>, actor: Principal): Promise<Mutation> {
    return this.attempts(async () => {
      const raw = await this.getRaw(kind, id);
      if (!raw) throw notFound(kind, id);
      const current = DynamoFarmRepo.toObj(raw);
      await check(current);
      checkExpected(kind, current, expected);
      const rel = RELATIONS[kind];
      const blockers = rel.referencedBy.filter((k) => k !== rel.cascade);
      const inUse = describeUse(kind, current, raw, blockers);
      if (inUse) throw inUse;

      const children = rel.cascade ? await this.allChildren(rel.cascade, kind, id) : [];
      const names: Record<string, string> = { '#version': 'version' };
      const values: Record<string, unknown> = { ':cur': current.version };
      const conds = ['#version = :cur'];
      // DynamoDB refuses unused expression values, so each count registers the ones it uses.
      const counted = (by: StoredKind | 'token', n: number) => {
        const name = `#${refAttr(by)}`;
        names[name] = refAttr(by);
        values[`:n${n}`] = n;
        return n === 0 ? `(attribute_not_exists(${name}) OR ${name} = :n0)` : `${name} = :n${n}`;
      };
      for (const k of blockers) conds.push(counted(k, 0));
      if (rel.cascade) conds.push(counted(rel.cascade, children.length));
      const tx: TxItem[] = [
        { Delete: { TableName: this.table, Key: this.key(kind, id), ConditionExpression: conds.join(' AND '), ExpressionAttributeNames: names, ExpressionAttributeValues: values } },
      ];
      const onFail: ((o: Obj) => FarmError)[] = [
        () => {
          if (expected !== null) return stale(kind, id);
          throw new Retry();
        },
      ];
      for (const u of rel.uniques(current)) {
        tx.push(this.deleteGuard(u.scope, u.value));
        onFail.push(() => new FarmError('internal', `uniqueness guard ${u.scope} for ${id} is missing`));
      }
      for (const r of rel.refs(current)) {
        tx.push(this.addRef(r, kind, -1));
        onFail.push(() => new FarmError('internal', `referenced ${r.kind} ${r.id} is missing`));
      }
      if (kind === 'appliance') {
        // A retired appliance must not keep pulling chunks from its former peers: the site gets a new peer secret
        // (made at the next snapshot, which this change's revision bump makes every appliance fetch).
        tx.push({ Delete: { TableName: this.table, Key: { pk: 'site-secret', sk: current.siteId as string } } });
        onFail.push(() => new FarmError('internal', `cannot reset the peer secret of site ${current.siteId}`));
      }
      for (const child of children) {
        tx.push({ Delete: { TableName: this.table, Key: this.key(rel.cascade!, child.id) } });
        onFail.push(() => new FarmError('internal', `cannot delete ${rel.cascade} ${child.id}`));
        for (const u of RELATIONS[rel.cascade!].uniques(child)) tx.push(this.deleteGuard(u.scope, u.value));
      }
      const settings = await this.settings();
      const now = this.clock().toISOString();
      await this.commit(kind, tx, onFail, settings.auditing ? this.auditItem(kind, current, 'delete', diffObjects(auditable(current), {}), actor, now) : null);
      return { object: current, revision: await this.revision() };
    });
  }

  private async allChildren(kind: StoredKind, parentKind: StoredKind, parentId: string): Promise<Obj[]> {
    // Children live in the main partition of their kind (consistent read), filtered by parent.
    const out: Obj[] = [];
    let cursor: Record<string, unknown> | undefined;
    do {
      const r = await this.doc.send(
        new QueryCommand({
          TableName: this.table,
          KeyConditionExpression: 'pk = :k AND begins_with(sk, :p)',
          ExpressionAttributeValues: { ':k': kind, ':p': `${parentId}.` },
          ConsistentRead: true,
          ExclusiveStartKey: cursor,
        }),
      );
      out.push(...((r.Items ?? []) as Raw[]).map(DynamoFarmRepo.toObj));
      cursor = r.LastEvaluatedKey;
    } while (cursor);
    return out;
  }

  // ------------------------------------------------------------------ farm

  private async settings(): Promise<FarmSettings> {
    const raw = await this.getRaw('farm', 'farm');
    return raw ? (raw.data as FarmSettings) : FarmSettingsFields.parse({});
  }

  private async farmObj(): Promise<Obj> {
    const raw = await this.getRaw('farm', 'farm');
    if (raw) return DynamoFarmRepo.toObj(raw);
    return { ...FarmSettingsFields.parse({}), id: 'farm', version: 0, createdAt: this.clock().toISOString(), updatedAt: '' } as Obj;
  }

  async farm(): Promise<FarmView> {
    const [o, revision] = await Promise.all([this.farmObj(), this.revision()]);
    const { id: _id, version, createdAt: _c, updatedAt, ...settings } = o;
    return { settings: settings as unknown as FarmSettings, version, updatedAt: updatedAt || null, revision };
  }

  async updateFarm(expected: Expected, change: (current: FarmSettings) => FarmSettings, actor: Principal): Promise<Mutation<FarmView>> {
    await this.update(
      'farm',
      'farm',
      expected,
      (cur) => {
        const { id: _id, version: _v, createdAt: _c, updatedAt: _u, ...settings } = cur;
        return change(settings as unknown as FarmSettings) as unknown as Record<string, unknown>;
      },
      actor,
    );
    const view = await this.farm();
    return { object: view, revision: view.revision };
  }

  // ---------------------------------------------------------------- appliances

  async reportStatus(applianceId: string, report: { lastHeartbeat: string; status: ApplianceStatus; inventory?: Inventory }): Promise<void> {
    // Written beside the configuration: no version bump, no revision bump, no audit, so heartbeats never change snapshots or ETags.
    // Top-level attributes, not inside `data`: an admin's update rewrites `data` and must not lose a report that landed meanwhile.
    const names: Record<string, string> = { '#h': `${REPORTED}lastHeartbeat`, '#s': `${REPORTED}status` };
    const values: Record<string, unknown> = { ':h': report.lastHeartbeat, ':s': report.status };
    let expr = 'SET #h = :h, #s = :s';
    if (report.inventory) {
      names['#i'] = `${REPORTED}inventory`;
      values[':i'] = report.inventory;
      expr += ', #i = :i';
    }
    let old: Raw | undefined;
    try {
      // UPDATED_OLD costs no read: it hands back the report this one replaces.
      const r = await this.doc.send(new UpdateCommand({ TableName: this.table, Key: this.key('appliance', applianceId), UpdateExpression: expr, ConditionExpression: 'attribute_exists(pk)', ExpressionAttributeNames: names, ExpressionAttributeValues: values, ReturnValues: 'UPDATED_OLD' }));
      old = r.Attributes as Raw | undefined;
    } catch (e) {
      if ((e as { name?: string }).name === 'ConditionalCheckFailedException') throw new FarmError('not_found', `appliance ${applianceId} does not exist`);
      throw e;
    }
    // The first report of a new minute closes the one before: the report it replaces was that minute's last, and becomes its
    // sample (one small write a minute, not one a heartbeat; the current minute is the appliance's status itself).
    const prevAt = old?.[`${REPORTED}lastHeartbeat`] as string | undefined;
    const prev = old?.[`${REPORTED}status`] as ApplianceStatus | undefined;
    if (prevAt && prev) {
      const m = sampleMinute(new Date(prevAt));
      if (m.at !== sampleMinute(new Date(report.lastHeartbeat)).at) {
        const sample: ApplianceSample = { at: m.at, startedAt: prev.startedAt, sessions: prev.sessions, bytesServed: prev.bytesServed ?? null };
        await this.doc.send(new PutCommand({ TableName: this.table, Item: { pk: samplePk(applianceId), sk: String(m.slot).padStart(2, '0'), ...sample } }));
      }
    }
  }

  async applianceHistory(applianceId: string): Promise<ApplianceSample[]> {
    const r = await this.doc.send(new QueryCommand({ TableName: this.table, KeyConditionExpression: 'pk = :k', ExpressionAttributeValues: { ':k': samplePk(applianceId) } }));
    return (r.Items ?? []).map(({ pk: _pk, sk: _sk, ...sample }) => sample as ApplianceSample);
  }

  async updateLastBoot(mac: string, change: (current: LastBoot | null, target: Obj) => LastBoot | null): Promise<boolean> {
    for (let attempt = 0; attempt < this.maxAttempts; attempt++) {
      const raw = await this.getRaw('target', mac);
      if (!raw) return false;
      const current = (raw[`${REPORTED}lastBoot`] as LastBoot | undefined) ?? null;
      const next = change(current, DynamoFarmRepo.toObj(raw));
      if (!next) return true;
      const seq = raw[LAST_BOOT_SEQ] as number | undefined;
      try {
        await this.doc.send(
          new UpdateCommand({
            TableName: this.table,
            Key: this.key('target', mac),
            UpdateExpression: 'SET #b = :b, #q = :next',
            ConditionExpression: seq === undefined ? 'attribute_exists(pk) AND attribute_not_exists(#q)' : 'attribute_exists(pk) AND #q = :seq',
            ExpressionAttributeNames: { '#b': `${REPORTED}lastBoot`, '#q': LAST_BOOT_SEQ },
            ExpressionAttributeValues: { ':b': next, ':next': (seq ?? 0) + 1, ...(seq === undefined ? {} : { ':seq': seq }) },
          }),
        );
        return true;
      } catch (e) {
        // Another event of the same target landed in between (or the target went): read again.
        if ((e as { name?: string }).name !== 'ConditionalCheckFailedException') throw e;
      }
    }
    throw new FarmError('version_mismatch', `the last boot of target ${mac} changed too often to record`);
  }

  async peerSecret(siteId: string): Promise<string> {
    return this.secret({ pk: 'site-secret', sk: siteId });
  }

  async consoleSecret(): Promise<string> {
    return this.secret({ pk: 'console-secret', sk: 'v1' });
  }

  /** A random secret made on first use: whoever writes first wins, everybody reads that one. */
  private async secret(key: { pk: string; sk: string }): Promise<string> {
    const r = await this.doc.send(new GetCommand({ TableName: this.table, Key: key, ConsistentRead: true }));
    if (r.Item) return r.Item.secret as string;
    const secret = randomBytes(32).toString('base64url');
    try {
      await this.doc.send(new PutCommand({ TableName: this.table, Item: { ...key, secret }, ConditionExpression: 'attribute_not_exists(pk)' }));
      return secret;
    } catch (e) {
      if ((e as { name?: string }).name !== 'ConditionalCheckFailedException') throw e;
      // Another request made it first: use that one.
      const again = await this.doc.send(new GetCommand({ TableName: this.table, Key: key, ConsistentRead: true }));
      return again.Item!.secret as string;
    }
  }

  async putConsoleSession(idHash: string, expiresAt: string): Promise<void> {
    await this.doc.send(new PutCommand({ TableName: this.table, Item: { pk: 'console-session', sk: idHash, expiresAt } }));
  }

  async consoleSessionExpiry(idHash: string): Promise<string | null> {
    const r = await this.doc.send(new GetCommand({ TableName: this.table, Key: { pk: 'console-session', sk: idHash }, ConsistentRead: true }));
    return (r.Item?.expiresAt as string | undefined) ?? null;
  }

  async deleteConsoleSession(idHash: string): Promise<void> {
    await this.doc.send(new DeleteCommand({ TableName: this.table, Key: { pk: 'console-session', sk: idHash } }));
  }


  async getEvent(siteId: string, id: string): Promise<StoredEvent | null> {
    const r = await this.doc.send(new GetCommand({ TableName: this.table, Key: { pk: `event#${siteId}`, sk: id }, ConsistentRead: true }));
    return (r.Item?.data as StoredEvent | undefined) ?? null;
  }

  async putEvent(e: StoredEvent): Promise<boolean> {
    try {
      await this.doc.send(new PutCommand({ TableName: this.table, Item: { pk: `event#${e.siteId}`, sk: e.id, data: e }, ConditionExpression: 'attribute_not_exists(pk)' }));
      return true;
    } catch (err) {
      if ((err as { name?: string }).name === 'ConditionalCheckFailedException') return false;
      throw err;
    }
  }

  async listEvents(siteId: string, limit: number, cursor?: string): Promise<Page<StoredEvent>> {
    const pk = `event#${siteId}`;
    const page = await this.query({ TableName: this.table, KeyConditionExpression: 'pk = :k', ExpressionAttributeValues: { ':k': pk }, ScanIndexForward: false }, limit, cursor, ['pk', pk]);
    return { items: page.items.map((i) => i.data as StoredEvent), nextCursor: page.nextCursor };
  }

  // ---------------------------------------------------------------- tokens

  async createToken(input: TokenInput, actor: Principal): Promise<{ token: Token; secret: string }> {
    return this.putToken({ name: input.name, role: input.role, siteId: input.siteId, expiresAt: input.expiresAt, applianceId: null }, actor);
  }

  async createApplianceCredential(appliance: { id: string; siteId: string; name: string }, actor: Principal): Promise<{ token: Token; secret: string }> {
    return this.putToken({ name: `appliance ${appliance.name}`.slice(0, 64), role: 'appliance', siteId: appliance.siteId, expiresAt: null, applianceId: appliance.id }, actor);
  }

  private async putToken(t: Pick<Token, 'name' | 'role' | 'siteId' | 'expiresAt'> & { applianceId: string | null }, actor: Principal): Promise<{ token: Token; secret: string }> {
    const id = randomBase32(16);
    const secretPart = randomBytes(32).toString('base64url');
    const now = this.clock().toISOString();
    const token: Token = { id, name: t.name, role: t.role, siteId: t.siteId, ...(t.applianceId ? { applianceId: t.applianceId } : {}), expiresAt: t.expiresAt, createdAt: now, createdBy: actor.name };
    const tx: TxItem[] = [{ Put: { TableName: this.table, Item: { pk: 'token', sk: id, data: token, hash: sha256(secretPart) }, ConditionExpression: 'attribute_not_exists(pk)' } }];
    // A scoped token counts as a reference: its site (and appliance) cannot be deleted while the token exists.
    const refs = tokenRefs(token);
    for (const ref of refs) tx.push(this.addRef(ref, 'token', 1));
    const audit = this.auditItem('token' as StoredKind, { ...token, version: 1, updatedAt: now } as unknown as Obj, 'create', diffObjects({}, token), actor, now);
    if ((await this.settings()).auditing) tx.push(audit);
    await this.transact(tx, (i) => (i >= 1 && i <= refs.length ? missingRef(refs[i - 1]!) : new FarmError('internal', 'token id collision')));
    return { token, secret: `bft_${id}_${secretPart}` };
  }

  async authenticate(bearer: string, now: Date): Promise<Principal | null> {
    const m = /^bft_([a-z2-7]{16})_([A-Za-z0-9_-]{43})$/.exec(bearer);
    if (!m) return null;
    const r = await this.doc.send(new GetCommand({ TableName: this.table, Key: { pk: 'token', sk: m[1] }, ConsistentRead: true }));
    if (!r.Item) return null;
    const want = Buffer.from(r.Item.hash as string, 'hex');
    const got = Buffer.from(sha256(m[2]!), 'hex');
    if (want.length !== got.length || !timingSafeEqual(want, got)) return null;
    const t = r.Item.data as Token;
    if (t.expiresAt && Date.parse(t.expiresAt) <= now.getTime()) return null;
    return { tokenId: t.id, name: t.name, role: t.role, siteId: t.siteId, applianceId: t.applianceId ?? null };
  }

  async listTokens(limit: number, cursor?: string): Promise<Page<Token>> {
    const page = await this.query({ TableName: this.table, KeyConditionExpression: 'pk = :k', ExpressionAttributeValues: { ':k': 'token' }, ConsistentRead: true }, limit, cursor, ['pk', 'token']);
    return { items: page.items.map((i) => i.data as Token), nextCursor: page.nextCursor };
  }

  async revokeToken(id: string, actor: Principal): Promise<void> {
    const r = await this.doc.send(new GetCommand({ TableName: this.table, Key: { pk: 'token', sk: id }, ConsistentRead: true }));
    if (!r.Item) throw new FarmError('not_found', `token ${id} does not exist`);
    const token = r.Item.data as Token;
    const now = this.clock().toISOString();
    const tx: TxItem[] = [{ Delete: { TableName: this.table, Key: { pk: 'token', sk: id }, ConditionExpression: 'attribute_exists(pk)' } }];
    for (const ref of tokenRefs(token)) tx.push(this.addRef(ref, 'token', -1));
    if ((await this.settings()).auditing) tx.push(this.auditItem('token' as StoredKind, { ...token } as unknown as Obj, 'delete', diffObjects(token, {}), actor, now));
    await this.transact(tx, () => new FarmError('not_found', `token ${id} does not exist`));
  }

  // ----------------------------------------------------------------- audit

  async audit(q: AuditQuery): Promise<Page<AuditRecord>> {
    const names: Record<string, string> = {};
    const values: Record<string, unknown> = {};
    const from = q.from ?? '0000';
    const to = `${q.to ?? '9999'}\uffff`;
    let input: QueryCommandInput;
    let expectKey: [string, string];
    if (q.objectType && q.objectId) {
      const pk = `audit#${q.objectType}#${q.objectId}`;
      Object.assign(values, { ':k': pk, ':from': from, ':to': to });
      input = { TableName: this.table, KeyConditionExpression: 'pk = :k AND sk BETWEEN :from AND :to', ConsistentRead: true, ScanIndexForward: false };
      expectKey = ['pk', pk];
    } else {
      Object.assign(names, { '#k': GSI1.pk, '#s': GSI1.sk });
      Object.assign(values, { ':k': 'audit', ':from': from, ':to': to });
      input = { TableName: this.table, IndexName: GSI1.name, KeyConditionExpression: '#k = :k AND #s BETWEEN :from AND :to', ScanIndexForward: false };
      expectKey = [GSI1.pk, 'audit'];
    }
    const filters: string[] = [];
    if (q.objectType && !q.objectId) {
      names['#ot'] = 'objectType';
      values[':ot'] = q.objectType;
      filters.push('#d.#ot = :ot');
    }
    if (q.siteId) {
      names['#site'] = 'siteId';
      values[':site'] = q.siteId;
      filters.push('#d.#site = :site');
    }
    if (q.actor) {
      Object.assign(names, { '#actor': 'actor', '#an': 'name', '#at': 'tokenId' });
      values[':actor'] = q.actor;
      filters.push('(#d.#actor.#an = :actor OR #d.#actor.#at = :actor)');
    }
    if (filters.length) {
      names['#d'] = 'data';
      input.FilterExpression = filters.join(' AND ');
    }
    if (Object.keys(names).length) input.ExpressionAttributeNames = names;
    input.ExpressionAttributeValues = values;
    const page = await this.query(input, q.limit, q.cursor, expectKey);
    return { items: page.items.map((i) => i.data as AuditRecord), nextCursor: page.nextCursor };
  }

  // --------------------------------------------------------------- helpers

  private indexKeys(kind: StoredKind, o: Obj): Record<string, string> {
    const rel = RELATIONS[kind];
    const keys: Record<string, string> = {};
    const parent = rel.parent(o);
    const sort = `${rel.sortKey(o)}#${o.id}`;
    if (parent) Object.assign(keys, { [GSI1.pk]: `${parent.kind}#${parent.id}#${kind}`, [GSI1.sk]: sort });
    if (rel.site) Object.assign(keys, { [GSI2.pk]: `site#${rel.site(o)}#${kind}`, [GSI2.sk]: sort });
    return keys;
  }

  private putGuard(scope: string, value: string, kind: StoredKind, id: string): TxItem {
    return { Put: { TableName: this.table, Item: { pk: `unique#${scope}`, sk: value, owner: `${kind}#${id}` }, ConditionExpression: 'attribute_not_exists(pk)' } };
  }

  private deleteGuard(scope: string, value: string): TxItem {
    return { Delete: { TableName: this.table, Key: { pk: `unique#${scope}`, sk: value } } };
  }

  /** Counts a reference on the referenced object; adding one requires that object to exist. */
  private addRef(ref: Ref, from: StoredKind | 'token', delta: 1 | -1): TxItem {
    return {
      Update: {
        TableName: this.table,
        Key: this.key(ref.kind, ref.id),
        UpdateExpression: 'ADD #r :d',
        ...(delta > 0 ? { ConditionExpression: 'attribute_exists(pk)' } : {}),
        ExpressionAttributeNames: { '#r': refAttr(from) },
        ExpressionAttributeValues: { ':d': delta },
      },
    };
  }

  private auditItem(kind: StoredKind, o: Obj, action: AuditRecord['action'], changes: AuditChange[], actor: Principal, at: string): TxItem {
    const id = randomBase32(10);
    const record: AuditRecord = {
      id,
      at,
      actor: { tokenId: actor.tokenId, name: actor.name, role: actor.role },
      objectType: kind,
      objectId: o.id,
      siteId: kind in RELATIONS ? siteOf(kind, o) : null,
      action,
      changes,
    };
    return {
      Put: {
        TableName: this.table,
        Item: { pk: `audit#${kind}#${o.id}`, sk: `${at}#${id}`, [GSI1.pk]: 'audit', [GSI1.sk]: `${at}#${id}`, data: record },
      },
    };
  }

  /** Commits a change with the revision bump and the audit record. */
  private async commit(kind: StoredKind, tx: TxItem[], onFail: ((o: Obj) => FarmError)[], audit: TxItem | null): Promise<void> {
    tx.push({ Update: { TableName: this.table, Key: REVISION_KEY, UpdateExpression: 'ADD rev :one', ExpressionAttributeValues: { ':one': 1 } } });
    if (audit) tx.push(audit);
    await this.transact(tx, (i) => onFail[i]?.({} as Obj) ?? new FarmError('internal', 'transaction failed'));
  }

  private async transact(tx: TxItem[], failure: (index: number) => FarmError): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        await this.doc.send(new TransactWriteCommand({ TransactItems: tx }));
        return;
      } catch (e) {
        const reasons = (e as { name?: string; CancellationReasons?: { Code?: string }[] }).CancellationReasons;
        if ((e as Error).name !== 'TransactionCanceledException' || !reasons) throw e;
        const failed = reasons.findIndex((r) => r.Code === 'ConditionalCheckFailed');
        if (failed >= 0) throw failure(failed);
        if (!reasons.some((r) => r.Code === 'TransactionConflict') || attempt >= this.maxAttempts) throw e;
        await backoff(attempt);
      }
    }
  }

  private async attempts<T>(fn: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await fn();
      } catch (e) {
        if (!(e instanceof Retry) || attempt >= this.maxAttempts) {
          if (e instanceof Retry) throw new FarmError('version_mismatch', 'the object kept changing under concurrent updates; try again');
          throw e;
        }
        await backoff(attempt);
      }
    }
  }
}

// ---------------------------------------------------------------- functions

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');

function stripVersion(o: Obj): Record<string, unknown> {
  const { version: _v, ...rest } = o;
  return rest;
}

/** What the audit trail compares: the object's own fields, not the bookkeeping. */
function auditable(o: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(o).filter(([k]) => !SYSTEM.has(k)));
}

function notFound(kind: StoredKind, id: string) {
  return new FarmError('not_found', `${KIND_LABEL[kind][0]} ${id} does not exist`);
}

function stale(kind: StoredKind, id: string) {
  return new FarmError('version_mismatch', `${KIND_LABEL[kind][0]} ${id} was changed by someone else; fetch it again and reapply your change`);
}

function missingRef(ref: Ref) {
  return new FarmError('validation_failed', `${ref.field}: ${KIND_LABEL[ref.kind][0]} ${ref.id} does not exist`, ref.field);
}

function checkExpected(kind: StoredKind, current: Obj, expected: Expected) {
  if (expected !== null && current.version !== expected)
    throw new FarmError('version_mismatch', `${KIND_LABEL[kind][0]} ${current.id} is at version ${current.version}, not ${expected}: fetch it again and reapply your change`);
}

function tokenRefs(t: Pick<Token, 'siteId' | 'applianceId'>): Ref[] {
  const refs: Ref[] = [];
  if (t.siteId) refs.push({ kind: 'site', id: t.siteId, field: 'siteId' });
  if (t.applianceId) refs.push({ kind: 'appliance', id: t.applianceId, field: 'applianceId' });
  return refs;
}

function describeUse(kind: StoredKind, current: Obj, raw: Raw, blockers: (StoredKind | 'token')[]): FarmError | null {
  const uses = blockers
    .map((k) => [k, Number(raw[refAttr(k)] ?? 0)] as const)
    .filter(([, n]) => n > 0)
    .map(([k, n]) => (k === 'farm' ? 'the farm auto-add setting' : k === 'site' ? 'its site (as the default collection)' : k === 'collection' && kind === 'target' ? `${n} collection(s) as template` : `${n} ${KIND_LABEL[k][n === 1 ? 0 : 1]}`));
  if (!uses.length) return null;
  return new FarmError('in_use', `${KIND_LABEL[kind][0]} ${current.id} is still used by ${uses.join(', ')}`);
}

function encodeCursor(key: Record<string, unknown>): string {
  return Buffer.from(JSON.stringify(key)).toString('base64url');
}

function decodeCursor(cursor: string | undefined, [attr, value]: [string, string]): Record<string, unknown> | undefined {
  if (cursor === undefined) return undefined;
  try {
    const key = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as unknown;
    if (typeof key === 'object' && key !== null && !Array.isArray(key) && (key as Raw)[attr] === value && Object.values(key).every((v) => typeof v === 'string'))
      return key as Record<string, unknown>;
  } catch {
    /* fall through */
  }
  throw new FarmError('bad_request', 'cursor: not a cursor this listing returned', 'cursor');
}

function backoff(attempt: number): Promise<void> {
  const cap = Math.min(1000, 15 * 2 ** attempt);
  return new Promise((r) => setTimeout(r, Math.random() * cap));
}

