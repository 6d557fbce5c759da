import { DynamoDBClient, type DynamoDBClientConfig } from '@aws-sdk/client-dynamodb';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { DynamoFarmRepo } from './dynamo-repo.js';

/**
 * A FarmRepo on the given DynamoDB endpoint and table. Pass a client instead
 * of a config to add middleware first (`npm run bench -- requests` counts
 * consumed capacity that way).
 */
export function dynamoRepo(config: DynamoDBClientConfig | DynamoDBClient, tableName: string, clock?: () => Date): DynamoFarmRepo {
  const doc = DynamoDBDocumentClient.from(config instanceof DynamoDBClient ? config : new DynamoDBClient(config), {
    marshallOptions: { removeUndefinedValues: true, convertEmptyValues: false },
  });
  return new DynamoFarmRepo({ doc, tableName, clock });
}
