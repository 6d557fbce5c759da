/** Sign in with an API token (the same tokens the CLI uses). */
import type { FC } from 'hono/jsx';

export const LoginPage: FC<{ error?: string | null }> = (p) => (
  <>
    <h1>Sign in</h1>
    <form method="post" action="/console/login" class="card narrow">
      <p class="muted small">
        Paste an API token: <span class="mono">bootfarm token create --role read-only</span> makes one; <span class="mono">npm start</span> prints the local farm's admin token.
      </p>
      <label for="f-token">API token</label>
      <input id="f-token" name="token" type="password" autocomplete="off" required aria-invalid={p.error ? 'true' : undefined} aria-describedby={p.error ? 'f-token-error' : undefined} class="wide" />
      {p.error ? (
        <div id="f-token-error" class="error" role="alert">
          {p.error}
        </div>
      ) : null}
      <p>
        <button type="submit">Sign in</button>
      </p>
    </form>
  </>
);

/** An API refusal outside a form (an object that does not exist, a role that may not see it). */
export const ErrorPage: FC<{ status: number; message: string }> = (p) => (
  <>
    <h1>{p.status === 404 ? 'Not found' : p.status === 403 ? 'Not allowed' : 'Not possible'}</h1>
    <div class="card flash bad" role="alert">
      {p.message}
    </div>
    <p>
      <a href="/console">Back to the farm</a>
    </p>
  </>
);
