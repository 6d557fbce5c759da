/**
 * SDK clients for the run's shared local AWS (started by ./local-aws.ts).
 */
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { S3Client } from '@aws-sdk/client-s3';
import { inject } from 'vitest';
import { dynamoClientConfig, s3ClientConfig } from '../../functions/local/local-aws.js';
// Type-only: brings the `ProvidedContext` augmentation (inject('localAws')) into scope.
import type {} from './local-aws.js';

export function testAws(): { ddb: DynamoDBClient; s3: S3Client; tableName: string; bucketName: string } {
  const aws = inject('localAws');
  return {
    ddb: new DynamoDBClient(dynamoClientConfig(aws)),
    s3: new S3Client(s3ClientConfig(aws)),
    tableName: aws.tableName,
    bucketName: aws.bucketName,
  };
}
