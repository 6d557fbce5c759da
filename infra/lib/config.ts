/**
 * What one deployment of the control plane may vary, parsed once by zod from
 * CDK context (`cdk.json`, or `-c bootfarm:stage=prod` on the command line).
 * The bin entry reads context; the stack and its constructs only take props.
 */
import { z } from 'zod';

/** CloudWatch Logs accepts only these retention periods (days). */
export const LOG_RETENTION_DAYS = [1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653] as const;

const bool = z.union([z.boolean(), z.enum(['true', 'false']).transform((s) => s === 'true')]);
const int = (min: number, max: number) => z.union([z.number(), z.string().regex(/^\d+$/).transform(Number)]).pipe(z.number().int().min(min).max(max));

/**
 * Stages that hold a real farm: `prod`, `production`, and `prod-<anything>` (e.g. prod-eu).
 * They may not be `destroy` stages without `allowDestroyProd`, and get a reserved concurrency by default.
 */
export const isProductionStage = (stage: string): boolean => /^prod(uction)?(-|$)/.test(stage);

/**
 * The reserved concurrency of a production stage's API unless `reservedConcurrency` says otherwise: a cap on what a
 * flood of requests to the public Function URL can take from the account (and cost), and a floor no other function of
 * the account can take from the farm. A farm at rest uses about 0.0075 per appliance (infra/README.md).
 */
export const PRODUCTION_RESERVED_CONCURRENCY = 50;

export const StackConfigSchema = z
  .object({
    /** Names the stack and its resources: `bootfarm-<stage>`. Lower-case letters, digits and '-'. */
    stage: z
      .string()
      .regex(/^[a-z][a-z0-9-]{0,19}$/, 'must be 1-20 lower-case letters, digits or "-", starting with a letter (e.g. dev, prod, eu-1)'),
    /**
     * A custom host name for the API, e.g. bootfarm.example.com. Needs `certificateArn`
     * (an ACM certificate in us-east-1, since the name is served by CloudFront).
     */
    domainName: z
      .string()
      .regex(/^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$/, 'must be a lower-case DNS name such as bootfarm.example.com')
      .optional(),
    certificateArn: z
      .string()
      .regex(/^arn:aws[a-z-]*:acm:us-east-1:\d{12}:certificate\/[0-9a-f-]{36}$/, 'must be the ARN of an ACM certificate in us-east-1 (CloudFront only uses certificates from there)')
      .optional(),
    /** Days the API's logs are kept. @default 90 */
    logRetentionDays: int(1, 3653)
      .refine((d) => (LOG_RETENTION_DAYS as readonly number[]).includes(d), `must be one of the periods CloudWatch Logs offers: ${LOG_RETENTION_DAYS.join(', ')}`)
      .default(90),
    /**
     * What `cdk destroy` does with the farm's data (table, bucket, signing key).
     * `retain` (the default) keeps them and turns on the table's deletion protection;
     * `destroy` is for throw-away stages and empties the bucket.
     */
    removalPolicy: z.enum(['retain', 'destroy']).default('retain'),
    /**
     * Lets a production stage (isProductionStage) be a `destroy` stage: for tearing one down on
     * purpose (docs/deploy.md, tearing down). Without it such a stage refuses `destroy`. @default false
     */
    allowDestroyProd: bool.default(false),
    /** Days a deleted or overwritten object stays recoverable in the versioned bucket. @default 30 */
    noncurrentVersionDays: int(1, 3650).default(30),
    /** An address that receives the alarms (SNS e-mail subscription, confirmed by its owner). */
    alarmEmail: z.email('must be an e-mail address').optional(),
    /**
     * Most concurrent API invocations, reserved from the account's pool. `none`: no reservation (the account's
     * shared pool). @default PRODUCTION_RESERVED_CONCURRENCY for a production stage, none for others
     */
    reservedConcurrency: z.union([int(1, 10000), z.literal('none')], { error: 'must be a whole number from 1 to 10000, or none' }).optional(),
    /** p99 API latency (ms) above which the latency alarm fires. @default 3000 */
    latencyAlarmMs: int(100, 900000).default(3000),
    /** Turn on X-Ray tracing for the API function. @default false */
    tracing: bool.default(false),
    /**
     * Lambda's system log level for the API function. WARN drops the per-request platform records (START, and REPORT
     * with duration, billed duration, max memory used and init duration); INFO brings them back. @default WARN
     */
    systemLogLevel: z
      .string()
      .transform((s) => s.toUpperCase())
      .pipe(z.enum(['DEBUG', 'INFO', 'WARN'], { error: 'must be WARN, INFO or DEBUG' }))
      .default('WARN'),
  })
  .superRefine((c, ctx) => {
    if (c.removalPolicy === 'destroy' && isProductionStage(c.stage) && !c.allowDestroyProd)
      ctx.addIssue({
        code: 'custom',
        path: ['removalPolicy'],
        message:
          `refused for bootfarm:stage = "${c.stage}" (a production stage): cdk destroy would delete its table and empty its bucket. ` +
          'Leave bootfarm:removalPolicy at retain; to tear this stage down on purpose, also pass -c bootfarm:allowDestroyProd=true (docs/deploy.md, tearing down)',
      });
    if (!!c.domainName !== !!c.certificateArn)
      ctx.addIssue({ code: 'custom', path: [c.domainName ? 'certificateArn' : 'domainName'], message: 'domainName and certificateArn go together: set both or neither' });
  })
  .transform(({ reservedConcurrency, ...c }) => ({
    ...c,
    reservedConcurrency: reservedConcurrency === 'none' ? undefined : (reservedConcurrency ?? (isProductionStage(c.stage) ? PRODUCTION_RESERVED_CONCURRENCY : undefined)),
  }));

export type StackConfig = z.infer<typeof StackConfigSchema>;
export type StackConfigInput = z.input<typeof StackConfigSchema>;

/** The context keys, as written in cdk.json or passed with -c. */
export const CONTEXT_KEYS: Record<keyof StackConfig, string> = {
  stage: 'bootfarm:stage',
  domainName: 'bootfarm:domainName',
  certificateArn: 'bootfarm:certificateArn',
  logRetentionDays: 'bootfarm:logRetentionDays',
  removalPolicy: 'bootfarm:removalPolicy',
  allowDestroyProd: 'bootfarm:allowDestroyProd',
  noncurrentVersionDays: 'bootfarm:noncurrentVersionDays',
  alarmEmail: 'bootfarm:alarmEmail',
  reservedConcurrency: 'bootfarm:reservedConcurrency',
  latencyAlarmMs: 'bootfarm:latencyAlarmMs',
  tracing: 'bootfarm:tracing',
  systemLogLevel: 'bootfarm:systemLogLevel',
};

/** Parses the context; a bad value throws one message naming each key at fault. */
export function parseStackConfig(read: (key: string) => unknown): StackConfig {
  const raw: Record<string, unknown> = {};
  for (const [field, key] of Object.entries(CONTEXT_KEYS)) {
    const v = read(key);
    if (v !== undefined && v !== null && v !== '') raw[field] = v;
  }
  const r = StackConfigSchema.safeParse(raw);
  if (!r.success) {
    const lines = r.error.issues.map((i) => {
      const field = String(i.path[0] ?? '');
      const key = CONTEXT_KEYS[field as keyof StackConfig] ?? field;
      return `  ${key}${raw[field] !== undefined ? ` = ${JSON.stringify(raw[field])}` : ''}: ${i.message}`;
    });
    throw new Error(`bootfarm stack: bad context\n${lines.join('\n')}`);
  }
  return r.data;
}
