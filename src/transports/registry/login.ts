// `lamina login`: checks credentials against a registry before they are saved. GET /v2/ tells
// the scheme: 200 without credentials (an open registry), Basic (the credentials are sent to
// /v2/), or Bearer (a token is requested from the realm with them, as `docker login` does).
import { LaminaError } from '../../errors.js';
import { Authenticator, describeFetchError, type FetchFn } from './auth.js';
import type { Credentials } from './credentials.js';
import { discard, USER_AGENT } from './client.js';
import { endpointFor, type EndpointOptions } from './endpoint.js';

export async function verifyLogin(domain: string, creds: Credentials, opts: EndpointOptions & { fetch?: FetchFn } = {}): Promise<void> {
  const endpoint = endpointFor(domain, opts);
  const fetchFn = opts.fetch ?? fetch;
  const url = `${endpoint.base}/v2/`;
  const ping = async (authorization?: string) => {
    try {
      return await fetchFn(url, { headers: { 'user-agent': USER_AGENT, ...(authorization ? { authorization } : {}) } });
    } catch (e) {
      throw new LaminaError('EREGISTRY', `cannot reach ${domain} at ${url}: ${describeFetchError(e)}`);
    }
  };
  const first = await ping();
  await discard(first);
  if (first.status === 200) return;
  if (first.status !== 401) throw new LaminaError('EREGISTRY', `${url} answered HTTP ${first.status}; is ${domain} a registry?`);
  const auth = new Authenticator(domain, creds, fetchFn);
  const retry = await auth.challenged(first.headers.get('www-authenticate'), [], undefined);
  if (!retry) throw new LaminaError('EAUTH', `${domain} asks for an authentication scheme lamina does not support (${first.headers.get('www-authenticate') ?? 'none given'})`);
  // Bearer: the token server judges the credentials. Basic: the registry does.
  await auth.verifyLogin();
  const second = await ping(await auth.authorization([]));
  await discard(second);
  if (second.status === 401 || second.status === 403) throw new LaminaError('EAUTH', `login to ${domain} failed: unauthorized: incorrect username or password`);
  if (second.status !== 200) throw new LaminaError('EREGISTRY', `${url} answered HTTP ${second.status} after authenticating`);
}
