/**
 * Tokens kept in the user's session itself (the default with @fastify/session), and the
 * seed's functions, which work the same way on any session or plain object.
 */
import type { FastifyRequest } from 'fastify'
import { WebsocketGuardOptionError, type WebsocketGuardStoreUnavailable } from '../errors'
import { checkSessionKey, DEFAULTS, fail, isRequestPath, positive, REQUEST_PATH_RULE, type ResolvedOptions } from '../options'
import { derivedId, randomId, readSession, writeSession, type SessionLike } from '../session'
import { tokenTable, type TokenTable } from '../stores/memory'
import type { StoredToken } from '../stores/types'
import { assertConsumed, decodeRecord, encodeRecord, findToken, hashToken, MAX_PRESENTED_LENGTH, newToken, pathOf, presentedToken, type IssuedToken } from '../tokens'
import { storeCall } from '../deadline'
import type { TokenBackend } from './index'

export function sessionBackend (opts: ResolvedOptions): TokenBackend {
  const spent = new SpentTokens()
  const { sessionKey, tokenTTL, maxTokens, storeTimeout } = opts
  return {
    issue (request, session, path) {
      const value = readSession(session, sessionKey)
      // tokens the app itself issued into the session stay there, beside new ones
      if (isLocalId(value) || (value === undefined && besideMemoryStore(request))) {
        return issueLocally(session, sessionKey, value, tokenTTL, maxTokens, path)
      }
      return issueInSession(session, sessionKey, tokenTTL, maxTokens, path)
    },
    consume (request, session, token, path) {
      // beside @fastify/session's MemoryStore the session itself does not change: no save
      if (!consumeInSession(session, sessionKey, token, path, spent)) return
      // @fastify/session saves in onSend, which a successful upgrade never reaches
      const save = (session as { save?: () => Promise<void> }).save
      if (typeof save !== 'function') return
      return saveNow(request, save.call(session), storeTimeout)
    },
    async revoke (session, stored) {
      // another copy of the session (a replayed cookie, a request that saves it again) still
      // holds them: spent here, they are refused in this process whichever copy shows them
      // beside the MemoryStore: the id's tokens dropped, for every copy of the session
      if (isLocalId(stored)) localTable?.revoke(stored)
      const now = Date.now()
      for (const record of sessionTokens(stored)) spent.spend(record.hash, record.expiresAt, now)
      writeSession(session, opts.sessionKey, undefined)
    },
    close () {}
  }
}

async function saveNow (request: FastifyRequest, saved: Promise<void>, storeTimeout: number): Promise<void> {
  try {
    await storeCall(saved, storeTimeout)
  } catch (err) {
    // The session store just failed or hung on our save. @fastify/session would try the
    // same save again in onSend, then answer with the store's own error instead of this
    // 503, or never answer at all: the request lets go of its session.
    (request as unknown as { session: unknown }).session = null
    throw err as WebsocketGuardStoreUnavailable
  }
}

/**
 * Tokens beside @fastify/session's default in-process MemoryStore. Its sessions live in this
 * process only, so their tokens can too: the session keeps only an id (written once, at its
 * first token), every consume is one synchronous check-and-delete here (exactly once, with no
 * session save at the upgrade and no record of spent tokens), and @fastify/session has less
 * to hash and copy on every request. Shared by every instance of the plugin in the process,
 * as a MemoryStore may be; expired tokens are swept.
 */
let localTable: TokenTable | undefined

/** A session's local id, as kept under `sessionKey`; never a token, so never matched as one. */
export const LOCAL_ID_PREFIX = 'wsg-local:'

export function isLocalId (value: unknown): value is string {
  return typeof value === 'string' && value.startsWith(LOCAL_ID_PREFIX)
}

// @fastify/session's own MemoryStore, if this package can load the same copy the app uses
const memoryStore = optionalExport('@fastify/session', 'MemoryStore') as { prototype: Record<string, unknown> } | undefined

/** `module[name]`, or `undefined` when the module cannot be loaded (an optional peer). */
export function optionalExport (module: string, name: string): unknown {
  try {
    return (require(module) as Record<string, unknown>)[name]
  } catch {
    return undefined
  }
}

/**
 * Whether the request's sessions are kept by @fastify/session's MemoryStore itself, with its
 * plain Map: a subclass, a patched method or another Map could keep them elsewhere (shared
 * between processes), and tokens must then stay in the session.
 */
export function besideMemoryStore (request: FastifyRequest): boolean {
  const store = (request as { sessionStore?: Record<string, unknown> }).sessionStore
  if (memoryStore === undefined || typeof store !== 'object' || store === null) return false
  const proto = memoryStore.prototype
  return Object.getPrototypeOf(store) === proto && store.get === proto.get && store.set === proto.set &&
    typeof store.store === 'object' && store.store !== null && Object.getPrototypeOf(store.store) === Map.prototype
}

