/**
 * Every console action is the API call the CLI makes: the same ApiClient,
 * with the session's token, sent to the same app in-process (no network hop,
 * and the API's own authentication, validation and audit apply).
 */
import { ApiClient } from '../../cli/client.js';

export interface InProcess {
  request(path: string, init: RequestInit): Response | Promise<Response>;
}

export function consoleApi(app: InProcess, token: string): ApiClient {
  return new ApiClient('', token, ((input: string, init?: RequestInit) => Promise.resolve(app.request(input, init ?? {}))) as typeof fetch);
}

export { ApiError } from '../../cli/client.js';
