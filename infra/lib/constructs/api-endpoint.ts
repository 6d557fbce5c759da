/**
 * The API's HTTPS endpoint: a Lambda Function URL in RESPONSE_STREAM mode.
 *
 * Why a Function URL and not an API Gateway HTTP API:
 * - Streaming. A manifest of a large vDisk (a 64-character hash per chunk)
 *   or a whole-site snapshot can pass the 6 MB a buffered Lambda response
 *   may carry; a streamed response may not (HTTP APIs cannot stream).
 * - Time. A commit re-reads unverified chunks for minutes; an HTTP API cuts
 *   every request at 30 s, a Function URL at the function's timeout.
 * - Nothing to pay or run per request, and nothing to configure twice: every
 *   route authenticates its bearer token in the app itself (`bearerAuth`),
 *   exactly as locally, so the URL's own auth type is NONE.
 * A custom domain goes through CloudFront (caching off, every method, every
 * header but Host forwarded), which a Function URL needs for one. CloudFront
 * waits at most 60 s for a response: a commit or GC that takes longer must
 * use the Function URL (output FunctionUrl), whose limit is the function's.
 */
import { Duration } from 'aws-cdk-lib';
import * as cloudfront from 'aws-cdk-lib/aws-cloudfront';
import * as origins from 'aws-cdk-lib/aws-cloudfront-origins';
import * as acm from 'aws-cdk-lib/aws-certificatemanager';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import { Construct } from 'constructs';

export interface ApiEndpointProps {
  readonly fn: lambda.IFunction;
  /** A custom host name served by CloudFront, with its us-east-1 certificate. @default the Function URL only */
  readonly domain?: { readonly name: string; readonly certificateArn: string };
}

export class ApiEndpoint extends Construct {
  readonly functionUrl: lambda.FunctionUrl;
  readonly distribution?: cloudfront.Distribution;
  /** Where clients reach the API (https://...), with no trailing slash. */
  readonly url: string;

  constructor(scope: Construct, id: string, props: ApiEndpointProps) {
    super(scope, id);
    this.functionUrl = new lambda.FunctionUrl(this, 'Url', {
      function: props.fn,
      authType: lambda.FunctionUrlAuthType.NONE,
      invokeMode: lambda.InvokeMode.RESPONSE_STREAM,
    });
    if (!props.domain) {
      // The Function URL ends with '/'.
      this.url = this.functionUrl.url;
      return;
    }
    this.distribution = new cloudfront.Distribution(this, 'Distribution', {
      comment: `bootfarm API (${props.domain.name})`,
      domainNames: [props.domain.name],
      certificate: acm.Certificate.fromCertificateArn(this, 'Certificate', props.domain.certificateArn),
      minimumProtocolVersion: cloudfront.SecurityPolicyProtocol.TLS_V1_2_2021,
      httpVersion: cloudfront.HttpVersion.HTTP2_AND_3,
      priceClass: cloudfront.PriceClass.PRICE_CLASS_100,
      defaultBehavior: {
        // CloudFront's longest response wait without a quota increase; longer work (big commits, GC) goes to the Function URL itself.
        origin: new origins.FunctionUrlOrigin(this.functionUrl, { readTimeout: Duration.seconds(60) }),
        viewerProtocolPolicy: cloudfront.ViewerProtocolPolicy.HTTPS_ONLY,
        allowedMethods: cloudfront.AllowedMethods.ALLOW_ALL,
        cachePolicy: cloudfront.CachePolicy.CACHING_DISABLED,
        originRequestPolicy: cloudfront.OriginRequestPolicy.ALL_VIEWER_EXCEPT_HOST_HEADER,
      },
    });
    this.url = `https://${props.domain.name}/`;
  }
}
