/**
 * The farm's single DynamoDB table: its key schema, shared by the local
 * runtime (`bootfarm dev`), the tests and (later) the CDK stack, so that all
 * three create exactly the same table. Access patterns: docs/data-model.md.
 */
import type { CreateTableCommandInput } from '@aws-sdk/client-dynamodb';

export const KEY = { pk: 'pk', sk: 'sk' } as const;
/** GSI1 "byParent": children of one parent, ordered by name (and the audit log by time). */
export const GSI1 = { name: 'gsi1', pk: 'gsi1pk', sk: 'gsi1sk' } as const;
/** GSI2 "bySite": objects of one site that do not hang directly off it (targets). */
export const GSI2 = { name: 'gsi2', pk: 'gsi2pk', sk: 'gsi2sk' } as const;

export function tableDefinition(tableName: string): CreateTableCommandInput {
  const s = (name: string) => ({ AttributeName: name, AttributeType: 'S' as const });
  const gsi = (g: { name: string; pk: string; sk: string }) => ({
    IndexName: g.name,
    KeySchema: [
      { AttributeName: g.pk, KeyType: 'HASH' as const },
      { AttributeName: g.sk, KeyType: 'RANGE' as const },
    ],
    Projection: { ProjectionType: 'ALL' as const },
  });
  return {
    TableName: tableName,
    BillingMode: 'PAY_PER_REQUEST',
    AttributeDefinitions: [s(KEY.pk), s(KEY.sk), s(GSI1.pk), s(GSI1.sk), s(GSI2.pk), s(GSI2.sk)],
    KeySchema: [
      { AttributeName: KEY.pk, KeyType: 'HASH' },
      { AttributeName: KEY.sk, KeyType: 'RANGE' },
    ],
    GlobalSecondaryIndexes: [gsi(GSI1), gsi(GSI2)],
  };
}
