/**
 * fastify-websocket-guard/testing: helpers for the tests of an app that uses the guard.
 *
 * `injectGuardedWS` does in-process what a page of the app does over the network: it asks the
 * token route for a token bound to the socket's path (through `app.inject`), then opens the
 * socket with that token, the session cookie and a same-origin Origin (through
 * @fastify/websocket's `app.injectWS`). It uses the plugin's default names: the token route
 * `/websocket-token`, the subprotocol `websocket-guard` and the query parameter `token`.
 */
import type { FastifyInstance } from 'fastify'
import type { WebSocket } from '@fastify/websocket'

export interface InjectGuardedWSOptions {
  /**
   * the upgrade's `Origin`; default `'http://localhost'`, what the same-origin default expects
   * of an injected request (which has no socket and is sent with `Host: localhost`); `null`
   * sends none
   */
  origin?: string | null
  /**
   * more request headers, sent with the token request and the upgrade: a `cookie` is the
   * session to use, a `host` replaces `localhost`, a `sec-websocket-protocol` lists your own
   * subprotocols
   */
  headers?: Record<string, string>
  /** how the token travels: a subprotocol entry (default, as the browser client does) or the query string */
  transport?: 'protocol' | 'query'
}

/** What the helper uses of an app: any Fastify instance, whatever its type provider or logger. */
export type InjectableApp = Pick<FastifyInstance, 'inject' | 'injectWS'>

/** The token route said no: `statusCode` and `code` are those of its answer. */
export interface TokenRouteError extends Error {
  statusCode: number
  code: string | undefined
}

// the plugin's defaults (API.md, "Plugin options"): the helper cannot read an app's options
const TOKEN_ROUTE = '/websocket-token'
const PROTOCOL = 'websocket-guard'
const QUERY_PARAM = 'token'
const DEFAULT_ORIGIN = 'http://localhost'
const DEFAULT_HOST = 'localhost'

/**
 * Fetches a token bound to `path` from the app's token route, keeping the session cookie it
 * sets (or the `cookie` in `options.headers`), then opens `app.injectWS(path, …)` with it.
 * Resolves with the open socket and rejects as `injectWS` does (`Unexpected server response:
 * 403` for a refused upgrade); rejects with the token route's `statusCode` and `code` when that
 * route gives no token.
 */
export async function injectGuardedWS (app: InjectableApp, path: string, options: InjectGuardedWSOptions = {}): Promise<WebSocket> {
  if (typeof path !== 'string' || !path.startsWith('/')) {
    throw new TypeError('injectGuardedWS: path must be a request path starting with /')
  }
  const transport = options.transport ?? 'protocol'
  if (transport !== 'protocol' && transport !== 'query') {
    throw new TypeError('injectGuardedWS: transport must be "protocol" or "query"')
  }
  const headers: Record<string, string> = {}
  for (const [name, value] of Object.entries(options.headers ?? {})) headers[name.toLowerCase()] = value
  headers.host ??= DEFAULT_HOST

  // as a page of the app asks: a same-origin GET, which carries no Origin
  const { origin: _origin, ...tokenHeaders } = headers
  const bound = path.split('?', 1)[0] as string
  const response = await app.inject({ method: 'GET', url: `${TOKEN_ROUTE}?path=${encodeURIComponent(bound)}`, headers: tokenHeaders })
  const body = parseBody(response.body)
  if (response.statusCode !== 200 || typeof body?.token !== 'string') throw tokenRouteError(response.statusCode, body)
  const token = body.token

  const cookie = withSetCookies(headers.cookie, response.headers['set-cookie'])
  if (cookie !== '') headers.cookie = cookie
  const origin = options.origin === undefined ? headers.origin ?? DEFAULT_ORIGIN : options.origin
  if (origin === null) delete headers.origin
  else headers.origin = origin

  let url = path
  if (transport === 'query') {
    url += `${path.includes('?') ? '&' : '?'}${QUERY_PARAM}=${token}`
  } else {
    const own = (headers['sec-websocket-protocol'] ?? '').split(',').map((p) => p.trim()).filter((p) => p !== '' && p !== PROTOCOL)
    // the bare name too: the guard refuses a token entry offered alone
    headers['sec-websocket-protocol'] = [PROTOCOL, ...own, `${PROTOCOL}.${token}`].join(', ')
  }
  return await app.injectWS(url, { headers })
}

function parseBody (text: string): { token?: unknown, code?: unknown, message?: unknown } | null {
  try {
    // Object(): any JSON value becomes something whose fields can be read (null becomes {})
    return Object(JSON.parse(text))
  } catch {
    return null
  }
}

function tokenRouteError (statusCode: number, body: { code?: unknown, message?: unknown } | null): TokenRouteError {
  const code = typeof body?.code === 'string' ? body.code : undefined
  const detail = typeof body?.message === 'string' ? `: ${body.message}` : ''
  const hint = statusCode === 404 || statusCode === 200
    ? ` (injectGuardedWS asks the plugin's default token route, ${TOKEN_ROUTE})`
    : ''
  const error = new Error(`injectGuardedWS: GET ${TOKEN_ROUTE} answered ${statusCode}${code === undefined ? '' : ' ' + code} and no token${detail}${hint}`)
  return Object.assign(error, { statusCode, code })
}

/** A `Cookie` header: the given one, with the cookies a response set added or replaced. */
function withSetCookies (cookie: string | undefined, setCookie: string | string[] | undefined): string {
  const jar = new Map<string, string>()
  const add = (pair: string): void => {
    // a pair without `=` is a cookie with an empty name, as browsers read it
    const name = pair.includes('=') ? pair.slice(0, pair.indexOf('=')).trim() : ''
    if (pair.trim() !== '') jar.set(name, pair.trim())
  }
  for (const pair of (cookie ?? '').split(';')) add(pair)
  for (const line of ([] as string[]).concat(setCookie ?? [])) add(line.split(';', 1)[0] as string)
  return [...jar.values()].join('; ')
}
