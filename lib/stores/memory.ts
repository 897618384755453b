/**
 * An in-process `TokenStore`. It is the default server-side store with
 * @fastify/secure-session, whose cookie sessions cannot forget a token. One process only:
 * use `redisTokenStore` for several.
 */
import { addToken, findToken, type ConsumeOutcome, type StoredToken, type TokenStore } from '../tokens'

export interface MemoryTokenStoreOptions {
  /** how often abandoned, expired tokens are dropped, in ms; default 30000 */
  sweepInterval?: number
}

export interface MemoryTokenStore extends TokenStore {
  /** number of ids that hold at least one token (for tests and metrics) */
  readonly size: number
  close (): void
}

const MAX_TIMER_DELAY = 2 ** 31 - 1

export function memoryTokenStore (options: MemoryTokenStoreOptions = {}): MemoryTokenStore {
  const { sweepInterval = 30_000 } = options
  // setInterval turns anything above 2^31 - 1 ms into 1 ms: a sweep per millisecond
  if (typeof sweepInterval !== 'number' || !(sweepInterval > 0) || !(sweepInterval <= MAX_TIMER_DELAY)) {
    throw new TypeError(`sweepInterval must be a positive number of milliseconds, at most ${MAX_TIMER_DELAY}`)
  }
  const tokens = new Map<string, StoredToken[]>()

  function sweep (): void {
    const now = Date.now()
    for (const [id, records] of tokens) {
      const live = records.filter((r) => r.expiresAt > now)
      if (live.length === 0) tokens.delete(id)
      else if (live.length !== records.length) tokens.set(id, live)
    }
  }
  // Without it, sessions that never come back would keep their tokens forever.
  const timer = setInterval(sweep, sweepInterval)
  timer.unref()

  return {
    get size () {
      return tokens.size
    },
    async issue (id: string, token: StoredToken, maxTokens: number): Promise<void> {
      tokens.set(id, addToken(tokens.get(id) ?? [], token, maxTokens, Date.now()))
    },
    async consume (id: string, hash: string, path: string, now: number): Promise<ConsumeOutcome> {
      const records = tokens.get(id) ?? []
      const { outcome, index } = findToken(records, hash, path, now)
      if (outcome === 'consumed') {
        // check and delete run in one synchronous step: no other consume can interleave
        if (records.length === 1) tokens.delete(id)
        else tokens.set(id, records.filter((_, i) => i !== index))
      }
      return outcome
    },
    close (): void {
      clearInterval(timer)
      tokens.clear()
    }
  }
}
