/**
 * The control plane of one farm: connects the constructs, nothing more.
 * Every value that varies comes in as a parsed StackConfig (infra/lib/config.ts).
 */
import { Annotations, CfnOutput, RemovalPolicy, Stack, type StackProps } from 'aws-cdk-lib';
import type * as logs from 'aws-cdk-lib/aws-logs';
import type { Construct } from 'constructs';
import type { StackConfig } from './config.js';
import { ApiAlarms } from './constructs/api-alarms.js';
import { ApiEndpoint } from './constructs/api-endpoint.js';
import { ApiFunction } from './constructs/api-function.js';
import { FarmBucket } from './constructs/farm-bucket.js';
import { FarmTable } from './constructs/farm-table.js';
import { SigningKey } from './constructs/signing-key.js';

export interface BootfarmStackProps extends StackProps {
  readonly config: StackConfig;
}

export class BootfarmStack extends Stack {
  readonly table: FarmTable;
  readonly bucket: FarmBucket;
  readonly signingKey: SigningKey;
  readonly api: ApiFunction;
  readonly endpoint: ApiEndpoint;
  readonly alarms: ApiAlarms;

  constructor(scope: Construct, id: string, props: BootfarmStackProps) {
    // A retained farm is also protected as a stack: `cdk destroy` (or a delete in the console) is refused until someone
    // turns termination protection off on purpose. Destroy stages are throw-away and stay deletable.
    super(scope, id, { ...props, terminationProtection: props.config.removalPolicy === 'retain' });
    const c = props.config;
    const removalPolicy = c.removalPolicy === 'destroy' ? RemovalPolicy.DESTROY : RemovalPolicy.RETAIN;

    this.table = new FarmTable(this, 'Farm', { removalPolicy });
    this.bucket = new FarmBucket(this, 'Masters', { removalPolicy, noncurrentVersionDays: c.noncurrentVersionDays });
    // Always retained, whatever the stage's removal policy: every manifest and every appliance's trust hang on it.
    this.signingKey = new SigningKey(this, 'Signing', { alias: `alias/bootfarm-${c.stage}-signing` });

    this.api = new ApiFunction(this, 'Api', {
      environment: {
        BOOTFARM_TABLE: this.table.table.tableName,
        BOOTFARM_BUCKET: this.bucket.bucket.bucketName,
        BOOTFARM_SIGNING_KEY: this.signingKey.key.keyArn,
      },
      logRetentionDays: c.logRetentionDays as logs.RetentionDays,
      logRemovalPolicy: removalPolicy,
      reservedConcurrency: c.reservedConcurrency,
      tracing: c.tracing,
      systemLogLevel: c.systemLogLevel,
    });
    this.table.grantApiAccess(this.api.fn);
    this.bucket.grantApiAccess(this.api.fn);
    this.signingKey.grantSigning(this.api.role);

    this.endpoint = new ApiEndpoint(this, 'Endpoint', {
      fn: this.api.fn,
      domain: c.domainName && c.certificateArn ? { name: c.domainName, certificateArn: c.certificateArn } : undefined,
    });
    this.alarms = new ApiAlarms(this, 'Alarms', { fn: this.api.fn, logGroup: this.api.logGroup, latencyMs: c.latencyAlarmMs, email: c.alarmEmail });
    // A farm that is kept is one someone relies on: alarms that reach nobody are worth a warning on every synth and deploy.
    if (c.removalPolicy === 'retain' && !c.alarmEmail)
      Annotations.of(this.alarms).addWarningV2(
        'bootfarm:alarmEmail-unset',
        'bootfarm:alarmEmail is not set: the alarm topic has no subscriber, so the alarms (errors, 500s, throttles, latency) notify nobody. ' +
          'Pass -c bootfarm:alarmEmail=ops@example.com, or subscribe to the AlarmTopicArn output yourself (docs/deploy.md, settings)',
      );

    new CfnOutput(this, 'ApiUrl', { description: 'The API: bootfarm login --api <this> --token <token>', value: this.endpoint.url });
    if (this.endpoint.distribution) {
      new CfnOutput(this, 'FunctionUrl', { description: 'The Function URL behind CloudFront (no 60 s limit: long commits and GC)', value: this.endpoint.functionUrl.url });
      new CfnOutput(this, 'DistributionDomainName', { description: 'Point the custom domain (CNAME or alias) here', value: this.endpoint.distribution.distributionDomainName });
    }
    new CfnOutput(this, 'TableName', { description: 'The farm table', value: this.table.table.tableName });
    new CfnOutput(this, 'BucketName', { description: 'The vDisk bucket', value: this.bucket.bucket.bucketName });
    new CfnOutput(this, 'SigningKeyArn', { description: 'The KMS key that signs manifests and snapshots', value: this.signingKey.key.keyArn });
    new CfnOutput(this, 'AlarmTopicArn', { description: 'Subscribe here to receive the alarms', value: this.alarms.topic.topicArn });
    // The command, never a token: the secret is made by whoever runs it, with their own AWS credentials, and printed only to them.
    new CfnOutput(this, 'FirstTokenCommand', {
      description: 'Run once after the first deploy, with credentials that may write the table, to create the first farm-admin token',
      // --no-install: in the clone it runs this repository's CLI; elsewhere it fails rather than fetch some other package named bootfarm.
      value: `npx --no-install bootfarm cloud first-token --region ${this.region} --table ${this.table.table.tableName}`,
    });
  }
}
