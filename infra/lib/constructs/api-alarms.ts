/**
 * Alarms on the API function: crashes (the Lambda Errors metric), internal
 * errors the app caught and answered with a 500 (not function errors to
 * Lambda, so counted from the ERROR lines of its JSON log), throttles and
 * latency. Each alarm and its return to OK go to one SNS topic.
 */
import { Duration } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as actions from 'aws-cdk-lib/aws-cloudwatch-actions';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as subs from 'aws-cdk-lib/aws-sns-subscriptions';
import { Construct } from 'constructs';

export interface ApiAlarmsProps {
  readonly fn: lambda.IFunction;
  /** The function's log group (JSON format): `internal error on ...` lines are logged at ERROR level. */
  readonly logGroup: logs.ILogGroup;
  /** Fires when p99 duration stays above this for 15 minutes. @default 3000 */
  readonly latencyMs?: number;
  /** Subscribed to the alarm topic (the owner confirms by mail). @default no subscription */
  readonly email?: string;
}

export class ApiAlarms extends Construct {
  readonly topic: sns.Topic;
  readonly errors: cloudwatch.Alarm;
  readonly serverErrors: cloudwatch.Alarm;
  readonly throttles: cloudwatch.Alarm;
  readonly latency: cloudwatch.Alarm;

  constructor(scope: Construct, id: string, props: ApiAlarmsProps) {
    super(scope, id);
    this.topic = new sns.Topic(this, 'Topic', { displayName: 'bootfarm API alarms', enforceSSL: true });
    if (props.email) this.topic.addSubscription(new subs.EmailSubscription(props.email));
    const period = Duration.minutes(5);
    this.errors = new cloudwatch.Alarm(this, 'Errors', {
      alarmDescription: 'bootfarm API: the function failed (unhandled error, timeout or out of memory) in 2 of the last 3 five-minute periods',
      metric: props.fn.metricErrors({ period, statistic: 'Sum' }),
      threshold: 1,
      evaluationPeriods: 3,
      datapointsToAlarm: 2,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
    const filter = new logs.MetricFilter(this, 'ServerErrorLines', {
      logGroup: props.logGroup,
      filterPattern: logs.FilterPattern.stringValue('$.level', '=', 'ERROR'),
      metricNamespace: 'bootfarm',
      metricName: 'ApiServerErrors',
      metricValue: '1',
    });
    this.serverErrors = new cloudwatch.Alarm(this, 'ServerErrors', {
      alarmDescription: 'bootfarm API: answered 500 (internal error; the stack trace is in the log) in 2 of the last 3 five-minute periods',
      metric: filter.metric({ period, statistic: 'Sum' }),
      threshold: 1,
      evaluationPeriods: 3,
      datapointsToAlarm: 2,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
    this.throttles = new cloudwatch.Alarm(this, 'Throttles', {
      alarmDescription: 'bootfarm API: requests were throttled (concurrency limit reached); appliances retry, admins see 429',
      metric: props.fn.metricThrottles({ period, statistic: 'Sum' }),
      threshold: 1,
      evaluationPeriods: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
    this.latency = new cloudwatch.Alarm(this, 'Latency', {
      alarmDescription: `bootfarm API: p99 duration above ${props.latencyMs ?? 3000} ms for 15 minutes`,
      metric: props.fn.metricDuration({ period, statistic: 'p99' }),
      threshold: props.latencyMs ?? 3000,
      evaluationPeriods: 3,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
    for (const a of [this.errors, this.serverErrors, this.throttles, this.latency]) {
      a.addAlarmAction(new actions.SnsAction(this.topic));
      a.addOkAction(new actions.SnsAction(this.topic));
    }
  }
}
