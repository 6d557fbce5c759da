/**
 * The farm's signing key: a KMS asymmetric key (ECC_NIST_P256, SIGN_VERIFY).
 * It signs vDisk manifests and site config snapshots; appliances pin its
 * public key. The private half never leaves KMS.
 */
import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import type * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import { Construct } from 'constructs';

export interface SigningKeyProps {
  /** An alias such as `alias/bootfarm-prod-signing`. */
  readonly alias: string;
}

export class SigningKey extends Construct {
  readonly key: kms.Key;

  constructor(scope: Construct, id: string, props: SigningKeyProps) {
    super(scope, id);
    this.key = new kms.Key(this, 'Key', {
      description: 'bootfarm: signs vDisk manifests and site config snapshots',
      keySpec: kms.KeySpec.ECC_NIST_P256,
      keyUsage: kms.KeyUsage.SIGN_VERIFY,
      alias: props.alias,
      // The longest window: a scheduled deletion can be cancelled for 30 days.
      pendingWindow: Duration.days(30),
      // Always kept: every manifest and every appliance's trust hang on this key, and its deletion cannot be undone after the window.
      removalPolicy: RemovalPolicy.RETAIN,
    });
  }

  /** kms:Sign and kms:GetPublicKey only: the API signs and publishes the public key; it never verifies or manages. */
  grantSigning(grantee: iam.IGrantable): iam.Grant {
    return this.key.grant(grantee, 'kms:Sign', 'kms:GetPublicKey');
  }
}
