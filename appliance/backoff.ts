/**
 * Retry delays for calls to the control plane: "full jitter" (a random delay
 * up to an exponentially growing cap), so a site's appliances coming back
 * after an outage spread their retries instead of arriving together.
 */
export interface BackoffPolicy {
  minMs: number;
  maxMs: number;
}

/** Delay before retry number `attempt` (0 = first retry); `random` in [0, 1). */
export function retryDelay(attempt: number, policy: BackoffPolicy, random: number): number {
  const cap = Math.min(policy.maxMs, policy.minMs * 2 ** Math.min(attempt, 30));
  return Math.round(policy.minMs + random * (cap - policy.minMs));
}

/** Sleeps, or resolves early (false) when the signal aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<boolean> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve(false);
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve(true);
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      resolve(false);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
