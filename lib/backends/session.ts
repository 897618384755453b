/**
 * Tokens kept in the user's session itself (the default with @fastify/session), and the
 * seed's functions, which work the same way on any session or plain object.
 */
import { WebsocketGuardOptionError, WebsocketGuardStoreUnavailable } from '../errors'
import { checkSessionKey, DEFAULTS, fail, isRequestPath, positive, REQUEST_PATH_RULE, type ResolvedOptions } from '../options'
import { readSession, writeSession, type SessionLike } from '../session'
import type { StoredToken } from '../stores/types'
import { addToken, assertConsumed, findToken, hashToken, MAX_PRESENTED_LENGTH, newToken, pathOf, presentedToken, type IssuedToken } from '../tokens'
import { storeCall } from '../deadline'
import type { TokenBackend } from './index'

export function sessionBackend (opts: ResolvedOptions): TokenBackend {
  const spent = new SpentTokens()
  return {
    async issue (_request, session, path) {
      return issueInSession(session, opts.sessionKey, opts.tokenTTL, opts.maxTokens, path)
    },
    async consume (request, session, token, path) {
      consumeInSession(session, opts.sessionKey, token, path, spent)
      // @fastify/session saves in onSend, which a successful upgrade never reaches
      const save = (session as { save?: () => Promise<void> }).save
      if (typeof save !== 'function') return
      try {
        await storeCall(save.call(session), opts.storeTimeout)
      } catch (err) {
        // The session store just failed or hung on our save. @fastify/session would try the
        // same save again in onSend, then answer with the store's own error instead of this
        // 503, or never answer at all: the request lets go of its session.
        (request as unknown as { session: unknown }).session = null
        throw err as WebsocketGuardStoreUnavailable
      }
    },
    async revoke (session, stored) {
      // another copy of the session (a replayed cookie, a request that saves it again) still
      // holds them: spent here, they are refused in this process whichever copy shows them
      const now = Date.now()
      for (const record of sessionTokens(stored)) spent.spend(record.hash, record.expiresAt, now)
      writeSession(session, opts.sessionKey, undefined)
    },
    close () {}
  }
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

function isStoredToken (value: unknown): value is StoredToken {
  const r = value as StoredToken
  // a NaN expiry would never compare as expired: anything but a finite number fails closed
  return typeof r === 'object' && r !== null && typeof r.hash === 'string' &&
    Number.isFinite(r.expiresAt) && (r.path === null || typeof r.path === 'string')
}

/**
 * Consumes the presented token from the session: removes it when it matches, and throws the
 * matching security error, changing nothing, otherwise.
 */
export function consumeInSession (session: SessionLike, sessionKey: string, token: string, path: string, spent?: SpentTokens): void {
  const now = Date.now()
  const records = sessionTokens(readSession(session, sessionKey))
  const hash = hashToken(token)
  const { outcome, index } = findToken(records, hash, path, now)
  assertConsumed(outcome)
  const record = records[index] as StoredToken
  if (spent !== undefined && !spent.spend(hash, record.expiresAt, now)) {
    // consumed by a concurrent upgrade that loaded the same session: as if already removed
    assertConsumed(records.length > 1 ? 'mismatch' : 'none-stored')
  }
  const remaining = records.filter((_, i) => i !== index)
  writeSession(session, sessionKey, remaining.length === 0 ? undefined : remaining)
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

/**
 * The seed's `consume_websocket_token`. `path` is a request path with its query
 * (`'/chat?token=abc'`). Returns the token and removes it from the session when it matches;
 * otherwise throws `NoWebsocketTokenPresented`, `NoWebsocketTokenStored`,
 * `WebsocketTokenMismatch` or `WebsocketTokenExpired` and leaves the session as it was.
 */
export function consumeWebsocketToken (path: string, session: SessionLike, sessionKey: string = DEFAULTS.sessionKey): string {
  if (typeof path !== 'string') throw new WebsocketGuardOptionError('fastify-websocket-guard: path must be a string')
  checkSession(session)
  checkSessionKey(sessionKey)
  const { token } = presentedToken(path, undefined, DEFAULTS.queryParam, '')
  consumeInSession(session, sessionKey, token, pathOf(path))
  return token
}

/** Stores a new token in the session and returns it. */
export function issueWebsocketToken (session: SessionLike, options: IssueOptions = {}): string {
  checkSession(session)
  if (options === null || typeof options !== 'object') throw new WebsocketGuardOptionError('fastify-websocket-guard: options must be an object')
  const given = options as Record<string, unknown>
  // a NaN TTL would make a token that never expires, a maxTokens of 0 one that is never kept
  const tokenTTL = positive(given, 'tokenTTL', DEFAULTS.tokenTTL, false)
  const maxTokens = positive(given, 'maxTokens', DEFAULTS.maxTokens, true)
  const sessionKey = checkSessionKey(options.sessionKey === undefined ? DEFAULTS.sessionKey : options.sessionKey)
  const path = options.path ?? null
  // a path with a query could never equal a request's path: the token would be unusable
  if (path !== null && !isRequestPath(path)) fail('path', `must be null or ${REQUEST_PATH_RULE}, got ${JSON.stringify(path)}`)
  return issueInSession(session, sessionKey, tokenTTL, maxTokens, path).token
}

function checkSession (session: unknown): void {
  if (session === null || typeof session !== 'object') throw new WebsocketGuardOptionError('fastify-websocket-guard: session must be an object')
}
