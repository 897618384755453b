/**
 * Plugin and route options: their types, their defaults, and their validation. Everything
 * here runs once, at registration; the request path only reads what it produces.
 */
import type { FastifyRequest, LogLevel } from 'fastify'
import { compileOriginList, type NormalisedOriginMatcher, type OriginEntry } from './origin'
import type { TokenStore } from './tokens'

export type OriginFunction = (origin: string, request: FastifyRequest) => boolean | Promise<boolean>
export type OriginsOption = OriginEntry | OriginEntry[] | OriginFunction
export type SessionPluginName = '@fastify/session' | '@fastify/secure-session'

export interface FastifyWebsocketGuardOptions {
  /** allowed origins; default: same-origin (`${request.protocol}://${request.host}`) */
  origins?: OriginsOption
  /** accept an upgrade that sends no `Origin` (non-browser clients); the token is still required */
  allowMissingOrigin?: boolean
  /** path of the token-issuing GET route; `false` registers none. Default `'/websocket-token'` */
  tokenRoute?: string | false
  /** which session plugin the app uses; default `'@fastify/session'` */
  sessionPlugin?: SessionPluginName
  /** where tokens live in the session; default `'websocket_token'` */
  sessionKey?: string
  /** lifetime of an issued token in ms; default 60000 */
  tokenTTL?: number
  /** outstanding tokens per session; issuing one more evicts the oldest. Default 8 */
  maxTokens?: number
  /** query parameter that carries a token; default `'token'` */
  queryParam?: string
  /** subprotocol name; a token rides as the entry `${protocol}.${token}`. Default `'websocket-guard'` */
  protocol?: string
  /** where tokens are kept; default: in the session (@fastify/session), in memory (@fastify/secure-session) */
  store?: TokenStore
  /** how long a store call may take before the guard fails closed with 503, in ms; default 1000 */
  storeTimeout?: number
  /** level of the log line written for each rejection; default `'warn'` */
  logLevel?: LogLevel
  /** called for each rejection (metrics, audit) */
  onReject?: (error: Error & { code: string, statusCode: number }, request: FastifyRequest) => void
  /** remove the token from the URLs in Fastify's own request log lines; default `true` */
  redactLogs?: boolean
}

/** The route option `guard`: `true`, or overrides; absent or `false` means no checks. */
export interface GuardRouteOptions {
  origins?: OriginsOption
  allowMissingOrigin?: boolean
  /** `false` checks the origin only */
  token?: boolean
}

/** `request.websocketGuard` on a guarded route that passed. */
export interface WebsocketGuardResult {
  /** the normalised allowed origin, or `null` when none was sent and that is allowed */
  origin: string | null
  /** the consumed token, or `null` where the route checks no token */
  token: string | null
}

/** How an origin is checked: a compiled allow-list, a user function, or same-origin. */
export type OriginCheck =
  | { kind: 'list', match: NormalisedOriginMatcher }
  | { kind: 'function', fn: OriginFunction }
  | { kind: 'same-origin' }

export interface ResolvedOptions {
  origins: OriginCheck
  allowMissingOrigin: boolean
  tokenRoute: string | false
  sessionPlugin: SessionPluginName
  sessionKey: string
  tokenTTL: number
  maxTokens: number
  queryParam: string
  protocol: string
  /** `${protocol}.` */
  protocolPrefix: string
  store: TokenStore | undefined
  storeTimeout: number
  logLevel: LogLevel
  onReject: FastifyWebsocketGuardOptions['onReject']
  redactLogs: boolean
}

