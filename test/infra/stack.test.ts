/**
 * The CDK stack, checked requirement by requirement on the synthesised
 * template (aws-cdk-lib/assertions), plus one snapshot with asset hashes
 * redacted. The default stack is synthesised once with real bundling (what
 * `cdk deploy` uploads); variants skip bundling.
 */
import { Annotations, Match, Template } from 'aws-cdk-lib/assertions';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import * as esbuild from 'esbuild';
import { synthFarm, type Synthesised } from '../../infra/lib/synth.js';
import { tableDefinition } from '../../functions/storage/table.js';

type Json = Record<string, any>;

/** The IAM action each SDK command needs (presigned URLs need the action of the command they sign). */
const IAM_FOR_COMMAND: Record<string, string[]> = {
  GetCommand: ['dynamodb:GetItem'],
  PutCommand: ['dynamodb:PutItem'],
  UpdateCommand: ['dynamodb:UpdateItem'],
  DeleteCommand: ['dynamodb:DeleteItem'],
  QueryCommand: ['dynamodb:Query'],
  BatchGetCommand: ['dynamodb:BatchGetItem'],
  BatchWriteCommand: ['dynamodb:BatchWriteItem'],
  TransactWriteCommand: [], // authorised per item, below
  HeadObjectCommand: ['s3:GetObject'],
  GetObjectCommand: ['s3:GetObject'],
  PutObjectCommand: ['s3:PutObject'],
  DeleteObjectsCommand: ['s3:DeleteObject'],
  ListObjectsV2Command: ['s3:ListBucket'],
  GetPublicKeyCommand: ['kms:GetPublicKey'],
  SignCommand: ['kms:Sign'],
};
const IAM_FOR_TX_ITEM: Record<string, string> = { Put: 'dynamodb:PutItem', Update: 'dynamodb:UpdateItem', Delete: 'dynamodb:DeleteItem', ConditionCheck: 'dynamodb:ConditionCheckItem' };