function issueLocally (session: SessionLike, sessionKey: string, value: unknown, tokenTTL: number, maxTokens: number, path: string | null): IssuedToken {
  let id = value as string | undefined
  if (id === undefined) {
    id = LOCAL_ID_PREFIX + localId(session)
    writeSession(session, sessionKey, id)
  }
  // an unbounded number of ids: a cap would let a flood of new sessions evict the pending
  // tokens of others, and the sessions themselves are held in this process already
  localTable ??= tokenTable(30_000, Infinity)
  const { issued, record } = newToken(tokenTTL, path, Date.now())
  localTable.issue(id, record, maxTokens)
  return issued
}

/**
 * Derived from @fastify/session's session id, so that two first token requests of one
 * session (two tabs) agree; random for a plain object, which has none.
 */
function localId (session: SessionLike): string {
  return derivedId(session, 'local:') ?? randomId()
}

/** Tokens the local table holds for a session's local id (for tests). */
export function localTokenCount (id: string): number {
  return localTable?.count(id) ?? 0
}

/** Consumes from the local table when the session's tokens are there: true when consumed. */
function consumeLocally (session: SessionLike, sessionKey: string, token: string, path: string): boolean {
  const id = readSession(session, sessionKey)
  if (!isLocalId(id)) return false
  // a table this process never made holds none of the session's tokens
  assertConsumed(localTable === undefined ? 'none-stored' : localTable.consume(id, hashToken(token), path, Date.now()))
  return true
}

/** Issues a token into the session itself. The array is replaced, never mutated: a session
 * store may share it with other requests until this one is saved. */
export function issueInSession (session: SessionLike, sessionKey: string, tokenTTL: number, maxTokens: number, path: string | null): IssuedToken {
  const value = readSession(session, sessionKey)
  if (isLocalId(value)) return issueLocally(session, sessionKey, value, tokenTTL, maxTokens, path)
  const now = Date.now()
  const { issued, record } = newToken(tokenTTL, path, now)
  // one pass: live entries kept as the strings they are, the new one added
  const kept: string[] = []
  if (Array.isArray(value)) {
    for (const entry of value) {
      const live = liveEntry(entry, now)
      if (live !== null) kept.push(live)
    }
  } else {
    const seed = seedRecord(value)
    if (seed !== null) kept.push(encodeRecord(seed))
  }
  kept.push(encodeRecord(record))
  // a copy of exactly its length: push() gave the array room for 17
  writeSession(session, sessionKey, kept.slice(Math.max(0, kept.length - maxTokens)))
  return issued
}

/** A session entry as a compact string when it is a live record, else `null`. */
function liveEntry (entry: unknown, now: number): string | null {
  if (typeof entry === 'string') {
    const record = decodeRecord(entry)
    return record !== null && record.expiresAt > now ? entry : null
  }
  // the records of earlier versions: objects
  return isStoredToken(entry) && entry.expiresAt > now ? encodeRecord(entry) : null
}

/** A plain string is a token stored by the seed's convention (no expiry, no path). */
function seedRecord (value: unknown): StoredToken | null {
  if (typeof value !== 'string' || value === '' || value.length > MAX_PRESENTED_LENGTH || isLocalId(value)) return null
  // "never" as a finite number: Infinity would become null in a JSON session store, and
  // issuing a token next to a seed token would then silently drop the seed token
  return { hash: hashToken(value), expiresAt: Number.MAX_SAFE_INTEGER, path: null }
}

/**
 * The session's tokens: compact strings, the objects of earlier versions, or a seed token;
 * anything unrecognised counts as no tokens rather than as an error.
 */
export function sessionTokens (value: unknown): StoredToken[] {
  if (!Array.isArray(value)) {
    const seed = seedRecord(value)
    return seed === null ? [] : [seed]
  }
  const records: StoredToken[] = []
  for (const entry of value) {
    const record = typeof entry === 'string' ? decodeRecord(entry) : isStoredToken(entry) ? entry : null
    if (record !== null) records.push(record)
  }
  return records
}

function isStoredToken (value: unknown): value is StoredToken {
  const r = value as StoredToken
  // a NaN expiry would never compare as expired: anything but a finite number fails closed
  return typeof r === 'object' && r !== null && typeof r.hash === 'string' &&
    Number.isFinite(r.expiresAt) && (r.path === null || typeof r.path === 'string')
}

/**
 * Consumes the presented token from the session: removes it when it matches, and throws the
 * matching security error, changing nothing, otherwise. True when the session itself changed
 * (and needs saving), false when the token was beside the session.
 */
export function consumeInSession (session: SessionLike, sessionKey: string, token: string, path: string, spent?: SpentTokens): boolean {
  if (consumeLocally(session, sessionKey, token, path)) return false
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
  if (records.length === 1) {
    writeSession(session, sessionKey, undefined)
    return true
  }
  const remaining = new Array<string>(records.length - 1)
  for (let i = 0, n = 0; i < records.length; i++) if (i !== index) remaining[n++] = encodeRecord(records[i] as StoredToken)
  writeSession(session, sessionKey, remaining)
  return true
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
