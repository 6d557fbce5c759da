/**
 * The farm's signing key: a KMS asymmetric key (ECC_NIST_P256, SIGN_VERIFY).
 * It signs vDisk manifests and site config snapshots; appliances pin its
 * public key. The private half never leaves KMS.
 *
 * Key policy: the account keeps administration (CDK's default statement,
 * kms:* to the account root, so the key can be managed, and IAM policies
 * take effect), plus an explicit Deny of kms:Sign to every principal but the
 * API function's role. A signature is what appliances trust, so an IAM
 * policy somewhere in the account granting kms:Sign on * (an admin role, a
 * CI role) must not be enough to sign; lifting the Deny takes
 * kms:PutKeyPolicy on this key, an administrator's act, in CloudTrail.
 */
import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
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

  /**
   * Makes `role` the key's only signer: kms:Sign and kms:GetPublicKey in its
   * IAM policy (the API signs and publishes the public key; it never verifies
   * or manages), and the key policy denies kms:Sign to any other principal
   * (aws:PrincipalArn is the role's ARN for its sessions). The key policy
   * names the role, the role's policy names the key: no cycle, since the
   * role's policy is a resource of its own.
   */
  grantSigning(role: iam.IRole): iam.Grant {
    const r = this.key.addToResourcePolicy(
      new iam.PolicyStatement({
        sid: 'OnlyTheApiRoleSigns',
        effect: iam.Effect.DENY,
        principals: [new iam.AnyPrincipal()],
        actions: ['kms:Sign'],
        resources: ['*'],
        conditions: { ArnNotEquals: { 'aws:PrincipalArn': role.roleArn } },
      }),
    );
    if (!r.statementAdded) throw new Error('signing key: the Deny of kms:Sign was not added to the key policy');
    return this.key.grant(role, 'kms:Sign', 'kms:GetPublicKey');
  }
}
