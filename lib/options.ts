/**
 * Options: their defaults (one object), their types and their validation, plus the checks
 * shared by every entry point (the plugin, the token route, the route option `guard` and the
 * exported functions). Everything here runs once, at registration or at a function's call;
 * the request path only reads what it produces.
 */
import type { FastifyRequest, LogLevel } from 'fastify'
import { WebsocketGuardOptionError } from './errors'
import { compileOrigins, type OriginCheck, type OriginsOption } from './origin'
import type { TokenStore } from './stores/types'

export type { OriginFunction, OriginsOption } from './origin'
export type SessionPluginName = '@fastify/session' | '@fastify/secure-session'

/** Every default of the package, in one place. */
export const DEFAULTS = {
  allowMissingOrigin: false,
  tokenRoute: '/websocket-token',
  sessionPlugin: '@fastify/session',
  sessionKey: 'websocket_token',
  tokenTTL: 60_000,
  maxTokens: 8,
  queryParam: 'token',
  protocol: 'websocket-guard',
  storeTimeout: 1000,
  logLevel: 'warn',
  redactLogs: true
} as const

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
/** Longest delay setTimeout/setInterval honour; above it they fire after 1 ms. */
export const MAX_TIMER_DELAY = 2_147_483_647
/** Longest request path accepted anywhere a path is named (token route, bound path). */
export const MAX_PATH_LENGTH = 1024
// Names the session object uses itself. @fastify/session keeps data as own properties of its
// Session, next to `cookie` and its methods, and @fastify/secure-session keeps `__ts`: a key
// that shadows one breaks the session (`save`: never saved, so a spent token would come back).
const RESERVED_SESSION_KEYS = new Set([
  'cookie', 'get', 'set', 'save', 'destroy', 'reload', 'regenerate', 'touch', 'options',
  'isModified', 'isSaved', 'sessionId', 'encryptedSessionId', '__ts'
])

export function fail (option: string, message: string): never {
  throw new WebsocketGuardOptionError(`fastify-websocket-guard: option ${option} ${message}`)
}