/** Every AWS action the bundled API code can call: the SDK commands in the source files esbuild puts in the bundle. */
async function actionsTheCodeUses(): Promise<{ actions: Set<string>; unknown: string[] }> {
  const root = join(import.meta.dirname, '../..');
  const r = await esbuild.build({ entryPoints: [join(root, 'functions/lambda.ts')], bundle: true, platform: 'node', format: 'esm', write: false, metafile: true, outfile: '/dev/null', logLevel: 'silent', absWorkingDir: root });
  const own = Object.keys(r.metafile.inputs).filter((f) => !f.includes('node_modules/'));
  const actions = new Set<string>();
  const unknown: string[] = [];
  for (const f of own) {
    const src = readFileSync(join(root, f), 'utf8');
    for (const [, cmd] of src.matchAll(/new (\w+Command)\(/g)) {
      const a = IAM_FOR_COMMAND[cmd!];
      if (!a) unknown.push(`${f}: ${cmd}`);
      else a.forEach((x) => actions.add(x));
    }
    if (src.includes('TransactWriteCommand')) for (const [, item] of src.matchAll(/\{\s*(Put|Update|Delete|ConditionCheck):\s*\{/g)) actions.add(IAM_FOR_TX_ITEM[item!]!);
  }
  return { actions, unknown };
}

let dir: string;
let farm: Synthesised;
let template: Template;
let raw: Json;

const variant = (config: Parameters<typeof synthFarm>[1]) => {
  const s = synthFarm(join(dir, `v${Math.random().toString(36).slice(2)}`), config, { bundle: false });
  return { s, t: Template.fromJSON(JSON.parse(readFileSync(s.templateFile, 'utf8'))), json: JSON.parse(readFileSync(s.templateFile, 'utf8')) as Json };
};
/** Termination protection as `cdk deploy` reads it: from the stack's artifact in the cloud assembly. */
const terminationProtection = (s: Synthesised) => s.app.synth().getStackArtifact(s.stack.artifactId).terminationProtection;
const resources = (json: Json, type: string) => Object.entries(json.Resources as Record<string, Json>).filter(([, r]) => r.Type === type);
const only = (json: Json, type: string) => {
  const r = resources(json, type);
  expect(r, `exactly one ${type}`).toHaveLength(1);
  return r[0]!;
};

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bootfarm-cdk-'));
  farm = synthFarm(join(dir, 'default'));
  raw = JSON.parse(readFileSync(farm.templateFile, 'utf8'));
  template = Template.fromJSON(raw);
}, 120_000);
afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('table', () => {
  test('is on demand, with point-in-time recovery, deletion protection and KMS encryption', () => {
    template.hasResourceProperties('AWS::DynamoDB::GlobalTable', {
      BillingMode: 'PAY_PER_REQUEST',
      SSESpecification: { SSEEnabled: true, SSEType: 'KMS' },
      Replicas: [Match.objectLike({ PointInTimeRecoverySpecification: { PointInTimeRecoveryEnabled: true }, DeletionProtectionEnabled: true })],
    });
    template.hasResource('AWS::DynamoDB::GlobalTable', { DeletionPolicy: 'Retain', UpdateReplacePolicy: 'Retain' });
  });

  test('has the keys and indexes of functions/storage/table.ts (the table DynamoDB Local gets)', () => {
    const def = tableDefinition('x');
    const [, t] = only(raw, 'AWS::DynamoDB::GlobalTable');
    expect(t.Properties.KeySchema).toEqual(def.KeySchema);
    expect(new Set(t.Properties.AttributeDefinitions.map((a: Json) => `${a.AttributeName}:${a.AttributeType}`))).toEqual(
      new Set(def.AttributeDefinitions!.map((a) => `${a.AttributeName}:${a.AttributeType}`)),
    );
    expect(t.Properties.GlobalSecondaryIndexes).toEqual(def.GlobalSecondaryIndexes!.map((g) => ({ IndexName: g.IndexName, KeySchema: g.KeySchema, Projection: g.Projection })));
  });

  test('a destroy stage drops deletion protection and is deleted with the stack', () => {
    const { t } = variant({ removalPolicy: 'destroy' });
    t.hasResourceProperties('AWS::DynamoDB::GlobalTable', { Replicas: [Match.objectLike({ DeletionProtectionEnabled: false })] });
    t.hasResource('AWS::DynamoDB::GlobalTable', { DeletionPolicy: 'Delete' });
  });
});

describe('bucket', () => {
  test('blocks all public access and enforces bucket-owner object ownership', () => {
    template.hasResourceProperties('AWS::S3::Bucket', {
      PublicAccessBlockConfiguration: { BlockPublicAcls: true, BlockPublicPolicy: true, IgnorePublicAcls: true, RestrictPublicBuckets: true },
      OwnershipControls: { Rules: [{ ObjectOwnership: 'BucketOwnerEnforced' }] },
    });
  });

  test('is encrypted at rest (SSE-S3) and versioned', () => {
    template.hasResourceProperties('AWS::S3::Bucket', {
      BucketEncryption: { ServerSideEncryptionConfiguration: [{ ServerSideEncryptionByDefault: { SSEAlgorithm: 'AES256' } }] },
      VersioningConfiguration: { Status: 'Enabled' },
    });
  });

  test('accepts TLS 1.2 or later only', () => {
    const [, policy] = only(raw, 'AWS::S3::BucketPolicy');
    const denies = policy.Properties.PolicyDocument.Statement.filter((s: Json) => s.Effect === 'Deny');
    expect(denies).toContainEqual(expect.objectContaining({ Action: 's3:*', Condition: { Bool: { 'aws:SecureTransport': 'false' } }, Principal: { AWS: '*' } }));
    expect(denies).toContainEqual(expect.objectContaining({ Action: 's3:*', Condition: { NumericLessThan: { 's3:TlsVersion': 1.2 } } }));
  });

  test('lifecycle aborts incomplete multipart uploads, expires old versions and abandoned upload sessions', () => {
    const [, b] = only(raw, 'AWS::S3::Bucket');
    const rules: Json[] = b.Properties.LifecycleConfiguration.Rules;
    expect(rules).toContainEqual(expect.objectContaining({ AbortIncompleteMultipartUpload: { DaysAfterInitiation: 1 }, Status: 'Enabled' }));
    expect(rules).toContainEqual(expect.objectContaining({ NoncurrentVersionExpiration: { NoncurrentDays: 30 }, ExpiredObjectDeleteMarker: true, Status: 'Enabled' }));
    expect(rules).toContainEqual(expect.objectContaining({ Prefix: 'uploads/', ExpirationInDays: 7, Status: 'Enabled' }));
    // Every rule is scoped: none expires current chunks or manifests.
    expect(rules.filter((r) => r.ExpirationInDays !== undefined && r.Prefix !== 'uploads/')).toEqual([]);
    const { json } = variant({ noncurrentVersionDays: 7 });
    expect(only(json, 'AWS::S3::Bucket')[1].Properties.LifecycleConfiguration.Rules).toContainEqual(expect.objectContaining({ NoncurrentVersionExpiration: { NoncurrentDays: 7 } }));
  });

  test('is kept by default, emptied and deleted for a destroy stage', () => {
    template.hasResource('AWS::S3::Bucket', { DeletionPolicy: 'Retain' });
    expect(resources(raw, 'Custom::S3AutoDeleteObjects')).toHaveLength(0);
    const { t, json } = variant({ removalPolicy: 'destroy' });
    t.hasResource('AWS::S3::Bucket', { DeletionPolicy: 'Delete' });
    expect(resources(json, 'Custom::S3AutoDeleteObjects')).toHaveLength(1);
  });
});

describe('signing key', () => {
  test('is a KMS asymmetric ECC_NIST_P256 sign/verify key, kept on stack deletion, 30-day deletion window', () => {
    template.hasResourceProperties('AWS::KMS::Key', { KeySpec: 'ECC_NIST_P256', KeyUsage: 'SIGN_VERIFY', PendingWindowInDays: 30 });
    template.hasResource('AWS::KMS::Key', { DeletionPolicy: 'Retain' });
    template.hasResourceProperties('AWS::KMS::Alias', { AliasName: 'alias/bootfarm-dev-signing' });
    // Even a destroy stage keeps it: manifests and appliances' trust depend on it.
    variant({ removalPolicy: 'destroy' }).t.hasResource('AWS::KMS::Key', { DeletionPolicy: 'Retain', UpdateReplacePolicy: 'Retain' });
  });
});

/** The resources each resource references (Ref, Fn::GetAtt, Fn::Sub, DependsOn): what CloudFormation orders creation by. */
function dependencies(json: Json): Map<string, Set<string>> {
  const ids = new Set(Object.keys(json.Resources));
  const deps = new Map<string, Set<string>>();
  const walk = (v: unknown, into: Set<string>): void => {
    if (Array.isArray(v)) return v.forEach((x) => walk(x, into));
    if (!v || typeof v !== 'object') return;
    for (const [k, x] of Object.entries(v)) {
      if (k === 'Ref' && typeof x === 'string' && ids.has(x)) into.add(x);
      else if (k === 'Fn::GetAtt') into.add(Array.isArray(x) ? String(x[0]) : String(x).split('.')[0]!);
      else if (k === 'Fn::Sub') for (const [, name] of String(Array.isArray(x) ? x[0] : x).matchAll(/\$\{([^}.!]+)/g)) if (ids.has(name!)) into.add(name!);
      walk(x, into);
    }
  };
  for (const [id, r] of Object.entries(json.Resources as Record<string, Json>)) {
    const into = new Set<string>([r.DependsOn ?? []].flat());
    walk(r.Properties, into);
    deps.set(id, into);
  }
  return deps;
}

/** A dependency cycle, as a list of resource ids, or null. */
function cycle(json: Json): string[] | null {
  const deps = dependencies(json);
  const state = new Map<string, 'open' | 'done'>();
  const visit = (id: string, path: string[]): string[] | null => {
    if (state.get(id) === 'done') return null;
    if (state.get(id) === 'open') return [...path.slice(path.indexOf(id)), id];
    state.set(id, 'open');
    for (const d of deps.get(id) ?? []) {
      const c = visit(d, [...path, id]);
      if (c) return c;
    }
    state.set(id, 'done');
    return null;
  };
  for (const id of deps.keys()) {
    const c = visit(id, []);
    if (c) return c;
  }
  return null;
}

describe('only the API role can sign with the farm key', () => {
  /**
   * Whether the key policy, on its own, denies kms:Sign to a principal: an explicit Deny wins over any Allow, in the key
   * policy, an IAM policy or a grant. `principal` is an ARN, or the API role's Fn::GetAtt (its ARN is only known at deploy).
   */
  const keyPolicyDeniesSign = (statements: Json[], principal: unknown): boolean =>
    statements.some((st) => {
      if (st.Effect !== 'Deny') return false;
      // Only the forms this test can judge; anything else is not counted as a Deny (the test then fails, not passes).
      if (st.NotPrincipal || st.NotAction || st.NotResource) return false;
      const actions = [st.Action].flat() as string[];
      if (!actions.some((a) => new RegExp(`^${a.replace(/\*/g, '.*')}$`).test('kms:Sign'))) return false;
      if (JSON.stringify(st.Principal) !== JSON.stringify({ AWS: '*' }) || st.Resource !== '*') return false;
      const ops = Object.entries((st.Condition ?? {}) as Record<string, Record<string, unknown>>);
      return ops.every(([op, keys]) => {
        if (op !== 'ArnNotEquals' || Object.keys(keys).join() !== 'aws:PrincipalArn') return false;
        return [keys['aws:PrincipalArn']].flat().every((exempt) => JSON.stringify(exempt) !== JSON.stringify(principal));
      });
    });

  test('no principal other than the API role can be allowed kms:Sign: the key policy denies it to everyone else', () => {
    const [, key] = only(raw, 'AWS::KMS::Key');
    const [roleId] = only(raw, 'AWS::IAM::Role');
    const statements: Json[] = key.Properties.KeyPolicy.Statement;
    const apiRole = { 'Fn::GetAtt': [roleId, 'Arn'] };
    // The Deny as it must read.
    expect(statements).toContainEqual({
      Sid: 'OnlyTheApiRoleSigns',
      Effect: 'Deny',
      Principal: { AWS: '*' },
      Action: 'kms:Sign',
      Resource: '*',
      Condition: { ArnNotEquals: { 'aws:PrincipalArn': apiRole } },
    });
    // Whoever an Allow names, and whatever IAM policies say: every other principal is denied, the API role is not.
    for (const other of [
      'arn:aws:iam::123456789012:root',
      'arn:aws:iam::123456789012:role/Admin',
      'arn:aws:iam::123456789012:role/cdk-hnb659fds-cfn-exec-role-123456789012-eu-west-1',
      'arn:aws:iam::123456789012:user/alice',
      'arn:aws:iam::210987654321:root',
    ])
      expect(keyPolicyDeniesSign(statements, other), other).toBe(true);
    expect(keyPolicyDeniesSign(statements, apiRole)).toBe(false);
    // Only the API role's policy allows it (least-privilege test above), and no statement lets another principal around the Deny.
    for (const st of statements) expect(Object.keys(st).filter((k) => k.startsWith('Not'))).toEqual([]);
    // A destroy stage, a custom domain or tracing change nothing here.
    const v = variant({ removalPolicy: 'destroy', tracing: true, domainName: 'bootfarm.example.com', certificateArn: 'arn:aws:acm:us-east-1:123456789012:certificate/11111111-2222-3333-4444-555555555555' }).json;
    expect(keyPolicyDeniesSign(only(v, 'AWS::KMS::Key')[1].Properties.KeyPolicy.Statement, 'arn:aws:iam::123456789012:role/Admin')).toBe(true);
  });

  test('the account keeps administration of the key (it stays manageable, and IAM policies apply)', () => {
    const [, key] = only(raw, 'AWS::KMS::Key');
    expect(key.Properties.KeyPolicy.Statement).toContainEqual({ Effect: 'Allow', Principal: { AWS: 'arn:aws:iam::123456789012:root' }, Action: 'kms:*', Resource: '*' });
    // The only Allow in the key policy: the API role's rights come from its IAM policy (kms:Sign, kms:GetPublicKey on this key).
    expect(key.Properties.KeyPolicy.Statement.filter((s: Json) => s.Effect === 'Allow')).toHaveLength(1);
  });

  test('the key policy naming the role makes no dependency cycle (the role\'s policy, which names the key, is a resource of its own)', () => {
    const [keyId] = only(raw, 'AWS::KMS::Key');
    const [roleId] = only(raw, 'AWS::IAM::Role');
    const [policyId] = only(raw, 'AWS::IAM::Policy');
    const deps = dependencies(raw);
    expect(deps.get(keyId)).toEqual(new Set([roleId]));
    expect(deps.get(roleId)).toEqual(new Set());
    expect([...deps.get(policyId)!]).toEqual(expect.arrayContaining([keyId, roleId]));
    expect(cycle(raw)).toBeNull();
    // The checker sees cycles.
    expect(cycle({ Resources: { A: { Properties: { X: { Ref: 'B' } } }, B: { DependsOn: 'A', Properties: {} } } })).toEqual(['A', 'B', 'A']);
  });
});

describe('API function', () => {
  test('runs on Node 22, arm64, from an ESM bundle of functions/lambda.ts', () => {
    const [, fn] = only(raw, 'AWS::Lambda::Function');
    expect(fn.Properties).toMatchObject({ Runtime: 'nodejs22.x', Architectures: ['arm64'], Handler: 'index.handler', MemorySize: 1024, Timeout: 900 });
    const files = readdirSync(farm.apiAssetDir!).sort();
    expect(files).toEqual(['index.mjs', 'index.mjs.map']);
    const code = readFileSync(join(farm.apiAssetDir!, 'index.mjs'), 'utf8');
    // The SDK is bundled (the version tested is the one deployed): no bare import of it is left for the runtime to satisfy.
    // (An import statement, not the SDK's own error text that mentions `import "@aws-sdk/signature-v4-crt"`.)
    expect(/(?:^|[;}])\s*import(?:\s*[\w{},*\s$]+\s*from)?\s*"@aws-sdk\//m.test(code), 'an import of @aws-sdk left in the bundle').toBe(false);
    expect(/(?:^|[;}])\s*import(?:\s*[\w{},*\s$]+\s*from)?\s*"node:stream"/m.test(code), 'the check sees imports that are left (node built-ins)').toBe(true);
    expect(code.includes('BOOTFARM_SIGNING_KEY'), 'the bundle is functions/lambda.ts').toBe(true);
    expect(statSync(join(farm.apiAssetDir!, 'index.mjs')).size).toBeLessThan(3 * 1024 * 1024);
  });

  test('is told the table, bucket and key it may use, and nothing secret', () => {
    const [, fn] = only(raw, 'AWS::Lambda::Function');
    const [tableId] = only(raw, 'AWS::DynamoDB::GlobalTable');
    const [bucketId] = only(raw, 'AWS::S3::Bucket');
    const [keyId] = only(raw, 'AWS::KMS::Key');
    expect(fn.Properties.Environment.Variables).toEqual({
      BOOTFARM_TABLE: { Ref: tableId },
      BOOTFARM_BUCKET: { Ref: bucketId },
      BOOTFARM_SIGNING_KEY: { 'Fn::GetAtt': [keyId, 'Arn'] },
      NODE_OPTIONS: '--enable-source-maps',
    });
  });

  test('a production stage reserves 50 concurrent executions by default (a cap for the public URL); other stages share the account pool unless set', () => {
    const reserved = (config: Parameters<typeof synthFarm>[1]) => only(variant(config).json, 'AWS::Lambda::Function')[1].Properties.ReservedConcurrentExecutions;
    expect(only(raw, 'AWS::Lambda::Function')[1].Properties.ReservedConcurrentExecutions).toBeUndefined();
    expect(reserved({ stage: 'prod' })).toBe(50);
    expect(reserved({ stage: 'prod-eu' })).toBe(50);
    expect(reserved({ stage: 'prod', reservedConcurrency: '20' })).toBe(20);
    expect(reserved({ stage: 'prod', reservedConcurrency: 'none' })).toBeUndefined();
    expect(reserved({ reservedConcurrency: 5 })).toBe(5);
    expect(() => variant({ reservedConcurrency: 'lots' })).toThrowError(/bootfarm:reservedConcurrency = "lots": must be a whole number from 1 to 10000, or none/);
    expect(() => variant({ reservedConcurrency: 0 })).toThrowError(/bootfarm:reservedConcurrency = 0:/);
  });

  test('keeps its logs for the configured retention (90 days by default)', () => {
    template.hasResourceProperties('AWS::Logs::LogGroup', { RetentionInDays: 90 });
    const [logId] = only(raw, 'AWS::Logs::LogGroup');
    template.hasResourceProperties('AWS::Lambda::Function', { LoggingConfig: { LogFormat: 'JSON', LogGroup: { Ref: logId }, ApplicationLogLevel: 'INFO', SystemLogLevel: 'WARN' } });
    variant({ logRetentionDays: 30 }).t.hasResourceProperties('AWS::Logs::LogGroup', { RetentionInDays: 30 });
  });

  test('drops the per-request REPORT lines by default (system log level WARN), and bootfarm:systemLogLevel brings them back', () => {
    template.hasResourceProperties('AWS::Lambda::Function', { LoggingConfig: Match.objectLike({ SystemLogLevel: 'WARN' }) });
    variant({ systemLogLevel: 'INFO' }).t.hasResourceProperties('AWS::Lambda::Function', { LoggingConfig: Match.objectLike({ SystemLogLevel: 'INFO', ApplicationLogLevel: 'INFO' }) });
    variant({ systemLogLevel: 'debug' }).t.hasResourceProperties('AWS::Lambda::Function', { LoggingConfig: Match.objectLike({ SystemLogLevel: 'DEBUG' }) });
    expect(() => variant({ systemLogLevel: 'verbose' })).toThrowError(/bootfarm:systemLogLevel = "verbose": must be WARN, INFO or DEBUG/);
  });
});

