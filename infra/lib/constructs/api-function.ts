/**
 * The control-plane API on Lambda: functions/lambda.ts (the same `createApp`
 * as `bootfarm dev`), bundled by NodejsFunction with the esbuild in
 * node_modules, so synth needs no Docker and no network.
 */
import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as nodejs from 'aws-cdk-lib/aws-lambda-nodejs';
import * as logs from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../../', import.meta.url));

/** How functions/lambda.ts is bundled; `bench lambda` and the handler tests read the same bundle from a synth. */
export const API_BUNDLING: nodejs.BundlingOptions = {
  format: nodejs.OutputFormat.ESM,
  target: 'node22',
  // ESM builds of the AWS SDK tree-shake to the commands the API sends.
  mainFields: ['module', 'main'],
  minify: true,
  sourceMap: true,
  sourcesContent: false,
  // Bundle the SDK rather than use the runtime's copy: the version deployed is the one tested (package-lock.json).
  externalModules: [],
  forceDockerBundling: false,
};

export interface ApiFunctionProps {
  readonly environment: { BOOTFARM_TABLE: string; BOOTFARM_BUCKET: string; BOOTFARM_SIGNING_KEY: string };
  /** @default 90 */
  readonly logRetentionDays?: logs.RetentionDays;
  /** What happens to the log group on stack deletion. @default RemovalPolicy.RETAIN */
  readonly logRemovalPolicy?: RemovalPolicy;
  /** Caps (and reserves) concurrent invocations: the Function URL is public. @default none: the account's shared pool */
  readonly reservedConcurrency?: number;
  /** @default false */
  readonly tracing?: boolean;
  /** Lambda's own per-request records (START, REPORT): WARN drops them. @default WARN */
  readonly systemLogLevel?: 'DEBUG' | 'INFO' | 'WARN';
}

export class ApiFunction extends Construct {
  readonly fn: nodejs.NodejsFunction;
  readonly logGroup: logs.LogGroup;
  readonly role: iam.Role;

  constructor(scope: Construct, id: string, props: ApiFunctionProps) {
    super(scope, id);
    this.logGroup = new logs.LogGroup(this, 'Logs', {
      retention: props.logRetentionDays ?? logs.RetentionDays.THREE_MONTHS,
      removalPolicy: props.logRemovalPolicy ?? RemovalPolicy.RETAIN,
    });
    // Its own role rather than AWSLambdaBasicExecutionRole, whose log rights cover every log group of the account.
    this.role = new iam.Role(this, 'Role', { assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'), description: 'bootfarm API function' });
    this.logGroup.grantWrite(this.role);
    this.fn = new nodejs.NodejsFunction(this, 'Function', {
      role: this.role,
      description: 'bootfarm control-plane API (functions/lambda.ts)',
      entry: `${root}functions/lambda.ts`,
      handler: 'handler',
      projectRoot: root,
      depsLockFilePath: `${root}package-lock.json`,
      runtime: lambda.Runtime.NODEJS_22_X,
      architecture: lambda.Architecture.ARM_64,
      // CPU scales with memory; validation, JSON and manifest hashing are CPU-bound, and 1 GiB halves cold starts against 512 MiB.
      memorySize: 1024,
      // A commit reads back every unverified chunk of a push (functions/vdisk-content.ts holds its lease 15 minutes).
      timeout: Duration.minutes(15),
      environment: { ...props.environment, NODE_OPTIONS: '--enable-source-maps' },
      bundling: API_BUNDLING,
      logGroup: this.logGroup,
      loggingFormat: lambda.LoggingFormat.JSON,
      applicationLogLevelV2: lambda.ApplicationLogLevel.INFO,
      // WARN by default: the platform's START and REPORT records for every request were most of the log volume (docs/deploy.md,
      // costs); errors and timeouts still show. REPORT carries init duration and max memory used: INFO (bootfarm:systemLogLevel) brings it back.
      systemLogLevelV2: lambda.SystemLogLevel[props.systemLogLevel ?? 'WARN'],
      reservedConcurrentExecutions: props.reservedConcurrency,
      tracing: props.tracing ? lambda.Tracing.ACTIVE : lambda.Tracing.DISABLED,
    });
  }
}
