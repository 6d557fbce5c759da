import { DynamoDBClient, type DynamoDBClientConfig } from '@aws-sdk/client-dynamodb';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { DynamoFarmRepo } from './dynamo-repo.js';

/** A FarmRepo on the given DynamoDB endpoint and table. */
export function dynamoRepo(config: DynamoDBClientConfig, tableName: string, clock?: () => Date): DynamoFarmRepo {
  const doc = DynamoDBDocumentClient.from(new DynamoDBClient(config), {
    marshallOptions: { removeUndefinedValues: true, convertEmptyValues: false },
  });
  return new DynamoFarmRepo({ doc, tableName, clock });
}
