/**
 * The control-plane API: `createApp(deps)` builds the whole Hono app; the
 * Lambda entry (lambda.ts) and the local server (`bootfarm dev`) only wire it.
 */
import { OpenAPIHono } from '@hono/zod-openapi';
import { bodyLimit } from 'hono/body-limit';
import { FarmError } from '../model/index.js';
import { bearerAuth, type Env } from './auth.js';
import { errorBody, toResponse, validationError } from './errors.js';
import { RESOURCES, targetResource, vdiskResource } from './resources.js';
import { auditRoutes } from './routes/audit.js';
import { farmRoutes } from './routes/farm.js';
import { resourceRoutes } from './routes/resource.js';
import { targetRoutes } from './routes/targets.js';
import { tokenRoutes } from './routes/tokens.js';
import { versionRoutes } from './routes/versions.js';
import type { FarmRepo } from './storage/repo.js';
import type { BlobStore } from './storage/blobs.js';
import type { Signer } from './signing.js';
import { contentRoutes } from './routes/content.js';
import { replicationRoutes } from './routes/replication.js';
import { applianceRoutes } from './routes/appliances.js';
import { consoleRoutes } from './console/index.js';

export interface AppDeps {
  repo: FarmRepo;
  /** The farm bucket: chunks, manifests, upload sessions. */
  blobs: BlobStore;
  /** Signs manifests (local key file, or KMS in AWS). */
  signer: Signer;
  clock?: () => Date;
  /** Where server-side failures are reported (never sent to clients). */
  log?: (line: string) => void;
  /** Largest accepted request body. */
  maxBodyBytes?: number;
}

export const API_VERSION = '0.1.0';

export function createApp(deps: AppDeps): OpenAPIHono<Env> {
  const log = deps.log ?? ((line: string) => console.error(line));
  const clock = deps.clock ?? (() => new Date());
  const content = { repo: deps.repo, blobs: deps.blobs, signer: deps.signer, clock };
  const app = new OpenAPIHono<Env>({
    defaultHook: (result, c) => {
      if (!result.success) throw validationError(result.error, c.req.path);
    },
  });

  app.onError((err, c) => toResponse(err, c, log));
  app.notFound((c) => c.json(errorBody('not_found', `no route for ${c.req.method} ${c.req.path}`), 404));

  app.get('/health', (c) => c.json({ status: 'ok' }));
  // The web console: pages over the same API, called in-process with the signed-in token.
  app.get('/console/', (c) => c.redirect('/console', 301));
  app.route('/console', consoleRoutes({ repo: deps.repo, api: app, clock }));
  app.get('/', (c) => c.redirect('/console', 302));

  // Chunk lists of large disks need more than other bodies; 6 MB is Lambda's request limit. A hash is 67 bytes of JSON, so with
  // 4 MiB chunks a fully written disk of up to about 349 GiB fits (89,500 chunks) (all-zero chunks are 5 bytes); a larger one needs larger chunks (API chunkSize).
  const small = deps.maxBodyBytes ?? 1024 * 1024;
  const limits = [small, 6 * 1000 * 1000].map((maxSize) =>
    bodyLimit({
      maxSize,
      onError: () => {
        throw new FarmError('bad_request', `request body larger than ${maxSize} bytes`);
      },
    }),
  );
  app.use('/v1/*', (c, next) => (/^\/v1\/vdisks\/[^/]+\/uploads$/.test(c.req.path) ? limits[1]! : limits[0]!)(c, next));
  app.use('/v1/*', bearerAuth({ repo: deps.repo, clock: deps.clock, public: ['/v1/openapi.json'] }));

  app.route('/v1/farm', farmRoutes(deps.repo));
  for (const spec of RESOURCES) {
    const routes = resourceRoutes(spec, deps.repo);
    if (spec === vdiskResource) routes.route('/', versionRoutes(content));
    if (spec === targetResource) routes.route('/', targetRoutes({ repo: deps.repo, clock }));
    app.route(`/v1${spec.path}`, routes);
  }
  app.route('/v1', contentRoutes(content));
  app.route('/v1', replicationRoutes({ repo: deps.repo, clock }));
  app.route('/v1', applianceRoutes(content));
  app.route('/v1/tokens', tokenRoutes(deps.repo, clock));
  app.route('/v1/audit', auditRoutes(deps.repo));

  app.openAPIRegistry.registerComponent('securitySchemes', 'bearer', { type: 'http', scheme: 'bearer', description: 'API token from `bootfarm token create`' });
  app.doc31('/v1/openapi.json', {
    openapi: '3.1.0',
    info: { title: 'bootfarm control plane', version: API_VERSION, description: 'Farm configuration API: sites, appliances, stores, vDisks and versions, collections, targets, tokens, audit.' },
  });
  return app;
}
