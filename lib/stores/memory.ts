/**
 * An in-process `TokenStore`. It is the default server-side store with
 * @fastify/secure-session, whose cookie sessions cannot forget a token. One process only:
 * use `redisTokenStore` for several.
 */
import { addToken, findToken } from '../tokens'
import { MAX_TIMER_DELAY, positive } from '../options'
import type { ConsumeOutcome, StoredToken, TokenStore } from './types'

export interface MemoryTokenStoreOptions {
  /** how often abandoned, expired tokens are dropped, in ms; default 30000 */
  sweepInterval?: number
  /**
   * most ids (sessions) holding tokens at once; issuing for one more drops the tokens of the
   * id that got its first token longest ago. Default 100000 (some 25 MB at most)
   */
  maxIds?: number
}

export interface MemoryTokenStore extends TokenStore {
  /** number of ids that hold at least one token (for tests and metrics) */
  readonly size: number
  revoke (id: string): Promise<void>
  close (): void
}

// A session's one token is kept as itself, several in an array: most sessions hold one, and
// an array of one would add a quarter to the memory of each.
type Entry = StoredToken | StoredToken[]

function recordsOf (entry: Entry | undefined): StoredToken[] {
  return entry === undefined ? [] : Array.isArray(entry) ? entry : [entry]
}

/**
 * The store's synchronous core, also used directly where nothing must wait: by the default
 * @fastify/session path (tokens beside its in-process MemoryStore) and by the server-side
 * path with the default store of @fastify/secure-session.
 */
export interface TokenTable {
  readonly size: number
  /** tokens held for `id`, expired ones included until swept (for tests) */
  count (id: string): number
  issue (id: string, token: StoredToken, maxTokens: number): void
  consume (id: string, hash: string, path: string, now: number): ConsumeOutcome
  revoke (id: string): void
  close (): void
}

/** Where `tokenTable` of a store made by `memoryTokenStore` is found (not public API). */
export const TOKEN_TABLE = Symbol('fastify-websocket-guard.tokenTable')

export function tokenTable (sweepInterval: number, maxIds: number): TokenTable {
  // Every cookie-less token request brings a new id: without a cap, a flood of them would
  // grow this map for TTL + sweepInterval. Maps iterate in insertion order: the first key
  // is the id that got its first token longest ago.
  const tokens = new Map<string, Entry>()

  function put (id: string, records: StoredToken[]): void {
    if (records.length === 0) tokens.delete(id)
    else tokens.set(id, records.length === 1 ? records[0] as StoredToken : records)
  }

  function sweep (): void {
    const now = Date.now()
    for (const [id, entry] of tokens) {
      const records = recordsOf(entry)
      const live = records.filter((r) => r.expiresAt > now)
      if (live.length !== records.length) put(id, live)
    }
  }
  // Without it, sessions that never come back would keep their tokens forever.
  const timer = setInterval(sweep, sweepInterval)
  timer.unref()

  return {
    get size () {
      return tokens.size
    },
    count (id) {
      return recordsOf(tokens.get(id)).length
    },
    issue (id, token, maxTokens) {
      const entry = tokens.get(id)
      if (entry === undefined) {
        if (tokens.size >= maxIds) tokens.delete(tokens.keys().next().value as string)
        // most sessions hold one token: no array for it
        tokens.set(id, token)
        return
      }
      put(id, addToken(recordsOf(entry), token, maxTokens, Date.now()))
    },
    consume (id, hash, path, now) {
      const records = recordsOf(tokens.get(id))
      const { outcome, index } = findToken(records, hash, path, now)
      // check and delete run in one synchronous step: no other consume can interleave
      if (outcome === 'consumed') put(id, records.length === 1 ? [] : records.filter((_, i) => i !== index))
      return outcome
    },
    revoke (id) {
      tokens.delete(id)
    },
    close () {
      clearInterval(timer)
      tokens.clear()
    }
  }
}

export function memoryTokenStore (options: MemoryTokenStoreOptions = {}): MemoryTokenStore {
  const given = options as Record<string, unknown>
  // setInterval turns anything above 2^31 - 1 ms into 1 ms: a sweep per millisecond
  const sweepInterval = positive(given, 'sweepInterval', 30_000, false, MAX_TIMER_DELAY)
  const maxIds = positive(given, 'maxIds', 100_000, true)
  const table = tokenTable(sweepInterval, maxIds)
  return {
    [TOKEN_TABLE]: table,
    get size () {
      return table.size
    },
    async issue (id: string, token: StoredToken, maxTokens: number): Promise<void> {
      table.issue(id, token, maxTokens)
    },
    async consume (id: string, hash: string, path: string, now: number): Promise<ConsumeOutcome> {
      return table.consume(id, hash, path, now)
    },
    async revoke (id: string): Promise<void> {
      table.revoke(id)
    },
    close (): void {
      table.close()
    }
  } as MemoryTokenStore
}