describe('least privilege', () => {
  test('the function role has no managed policies and one inline policy', () => {
    const [, role] = only(raw, 'AWS::IAM::Role');
    expect(role.Properties.ManagedPolicyArns).toBeUndefined();
    expect(role.Properties.AssumeRolePolicyDocument.Statement).toEqual([{ Action: 'sts:AssumeRole', Effect: 'Allow', Principal: { Service: 'lambda.amazonaws.com' } }]);
    only(raw, 'AWS::IAM::Policy');
  });

  test('grants exactly the table, bucket, key and log operations the API performs, no action wildcards', async () => {
    const [, policy] = only(raw, 'AWS::IAM::Policy');
    const [tableId] = only(raw, 'AWS::DynamoDB::GlobalTable');
    const [bucketId] = only(raw, 'AWS::S3::Bucket');
    const [keyId] = only(raw, 'AWS::KMS::Key');
    const [logId] = only(raw, 'AWS::Logs::LogGroup');
    const statements: Json[] = policy.Properties.PolicyDocument.Statement;
    const actions = (s: Json) => [s.Action].flat().sort();
    for (const s of statements) {
      expect(s.Effect).toBe('Allow');
      for (const a of actions(s)) expect(a, 'no wildcard in an action').not.toContain('*');
    }
    const granted = statements.map((s) => ({ actions: actions(s), resource: s.Resource }));
    // What the code calls, found in the sources the bundle is built from, must be exactly what is granted: nothing missing, nothing extra.
    const used = await actionsTheCodeUses();
    expect(used.unknown, 'SDK commands with no IAM mapping in this test: add them to IAM_FOR_COMMAND').toEqual([]);
    const grantedAws = statements.flatMap(actions).filter((a) => !a.startsWith('logs:'));
    expect(new Set(grantedAws)).toEqual(used.actions);
    expect(grantedAws.length, 'no action granted twice').toBe(used.actions.size);
    const byService = (svc: string) => [...used.actions].filter((a) => a.startsWith(`${svc}:`)).sort();
    expect(granted).toEqual(
      expect.arrayContaining([
        {
          actions: byService('dynamodb'),
          resource: [{ 'Fn::GetAtt': [tableId, 'Arn'] }, { 'Fn::Join': ['', [{ 'Fn::GetAtt': [tableId, 'Arn'] }, '/index/*']] }],
        },
        { actions: byService('s3').filter((a) => a !== 's3:ListBucket'), resource: { 'Fn::Join': ['', [{ 'Fn::GetAtt': [bucketId, 'Arn'] }, '/*']] } },
        { actions: ['s3:ListBucket'], resource: { 'Fn::GetAtt': [bucketId, 'Arn'] } },
        { actions: byService('kms'), resource: { 'Fn::GetAtt': [keyId, 'Arn'] } },
        { actions: ['logs:CreateLogStream', 'logs:PutLogEvents'], resource: { 'Fn::GetAtt': [logId, 'Arn'] } },
      ]),
    );
    expect(granted).toHaveLength(5);
    // No Scan, no table administration, no KMS decrypt or key management.
    const all = statements.flatMap(actions);
    for (const a of ['dynamodb:Scan', 'dynamodb:DeleteTable', 'kms:Decrypt', 'kms:ScheduleKeyDeletion', 's3:PutBucketPolicy']) expect(all).not.toContain(a);
  });

  test('tracing adds only the X-Ray write actions', () => {
    const { json } = variant({ tracing: true });
    const statements: Json[] = only(json, 'AWS::IAM::Policy')[1].Properties.PolicyDocument.Statement;
    expect(statements.find((s) => [s.Action].flat().some((a: string) => a.startsWith('xray:')))?.Action).toEqual(['xray:PutTelemetryRecords', 'xray:PutTraceSegments']);
  });
});

