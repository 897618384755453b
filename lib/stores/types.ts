/**
 * What a server-side token store is. The guard keeps a random id in the session and the
 * store keeps that id's tokens (as hashes: never a token itself). Implement `TokenStore` to
 * put tokens elsewhere; both calls must be atomic, since several processes may consume the
 * same token at once.
 */

/** A token as kept server-side: never the token itself. */
export interface StoredToken {
  /** SHA-256 of the token, base64url */
  hash: string
  /** epoch milliseconds after which the token is refused */
  expiresAt: number
  /** the request path the token is bound to, or `null` for any guarded route */
  path: string | null
}

/** What a store says about a presented token. Only `'consumed'` removes anything. */
export type ConsumeOutcome = 'consumed' | 'none-stored' | 'mismatch' | 'wrong-path' | 'expired'

export interface TokenStore {
  /** Adds `token` to `id`'s tokens, dropping expired ones and the oldest beyond `maxTokens`. */
  issue (id: string, token: StoredToken, maxTokens: number): Promise<void>
  /**
   * Looks up the token whose hash is `hash` for `id` and, only when the outcome is
   * `'consumed'` (the rules of `findToken`), removes it, atomically.
   */
  consume (id: string, hash: string, path: string, now: number): Promise<ConsumeOutcome>
  /** Called when the Fastify instance closes. */
  close? (): Promise<void> | void
}
