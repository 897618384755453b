/**
 * Options: their defaults (one object), their types and their validation, plus the checks
 * shared by every entry point (the plugin, the token route, the route option `guard` and the
 * exported functions). Everything here runs once, at registration or at a function's call;
 * the request path only reads what it produces.
 */
import type { FastifyRequest, LogLevel, RouteShorthandOptions } from 'fastify'
import { WebsocketGuardOptionError } from './errors'
import { compileOrigins, type OriginCheck, type OriginsOption } from './origin'
import type { TokenStore } from './stores/types'

export type { OriginFunction, OriginsOption } from './origin'
export type SessionPluginName = '@fastify/session' | '@fastify/secure-session'

/** Every default of the package, in one place. */
export const DEFAULTS = {
  allowMissingOrigin: false,
  guardAll: true,
  tokenRoute: '/websocket-token',
  sessionPlugin: '@fastify/session',
  sessionKey: 'websocket_token',
  tokenTTL: 60_000,
  maxTokens: 8,
  queryParam: 'token',
  protocol: 'websocket-guard',
  storeTimeout: 1000,
  closeOnSessionEnd: true,
  maxSocketLifetime: false,
  revalidateInterval: false,
  logLevel: 'warn',
  redactLogs: true
} as const

/** Every option name, for the unknown-name check (the defaults and the options without one). */
const KNOWN_OPTIONS = [...Object.keys(DEFAULTS), 'origins', 'tokenRouteOptions', 'store', 'identify', 'onReject']
/** What Fastify itself reads from a plugin's register options: never unknown. */
const FASTIFY_REGISTER_OPTIONS = new Set(['prefix', 'logSerializers'])
/** Fields of the token route that the plugin decides itself. */
const OWN_ROUTE_FIELDS = ['url', 'path', 'method', 'handler']

export interface FastifyWebsocketGuardOptions {
  /** allowed origins; default: same-origin (`${request.protocol}://${request.host}`) */
  origins?: OriginsOption
  /** accept an upgrade that sends no `Origin` (non-browser clients); the token is still required */
  allowMissingOrigin?: boolean
  /** guard every websocket route that does not say `guard: false`; `false`: only routes that set `guard`. Default `true` */
  guardAll?: boolean
  /** path of the token-issuing GET route; `false` registers none. Default `'/websocket-token'` */
  tokenRoute?: string | false
  /** merged into the token route's declaration (`preHandler`, `config`, `schema`, `logLevel`, …); not `url`, `method` or `handler` */
  tokenRouteOptions?: Omit<RouteShorthandOptions, 'url' | 'method' | 'handler'> & Record<string, unknown>
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
  /** how long a store call (or an `origins` function, `identify`) may take before the guard fails closed with 503, in ms; default 1000 */
  storeTimeout?: number
  /** close every guarded socket of a session, on every instance, when the session ends; default `true` */
  closeOnSessionEnd?: boolean
  /** the user id a guarded socket belongs to, for `closeUser`; called at the upgrade after the checks */
  identify?: (request: FastifyRequest) => string | null | Promise<string | null>
  /** close a guarded socket with 4408 after this long, in ms; default `false` */
  maxSocketLifetime?: number | false
  /** how often to check that the sessions of open guarded sockets still exist, in ms; default `false` */
  revalidateInterval?: number | false
  /** level of the log line written for each rejection; default `'warn'` */
  logLevel?: LogLevel
  /** called for each rejection (metrics, audit); `details.url` is the request URL with tokens redacted */
  onReject?: (error: Error & { code: string, statusCode: number }, request: FastifyRequest, details: RejectDetails) => void | Promise<void>
  /** remove the token from the URLs in Fastify's own request log lines; default `true` */
  redactLogs?: boolean
}

/** The third argument of `onReject`. */
export interface RejectDetails {
  /** the request URL with every token value replaced by `[REDACTED]`: log this, not `request.url` */
  url: string
}

/** The route option `guard`: `true`, or overrides; `false` means no checks. */
export interface GuardRouteOptions {
  origins?: OriginsOption
  allowMissingOrigin?: boolean
  /** `false` checks the origin only */
  token?: boolean
}

export interface ResolvedOptions {
  origins: OriginCheck
  allowMissingOrigin: boolean
  guardAll: boolean
  tokenRoute: string | false
  tokenRouteOptions: Record<string, unknown>
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
  closeOnSessionEnd: boolean
  identify: FastifyWebsocketGuardOptions['identify']
  maxSocketLifetime: number | false
  revalidateInterval: number | false
  logLevel: LogLevel
  onReject: FastifyWebsocketGuardOptions['onReject']
  redactLogs: boolean
  /** the route guard of `guard: true`: the plugin's own checks */
  wholeGuard: RouteGuard
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

/** A delay in ms that a timer can honour, or `false` for off. */
function durationOrFalse (options: Record<string, unknown>, name: string, fallback: number | false): number | false {
  if (options[name] === false) return false
  return positive(options, name, fallback as number, false, MAX_TIMER_DELAY)
}

function tokenRouteOptions (value: unknown): Record<string, unknown> {
  if (value === undefined) return {}
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    fail('tokenRouteOptions', `must be an object of Fastify route options, got ${JSON.stringify(value)}`)
  }
  for (const field of OWN_ROUTE_FIELDS) {
    if (field in value) fail('tokenRouteOptions', `must not set ${field}: the plugin sets it (use the tokenRoute option for the path)`)
  }
  return value as Record<string, unknown>
}

