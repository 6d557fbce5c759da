/**
 * The farm's bucket: vDisk chunks by SHA-256, signed manifests under each
 * store's prefix, open upload sessions (docs/vdisk-format.md).
 *
 * Versioning, not Object Lock: the farm deletes on purpose (garbage
 * collection after a merge or a version delete), which Object Lock would
 * forbid for the whole retention period; versioning instead keeps every
 * deleted or overwritten object recoverable for `noncurrentVersionDays`,
 * which covers a mistaken delete or a stolen admin token, and then lets the
 * space go. Chunks are content-addressed and manifests signed, so integrity
 * does not depend on the bucket.
 *
 * SSE-S3, not SSE-KMS: appliances fetch chunks with presigned GETs during
 * boot storms; with a KMS key each GET would also be a KMS Decrypt request
 * (cost, request quotas) for data whose integrity is already signed.
 */
import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { Construct } from 'constructs';

export interface FarmBucketProps {
  /** Days a deleted or overwritten object version is kept. @default 30 */
  readonly noncurrentVersionDays?: number;
  /** `destroy` also empties the bucket on stack deletion. @default RemovalPolicy.RETAIN */
  readonly removalPolicy?: RemovalPolicy;
}

/** Object operations the API performs: HEAD and GET (verify, manifests), PUT, DELETE (GC), and presigned GET/PUT URLs it signs for clients. */
export const API_OBJECT_ACTIONS = ['s3:GetObject', 's3:PutObject', 's3:DeleteObject'] as const;

export class FarmBucket extends Construct {
  readonly bucket: s3.Bucket;

  constructor(scope: Construct, id: string, props: FarmBucketProps = {}) {
    super(scope, id);
    const removalPolicy = props.removalPolicy ?? RemovalPolicy.RETAIN;
    this.bucket = new s3.Bucket(this, 'Bucket', {
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
      enforceSSL: true,
      minimumTLSVersion: 1.2,
      encryption: s3.BucketEncryption.S3_MANAGED,
      versioned: true,
      lifecycleRules: [
        // Presigned PUTs are single-part today; a client that ever uses multipart and dies leaves parts that cost until removed.
        { id: 'abort-incomplete-multipart', abortIncompleteMultipartUploadAfter: Duration.days(1) },
        { id: 'expire-noncurrent-versions', noncurrentVersionExpiration: Duration.days(props.noncurrentVersionDays ?? 30), expiredObjectDeleteMarker: true },
        // A push that never commits leaves its session file; commit deletes it, so anything left after a week is abandoned.
        { id: 'expire-abandoned-upload-sessions', prefix: 'uploads/', expiration: Duration.days(7) },
      ],
      removalPolicy,
      autoDeleteObjects: removalPolicy === RemovalPolicy.DESTROY,
    });
  }

  /**
   * What the API needs: the object actions above on every key (store
   * prefixes are chosen by admins at run time, and the bucket holds nothing
   * but the farm), and listing (GC, upload sweeps) on the bucket itself.
   */
  grantApiAccess(grantee: iam.IGrantable): iam.Grant {
    return this.bucket.grants
      .actionsOnObjectKeys(grantee, '*', ...API_OBJECT_ACTIONS)
      .combine(iam.Grant.addToPrincipal({ grantee, actions: ['s3:ListBucket'], resourceArns: [this.bucket.bucketArn] }));
  }
}