describe('HTTPS endpoint', () => {
  test('is a Function URL in RESPONSE_STREAM mode whose callers authenticate in the app (auth type NONE)', () => {
    const [fnId] = only(raw, 'AWS::Lambda::Function');
    template.hasResourceProperties('AWS::Lambda::Url', { AuthType: 'NONE', InvokeMode: 'RESPONSE_STREAM', TargetFunctionArn: { 'Fn::GetAtt': [fnId, 'Arn'] } });
    template.hasResourceProperties('AWS::Lambda::Permission', { Action: 'lambda:InvokeFunctionUrl', FunctionUrlAuthType: 'NONE', Principal: '*' });
    // Public invoke only through the URL, never a direct Invoke.
    template.hasResourceProperties('AWS::Lambda::Permission', { Action: 'lambda:InvokeFunction', InvokedViaFunctionUrl: true, Principal: '*' });
    expect(resources(raw, 'AWS::CloudFront::Distribution')).toHaveLength(0);
  });

  test('a custom domain is served by CloudFront over HTTPS with caching off and every method passed through', () => {
    const arn = 'arn:aws:acm:us-east-1:123456789012:certificate/11111111-2222-3333-4444-555555555555';
    const { t, json } = variant({ domainName: 'bootfarm.example.com', certificateArn: arn });
    t.hasResourceProperties('AWS::CloudFront::Distribution', {
      DistributionConfig: Match.objectLike({
        Aliases: ['bootfarm.example.com'],
        ViewerCertificate: { AcmCertificateArn: arn, MinimumProtocolVersion: 'TLSv1.2_2021', SslSupportMethod: 'sni-only' },
        DefaultCacheBehavior: Match.objectLike({
          ViewerProtocolPolicy: 'https-only',
          AllowedMethods: ['GET', 'HEAD', 'OPTIONS', 'PUT', 'PATCH', 'POST', 'DELETE'],
          CachePolicyId: '4135ea2d-6df8-44a3-9df3-4b5a84be39ad', // Managed-CachingDisabled
          OriginRequestPolicyId: 'b689b0a8-53d0-40ab-baf2-68738e2966ac', // Managed-AllViewerExceptHostHeader
        }),
      }),
    });
    expect(json.Outputs.ApiUrl.Value).toBe('https://bootfarm.example.com/');
    // CloudFront's longest wait without a quota increase (its default is 30 s); the Function URL and the distribution's name are outputs.
    const [, dist] = only(json, 'AWS::CloudFront::Distribution');
    expect(dist.Properties.DistributionConfig.Origins[0].CustomOriginConfig).toMatchObject({ OriginReadTimeout: 60, OriginProtocolPolicy: 'https-only' });
    expect(Object.keys(json.Outputs)).toEqual(expect.arrayContaining(['FunctionUrl', 'DistributionDomainName']));
  });
});