/** The known name closest to a mistyped one (edit distance, case-insensitive). */
export function nearest (name: string, known: readonly string[]): string {
  let best = known[0] as string
  let bestDistance = Infinity
  for (const candidate of known) {
    const d = distance(name.toLowerCase(), candidate.toLowerCase())
    if (d < bestDistance) { best = candidate; bestDistance = d }
  }
  return best
}

function distance (a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, i) => i)
  for (let i = 1; i <= a.length; i++) {
    const current = [i]
    for (let j = 1; j <= b.length; j++) {
      current[j] = Math.min((previous[j] as number) + 1, (current[j - 1] as number) + 1, (previous[j - 1] as number) + (a[i - 1] === b[j - 1] ? 0 : 1))
    }
    previous = current
  }
  return previous[b.length] as number
}

function isTokenStore (value: unknown): value is TokenStore {
  const store = value as TokenStore
  return typeof store === 'object' && store !== null && typeof store.issue === 'function' && typeof store.consume === 'function'
}

export function resolveOptions (input: FastifyWebsocketGuardOptions | undefined): ResolvedOptions {
  const options = (input ?? {}) as Record<string, unknown>
  if (typeof options !== 'object') throw new WebsocketGuardOptionError('fastify-websocket-guard: options must be an object')
  for (const name of Object.keys(options)) {
    if (!KNOWN_OPTIONS.includes(name) && !FASTIFY_REGISTER_OPTIONS.has(name)) {
      fail(name, `is not an option of fastify-websocket-guard (did you mean ${nearest(name, KNOWN_OPTIONS)}?)`)
    }
  }

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
  for (const name of ['onReject', 'identify']) {
    if (options[name] !== undefined && typeof options[name] !== 'function') fail(name, 'must be a function')
  }
  if (options.store !== undefined && !isTokenStore(options.store)) {
    fail('store', 'must be a TokenStore (an object with issue and consume methods)')
  }
  const protocol = string(options, 'protocol', DEFAULTS.protocol, PROTOCOL_RE, 'a subprotocol name (RFC 6455 token characters)')
  const storeTimeout = positive(options, 'storeTimeout', DEFAULTS.storeTimeout, false, MAX_TIMER_DELAY)

  const origins = compileOrigins(options.origins, 'origins', storeTimeout)
  const allowMissingOrigin = boolean(options, 'allowMissingOrigin', DEFAULTS.allowMissingOrigin)
  return {
    origins,
    allowMissingOrigin,
    guardAll: boolean(options, 'guardAll', DEFAULTS.guardAll),
    tokenRoute: tokenRoute as string | false,
    tokenRouteOptions: tokenRouteOptions(options.tokenRouteOptions),
    sessionPlugin: sessionPlugin as SessionPluginName,
    sessionKey: options.sessionKey === undefined ? DEFAULTS.sessionKey : checkSessionKey(options.sessionKey),
    tokenTTL: positive(options, 'tokenTTL', DEFAULTS.tokenTTL, false),
    maxTokens: positive(options, 'maxTokens', DEFAULTS.maxTokens, true),
    queryParam: string(options, 'queryParam', DEFAULTS.queryParam, QUERY_PARAM_RE, 'a query parameter name of unreserved URL characters'),
    protocol,
    protocolPrefix: protocol + '.',
    store: options.store as TokenStore | undefined,
    storeTimeout,
    closeOnSessionEnd: boolean(options, 'closeOnSessionEnd', DEFAULTS.closeOnSessionEnd),
    identify: options.identify as ResolvedOptions['identify'],
    maxSocketLifetime: durationOrFalse(options, 'maxSocketLifetime', DEFAULTS.maxSocketLifetime),
    revalidateInterval: durationOrFalse(options, 'revalidateInterval', DEFAULTS.revalidateInterval),
    logLevel: logLevel as LogLevel,
    onReject: options.onReject as ResolvedOptions['onReject'],
    redactLogs: boolean(options, 'redactLogs', DEFAULTS.redactLogs),
    wholeGuard: { origins, allowMissingOrigin, token: true }
  }
}

/** The checks of one guarded route: the plugin's options with the route's overrides. */
export interface RouteGuard {
  origins: OriginCheck
  allowMissingOrigin: boolean
  token: boolean
}

const ROUTE_GUARD_KEYS = new Set(['origins', 'allowMissingOrigin', 'token'])

/**
 * The checks of a route, or `null` for a route the guard leaves open: `guard: false`, or no
 * `guard` where `guardAll` is off or the route is not a websocket route.
 */
export function resolveRouteGuard (guard: unknown, websocket: boolean, url: string, defaults: ResolvedOptions): RouteGuard | null {
  if (guard === false) return null
  if (guard === undefined) return websocket && defaults.guardAll ? defaults.wholeGuard : null
  if (guard === true) return defaults.wholeGuard
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
      origins: overrides.origins === undefined ? defaults.origins : compileOrigins(overrides.origins, 'guard.origins', defaults.storeTimeout),
      allowMissingOrigin: boolean(overrides, 'allowMissingOrigin', defaults.allowMissingOrigin, 'guard.'),
      token: boolean(overrides, 'token', true, 'guard.')
    }
  } catch (err) {
    throw new WebsocketGuardOptionError(`${(err as Error).message} (route ${url})`)
  }
}