/** One request path: starts with `/`, no query, fragment or whitespace, bounded. */
export function isRequestPath (value: unknown): value is string {
  return typeof value === 'string' && value.startsWith('/') && value.length <= MAX_PATH_LENGTH && !/[?#\s]/.test(value)
}

export const REQUEST_PATH_RULE = `one request path starting with / (at most ${MAX_PATH_LENGTH} characters, no query, fragment or whitespace)`

/** The session key rule of every entry point: a key the session object does not use itself. */
export function checkSessionKey (value: unknown, option = 'sessionKey'): string {
  if (typeof value !== 'string' || value.length === 0 || value.length > 128) {
    fail(option, `must be a non-empty string of at most 128 characters, got ${JSON.stringify(value)}`)
  }
  if (RESERVED_SESSION_KEYS.has(value) || value in Object.prototype) {
    fail(option, `must not be a name the session object uses itself, got ${JSON.stringify(value)}`)
  }
  return value
}

export function boolean (options: Record<string, unknown>, name: string, fallback: boolean, prefix = ''): boolean {
  const value = options[name]
  if (value === undefined) return fallback
  if (typeof value !== 'boolean') fail(prefix + name, `must be a boolean, got ${typeof value}`)
  return value
}

export function positive (options: Record<string, unknown>, name: string, fallback: number, integer: boolean, max = Number.MAX_SAFE_INTEGER): number {
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

function isTokenStore (value: unknown): value is TokenStore {
  const store = value as TokenStore
  return typeof store === 'object' && store !== null && typeof store.issue === 'function' && typeof store.consume === 'function'
}

export function resolveOptions (input: FastifyWebsocketGuardOptions | undefined): ResolvedOptions {
  const options = (input ?? {}) as Record<string, unknown>
  if (typeof options !== 'object') throw new WebsocketGuardOptionError('fastify-websocket-guard: options must be an object')

  const tokenRoute = options.tokenRoute ?? DEFAULTS.tokenRoute
  if (tokenRoute !== false && !isRequestPath(tokenRoute)) {
    fail('tokenRoute', `must be ${REQUEST_PATH_RULE} or false, got ${JSON.stringify(tokenRoute)}`)
  }
  const sessionPlugin = options.sessionPlugin ?? DEFAULTS.sessionPlugin
  if (!SESSION_PLUGINS.has(sessionPlugin as string)) {
    fail('sessionPlugin', `must be '@fastify/session' or '@fastify/secure-session', got ${JSON.stringify(sessionPlugin)}`)
  }
  const logLevel = options.logLevel ?? DEFAULTS.logLevel
  if (!LOG_LEVELS.has(logLevel as string)) fail('logLevel', `must be a pino level, got ${JSON.stringify(logLevel)}`)
  if (options.onReject !== undefined && typeof options.onReject !== 'function') {
    fail('onReject', 'must be a function')
  }
  if (options.store !== undefined && !isTokenStore(options.store)) {
    fail('store', 'must be a TokenStore (an object with issue and consume methods)')
  }
  const protocol = string(options, 'protocol', DEFAULTS.protocol, PROTOCOL_RE, 'a subprotocol name (RFC 6455 token characters)')

  return {
    origins: compileOrigins(options.origins, 'origins'),
    allowMissingOrigin: boolean(options, 'allowMissingOrigin', DEFAULTS.allowMissingOrigin),
    tokenRoute: tokenRoute as string | false,
    sessionPlugin: sessionPlugin as SessionPluginName,
    sessionKey: options.sessionKey === undefined ? DEFAULTS.sessionKey : checkSessionKey(options.sessionKey),
    tokenTTL: positive(options, 'tokenTTL', DEFAULTS.tokenTTL, false),
    maxTokens: positive(options, 'maxTokens', DEFAULTS.maxTokens, true),
    queryParam: string(options, 'queryParam', DEFAULTS.queryParam, QUERY_PARAM_RE, 'a query parameter name of unreserved URL characters'),
    protocol,
    protocolPrefix: protocol + '.',
    store: options.store as TokenStore | undefined,
    storeTimeout: positive(options, 'storeTimeout', DEFAULTS.storeTimeout, false, MAX_TIMER_DELAY),
    logLevel: logLevel as LogLevel,
    onReject: options.onReject as ResolvedOptions['onReject'],
    redactLogs: boolean(options, 'redactLogs', DEFAULTS.redactLogs)
  }
}

/** The checks of one guarded route: the plugin's options with the route's overrides. */
export interface RouteGuard {
  origins: OriginCheck
  allowMissingOrigin: boolean
  token: boolean
}

const ROUTE_GUARD_KEYS = new Set(['origins', 'allowMissingOrigin', 'token'])

export function resolveRouteGuard (guard: unknown, url: string, defaults: ResolvedOptions): RouteGuard | null {
  if (guard === undefined || guard === false) return null
  if (guard === true) return { origins: defaults.origins, allowMissingOrigin: defaults.allowMissingOrigin, token: true }
  try {
    if (typeof guard !== 'object' || guard === null || Array.isArray(guard)) {
      fail('guard', `must be true, false or an object, got ${JSON.stringify(guard)}`)
    }
    const overrides = guard as Record<string, unknown>
    for (const key of Object.keys(overrides)) {
      if (!ROUTE_GUARD_KEYS.has(key)) {
        fail('guard', `has an unknown key ${JSON.stringify(key)} (expected origins, allowMissingOrigin or token)`)
      }
    }
    return {
      origins: overrides.origins === undefined ? defaults.origins : compileOrigins(overrides.origins, 'guard.origins'),
      allowMissingOrigin: boolean(overrides, 'allowMissingOrigin', defaults.allowMissingOrigin, 'guard.'),
      token: boolean(overrides, 'token', true, 'guard.')
    }
  } catch (err) {
    throw new WebsocketGuardOptionError(`${(err as Error).message} (route ${url})`)
  }
}