describe('alarms', () => {
  test('errors, server-error log lines, throttles and p99 latency alarm to one SNS topic', () => {
    const alarms = resources(raw, 'AWS::CloudWatch::Alarm').map(([, a]) => a.Properties);
    const [topicId] = only(raw, 'AWS::SNS::Topic');
    expect(alarms.map((a) => a.MetricName ?? a.ExtendedStatistic).sort()).toEqual(['ApiServerErrors', 'Duration', 'Errors', 'Throttles']);
    for (const a of alarms) {
      expect(a.AlarmActions).toEqual([{ Ref: topicId }]);
      expect(a.TreatMissingData).toBe('notBreaching');
    }
    expect(alarms.find((a) => a.MetricName === 'Duration')).toMatchObject({ ExtendedStatistic: 'p99', Threshold: 3000, EvaluationPeriods: 3 });
    template.hasResourceProperties('AWS::Logs::MetricFilter', { FilterPattern: '{ $.level = "ERROR" }', MetricTransformations: [Match.objectLike({ MetricName: 'ApiServerErrors', MetricNamespace: 'bootfarm' })] });
    expect(resources(raw, 'AWS::SNS::Subscription')).toHaveLength(0);
  });

  test('an alarm e-mail subscribes to the topic', () => {
    variant({ alarmEmail: 'ops@example.com' }).t.hasResourceProperties('AWS::SNS::Subscription', { Protocol: 'email', Endpoint: 'ops@example.com' });
  });

  test('a retain stage without an alarm e-mail warns at synth that the alarms notify nobody', () => {
    const warning = Match.stringLikeRegexp('^bootfarm:alarmEmail is not set: the alarm topic has no subscriber, so the alarms .* notify nobody\\. Pass -c bootfarm:alarmEmail=');
    Annotations.fromStack(farm.stack).hasWarning('/bootfarm-dev/Alarms', warning);
    Annotations.fromStack(variant({ stage: 'prod' }).s.stack).hasWarning('/bootfarm-prod/Alarms', warning);
    // With a subscriber, or on a throw-away stage, nothing to say.
    Annotations.fromStack(variant({ alarmEmail: 'ops@example.com' }).s.stack).hasNoWarning('*', Match.anyValue());
    Annotations.fromStack(variant({ removalPolicy: 'destroy' }).s.stack).hasNoWarning('*', Match.anyValue());
  });
});

