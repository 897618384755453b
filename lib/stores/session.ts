/**
 * Tokens kept in the user's session (the default with @fastify/session), and the seed's
 * functions that work on any session or plain object.
 */
import { generateToken, hashToken, addToken, findToken, assertConsumed, presentedToken, pathOf, type StoredToken, MAX_PRESENTED_LENGTH } from '../tokens'
import { NoWebsocketTokenStored, WebsocketTokenMismatch } from '../errors'
import { checkIssueOptions } from '../options'

/**
 * A @fastify/session or @fastify/secure-session session, or a plain object. Method syntax on
 * purpose: their `get`/`set` take `keyof SessionData`, which only a method's (bivariant)
 * parameters accept, so `request.session` type-checks as it is. `any` values so that an object
 * typed by an interface (which has no index signature) is accepted too.
 */
export type SessionLike = { get? (key: string): unknown, set? (key: string, value: unknown): void } | Record<string, any>

export function readSession (session: SessionLike, key: string): unknown {
  return typeof session.get === 'function' ? session.get(key) : (session as Record<string, unknown>)[key]
}

export function writeSession (session: SessionLike, key: string, value: unknown): void {
  if (typeof session.set === 'function') {
    session.set(key, value)
  } else if (value === undefined) {
    delete (session as Record<string, unknown>)[key]
  } else {
    (session as Record<string, unknown>)[key] = value
  }
}

function isStoredToken (value: unknown): value is StoredToken {
  const r = value as StoredToken
  // a NaN expiry would never compare as expired: anything but a finite number fails closed
  return typeof r === 'object' && r !== null && typeof r.hash === 'string' &&
    Number.isFinite(r.expiresAt) && (r.path === null || typeof r.path === 'string')
}

/**
 * The session's tokens. A plain string is a token stored by the seed's convention (no expiry,
 * no path); anything unrecognised counts as no tokens rather than as an error.
 */
export function sessionTokens (value: unknown): StoredToken[] {
  if (typeof value === 'string' && value !== '' && value.length <= MAX_PRESENTED_LENGTH) {
    // "never" as a finite number: Infinity would become null in a JSON session store, and
    // issuing a token next to a seed token would then silently drop the seed token
    return [{ hash: hashToken(value), expiresAt: Number.MAX_SAFE_INTEGER, path: null }]
  }
  return Array.isArray(value) ? value.filter(isStoredToken) : []
}

export interface IssueOptions {
  /** where tokens live in the session; default `'websocket_token'` */
  sessionKey?: string
  /** lifetime in ms; default 60000 */
  tokenTTL?: number
  /** outstanding tokens kept; default 8 */
  maxTokens?: number
  /** bind the token to this request path */
  path?: string | null
}

export interface IssuedToken {
  token: string
  expiresAt: number
}

export function newToken (tokenTTL: number, path: string | null, now: number): { issued: IssuedToken, record: StoredToken } {
  const token = generateToken()
  const expiresAt = now + tokenTTL
  return { issued: { token, expiresAt }, record: { hash: hashToken(token), expiresAt, path } }
}

/** Issues a token into the session itself. The array is replaced, never mutated: a session
 * store may share it with other requests until this one is saved. */
export function issueInSession (session: SessionLike, sessionKey: string, tokenTTL: number, maxTokens: number, path: string | null): IssuedToken {
  const now = Date.now()
  const { issued, record } = newToken(tokenTTL, path, now)
  writeSession(session, sessionKey, addToken(sessionTokens(readSession(session, sessionKey)), record, maxTokens, now))
  return issued
}

/**
 * Tokens consumed by this process and not yet expired. Two upgrades of one session load two
 * copies of it; without this, both copies would still hold the token and both would pass.
 */
export class SpentTokens {
  private readonly spent = new Map<string, number>()
  private nextSweep = 0

  /** Marks `hash` spent; false when it already was. Synchronous, hence atomic in this process. */
  spend (hash: string, expiresAt: number, now: number): boolean {
    if (now >= this.nextSweep) this.sweep(now)
    const until = this.spent.get(hash)
    if (until !== undefined && until > now) return false
    // A seed-style token never expires; remembering it for an hour is enough to stop a replay
    // of a session copy loaded before it was consumed.
    this.spent.set(hash, Math.min(expiresAt, now + 3_600_000))
    return true
  }

  get size (): number {
    return this.spent.size
  }

  private sweep (now: number): void {
    for (const [hash, until] of this.spent) {
      if (until <= now) this.spent.delete(hash)
    }
    this.nextSweep = now + 10_000
  }
}

/**
 * Consumes the presented token from the session: removes it and returns it when it matches,
 * and throws the matching security error, changing nothing, otherwise.
 */
export function consumeInSession (session: SessionLike, sessionKey: string, token: string, path: string, spent?: SpentTokens): void {
  const now = Date.now()
  const value = readSession(session, sessionKey)
  const records = sessionTokens(value)
  const hash = hashToken(token)
  const { outcome, index } = findToken(records, hash, path, now)
  assertConsumed(outcome)
  const record = records[index] as StoredToken
  if (spent !== undefined && !spent.spend(hash, record.expiresAt, now)) {
    // consumed by a concurrent upgrade that loaded the same session: as if already removed
    throw records.length > 1 ? new WebsocketTokenMismatch() : new NoWebsocketTokenStored()
  }
  const remaining = records.filter((_, i) => i !== index)
  writeSession(session, sessionKey, remaining.length === 0 ? undefined : remaining)
}

/**
 * The seed's `consume_websocket_token`. `path` is a request path with its query
 * (`'/chat?token=abc'`). Returns the token and removes it from the session when it matches;
 * otherwise throws `NoWebsocketTokenPresented`, `NoWebsocketTokenStored`,
 * `WebsocketTokenMismatch` or `WebsocketTokenExpired` and leaves the session as it was.
 */
export function consumeWebsocketToken (path: string, session: SessionLike, sessionKey = 'websocket_token'): string {
  if (typeof path !== 'string') throw new TypeError('path must be a string')
  checkSession(session)
  checkSessionKey(sessionKey)
  const { token } = presentedToken(path, undefined, 'token', '')
  consumeInSession(session, sessionKey, token, pathOf(path))
  return token
}

/** Stores a new token in the session and returns it. */
export function issueWebsocketToken (session: SessionLike, options: IssueOptions = {}): string {
  checkSession(session)
  if (options === null || typeof options !== 'object') throw new TypeError('options must be an object')
  // a NaN TTL would make a token that never expires, a maxTokens of 0 one that is never kept
  checkIssueOptions(options as Record<string, unknown>)
  const { sessionKey = 'websocket_token', tokenTTL = 60_000, maxTokens = 8, path = null } = options
  checkSessionKey(sessionKey)
  if (path !== null && (typeof path !== 'string' || !path.startsWith('/') || /[?#]/.test(path))) {
    // a path with a query could never equal a request's path: the token would be unusable
    throw new TypeError(`path must be null or a request path starting with / and without a query, got ${JSON.stringify(path)}`)
  }
  return issueInSession(session, sessionKey, tokenTTL, maxTokens, path).token
}

function checkSession (session: unknown): void {
  if (session === null || typeof session !== 'object') throw new TypeError('session must be an object')
}

function checkSessionKey (sessionKey: unknown): void {
  if (typeof sessionKey !== 'string' || sessionKey === '') throw new TypeError('sessionKey must be a non-empty string')
}