const LOG_LEVELS = new Set(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'])
const SESSION_PLUGINS = new Set(['@fastify/session', '@fastify/secure-session'])
// RFC 6455 subprotocol names are RFC 7230 tokens; the token entry adds a '.'
const PROTOCOL_RE = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/
// unreserved URL characters: the parameter is matched in the raw query, undecoded
const QUERY_PARAM_RE = /^[A-Za-z0-9._~-]+$/
// a route path: no query, fragment or whitespace
const TOKEN_ROUTE_RE = /^\/[^?#\s]*$/
/** Longest delay setTimeout/setInterval honour; above it they fire after 1 ms. */
export const MAX_TIMER_DELAY = 2_147_483_647
// Names the session object uses itself. @fastify/session keeps data as own properties of its
// Session, next to `cookie` and its methods, and @fastify/secure-session keeps `__ts`: a key
// that shadows one breaks the session (`save`: never saved, so a spent token would come back).
const RESERVED_SESSION_KEYS = new Set([
  'cookie', 'get', 'set', 'save', 'destroy', 'reload', 'regenerate', 'touch', 'options',
  'isModified', 'isSaved', 'sessionId', 'encryptedSessionId', '__ts'
])

function fail (option: string, message: string): never {
  throw new TypeError(`fastify-websocket-guard: option ${option} ${message}`)
}

function boolean (options: Record<string, unknown>, name: string, fallback: boolean, prefix = ''): boolean {
  const value = options[name]
  if (value === undefined) return fallback
  if (typeof value !== 'boolean') fail(prefix + name, `must be a boolean, got ${typeof value}`)
  return value
}

function positive (options: Record<string, unknown>, name: string, fallback: number, integer: boolean, max = Number.MAX_SAFE_INTEGER): number {
  const value = options[name]
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0 || (integer && !Number.isInteger(value))) {
    fail(name, `must be a positive ${integer ? 'integer' : 'number'}, got ${String(value)}`)
  }
  if (value > max) fail(name, `must be at most ${max}, got ${String(value)}`)
  return value
}

function string (options: Record<string, unknown>, name: string, fallback: string, pattern: RegExp, what: string): string {
  const value = options[name]
  if (value === undefined) return fallback
  if (typeof value !== 'string' || !pattern.test(value)) fail(name, `must be ${what}, got ${JSON.stringify(value)}`)
  return value
}

/** Compiles an `origins` option, at registration or at route declaration. */
export function compileOrigins (origins: unknown, option = 'origins'): OriginCheck {
  if (origins === undefined) return { kind: 'same-origin' }
  if (typeof origins === 'function') return { kind: 'function', fn: origins as OriginFunction }
  try {
    return { kind: 'list', match: compileOriginList(origins as OriginEntry | OriginEntry[]) }
  } catch (err) {
    return fail(option, (err as Error).message.replace(/^origins: /, ''))
  }
}

function isTokenStore (value: unknown): value is TokenStore {
  const store = value as TokenStore
  return typeof store === 'object' && store !== null && typeof store.issue === 'function' && typeof store.consume === 'function'
}

export function resolveOptions (input: FastifyWebsocketGuardOptions | undefined): ResolvedOptions {
  const options = (input ?? {}) as Record<string, unknown>
  if (typeof options !== 'object') throw new TypeError('fastify-websocket-guard: options must be an object')

  const tokenRoute = options.tokenRoute === undefined ? '/websocket-token' : options.tokenRoute
  if (tokenRoute !== false && (typeof tokenRoute !== 'string' || !TOKEN_ROUTE_RE.test(tokenRoute))) {
    fail('tokenRoute', `must be a path starting with / (no query) or false, got ${JSON.stringify(tokenRoute)}`)
  }
  const sessionPlugin = options.sessionPlugin ?? '@fastify/session'
  if (!SESSION_PLUGINS.has(sessionPlugin as string)) {
    fail('sessionPlugin', `must be '@fastify/session' or '@fastify/secure-session', got ${JSON.stringify(sessionPlugin)}`)
  }
  const logLevel = options.logLevel ?? 'warn'
  if (!LOG_LEVELS.has(logLevel as string)) fail('logLevel', `must be a pino level, got ${JSON.stringify(logLevel)}`)
  if (options.onReject !== undefined && typeof options.onReject !== 'function') {
    fail('onReject', 'must be a function')
  }
  if (options.store !== undefined && !isTokenStore(options.store)) {
    fail('store', 'must be a TokenStore (an object with issue and consume methods)')
  }
  const protocol = string(options, 'protocol', 'websocket-guard', PROTOCOL_RE, 'a subprotocol name (RFC 6455 token characters)')
  const sessionKey = string(options, 'sessionKey', 'websocket_token', /^.{1,128}$/s, 'a non-empty string of at most 128 characters')
  if (RESERVED_SESSION_KEYS.has(sessionKey) || sessionKey in Object.prototype) {
    fail('sessionKey', `must not be a name the session object uses itself, got ${JSON.stringify(sessionKey)}`)
  }

  return {
    origins: compileOrigins(options.origins),
    allowMissingOrigin: boolean(options, 'allowMissingOrigin', false),
    tokenRoute: tokenRoute as string | false,
    sessionPlugin: sessionPlugin as SessionPluginName,
    sessionKey,
    tokenTTL: positive(options, 'tokenTTL', 60_000, false),
    maxTokens: positive(options, 'maxTokens', 8, true),
    queryParam: string(options, 'queryParam', 'token', QUERY_PARAM_RE, 'a query parameter name of unreserved URL characters'),
    protocol,
    protocolPrefix: protocol + '.',
    store: options.store as TokenStore | undefined,
    storeTimeout: positive(options, 'storeTimeout', 1000, false, MAX_TIMER_DELAY),
    logLevel: logLevel as LogLevel,
    onReject: options.onReject as ResolvedOptions['onReject'],
    redactLogs: boolean(options, 'redactLogs', true)
  }
}

/** The checks of one guarded route: the plugin's options with the route's overrides. */
export interface RouteGuard {
  origins: OriginCheck
  allowMissingOrigin: boolean
  token: boolean
}

export function resolveRouteGuard (guard: unknown, url: string, defaults: ResolvedOptions): RouteGuard | null {
  if (guard === undefined || guard === false) return null
  if (guard === true) return { origins: defaults.origins, allowMissingOrigin: defaults.allowMissingOrigin, token: true }
  try {
    if (typeof guard !== 'object' || guard === null || Array.isArray(guard)) {
      fail('guard', `must be true, false or an object, got ${JSON.stringify(guard)}`)
    }
    const overrides = guard as Record<string, unknown>
    for (const key of Object.keys(overrides)) {
      if (key !== 'origins' && key !== 'allowMissingOrigin' && key !== 'token') {
        fail('guard', `has an unknown key ${JSON.stringify(key)} (expected origins, allowMissingOrigin or token)`)
      }
    }
    return {
      origins: overrides.origins === undefined ? defaults.origins : compileOrigins(overrides.origins, 'guard.origins'),
      allowMissingOrigin: boolean(overrides, 'allowMissingOrigin', defaults.allowMissingOrigin, 'guard.'),
      token: boolean(overrides, 'token', true, 'guard.')
    }
  } catch (err) {
    throw new TypeError(`${(err as Error).message} (route ${url})`)
  }
}

/** Validates `issueWebsocketToken` options with the plugin's rules. */
export function checkIssueOptions (options: Record<string, unknown>): void {
  positive(options, 'tokenTTL', 60_000, false)
  positive(options, 'maxTokens', 8, true)
}