describe('outputs', () => {
  test('give the API URL, bucket, table and the first-token command, and no secret', () => {
    const [tableId] = only(raw, 'AWS::DynamoDB::GlobalTable');
    const [bucketId] = only(raw, 'AWS::S3::Bucket');
    const out = raw.Outputs as Json;
    expect(Object.keys(out).sort()).toEqual(['AlarmTopicArn', 'ApiUrl', 'BucketName', 'FirstTokenCommand', 'SigningKeyArn', 'TableName']);
    expect(out.TableName.Value).toEqual({ Ref: tableId });
    expect(out.BucketName.Value).toEqual({ Ref: bucketId });
    expect(out.ApiUrl.Value).toMatchObject({ 'Fn::GetAtt': [expect.stringMatching(/^EndpointUrl/), 'FunctionUrl'] });
    expect(JSON.stringify(out.FirstTokenCommand.Value)).toContain('npx --no-install bootfarm cloud first-token --region eu-west-1 --table ');
    // Tokens are bft_<id>_<secret> (model/auth.ts); nothing like one, and no parameter or secret resource, is in the template.
    expect(JSON.stringify(raw)).not.toMatch(/bft_[A-Za-z0-9_-]{20,}/);
    expect(resources(raw, 'AWS::SecretsManager::Secret')).toHaveLength(0);
    expect(raw.Parameters ?? {}).not.toHaveProperty('Token');
  });
});

describe('a production stage cannot delete its data', () => {
  test('removalPolicy destroy is refused for a production stage, with a message naming the keys', () => {
    for (const stage of ['prod', 'production', 'prod-eu'])
      expect(() => variant({ stage, removalPolicy: 'destroy' })).toThrowError(
        new RegExp(
          `bootfarm stack: bad context\\n  bootfarm:removalPolicy = "destroy": refused for bootfarm:stage = "${stage}" \\(a production stage\\): cdk destroy would delete its table and empty its bucket\\. ` +
            'Leave bootfarm:removalPolicy at retain; to tear this stage down on purpose, also pass -c bootfarm:allowDestroyProd=true',
        ),
      );
    // Other stages may be throw-away; a prod-like name that is not a production stage is not caught.
    for (const stage of ['dev', 'products', 'preprod']) variant({ stage, removalPolicy: 'destroy' }).t.hasResource('AWS::DynamoDB::GlobalTable', { DeletionPolicy: 'Delete' });
  });

  test('bootfarm:allowDestroyProd=true lets a production stage be torn down on purpose', () => {
    const { s, t, json } = variant({ stage: 'prod', removalPolicy: 'destroy', allowDestroyProd: 'true' });
    t.hasResourceProperties('AWS::DynamoDB::GlobalTable', { Replicas: [Match.objectLike({ DeletionProtectionEnabled: false })] });
    expect(resources(json, 'Custom::S3AutoDeleteObjects')).toHaveLength(1);
    expect(terminationProtection(s)).toBe(false);
    // The override alone changes nothing: a retained prod stage stays retained.
    const kept = variant({ stage: 'prod', allowDestroyProd: true });
    kept.t.hasResourceProperties('AWS::DynamoDB::GlobalTable', { Replicas: [Match.objectLike({ DeletionProtectionEnabled: true })] });
    expect(terminationProtection(kept.s)).toBe(true);
    expect(() => variant({ allowDestroyProd: 'yes' })).toThrowError(/bootfarm:allowDestroyProd = "yes"/);
  });

  test('a retain stack has CloudFormation termination protection; a destroy stack does not', () => {
    expect(farm.stack.terminationProtection).toBe(true);
    expect(terminationProtection(farm)).toBe(true);
    expect(terminationProtection(variant({ stage: 'prod' }).s)).toBe(true);
    expect(terminationProtection(variant({ removalPolicy: 'destroy' }).s)).toBe(false);
  });
});

describe('context', () => {
  test('a bad value stops synth with a message naming each key at fault', () => {
    expect(() => variant({ stage: 'Prod!', logRetentionDays: 42, domainName: 'api.example.com' })).toThrowError(
      /bootfarm stack: bad context\n(.|\n)*bootfarm:stage = "Prod!": must be 1-20 lower-case(.|\n)*bootfarm:logRetentionDays = 42: must be one of the periods(.|\n)*bootfarm:certificateArn: domainName and certificateArn go together/,
    );
    expect(() => variant({ removalPolicy: 'delete' })).toThrowError(/bootfarm:removalPolicy = "delete"/);
  });

  test('the stage names the stack and the key alias', () => {
    const s = synthFarm(join(dir, 'prod'), { stage: 'prod' }, { bundle: false });
    expect(s.stack.stackName).toBe('bootfarm-prod');
    Template.fromJSON(JSON.parse(readFileSync(s.templateFile, 'utf8'))).hasResourceProperties('AWS::KMS::Alias', { AliasName: 'alias/bootfarm-prod-signing' });
  });
});

test('template snapshot (asset hashes redacted)', () => {
  const text = JSON.stringify(raw, null, 1).replace(/[0-9a-f]{64}(\.zip)?/g, '<asset-hash>$1');
  expect(JSON.parse(text)).toMatchSnapshot();
});
