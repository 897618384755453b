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
  /**
   * Drops every outstanding token of `id`, atomically with respect to `consume`: a consume
   * that runs after it finds none. Called when a session ends or is closed by hand; a store
   * without it leaves those tokens to expire (each instance then refuses them by itself).
   */
  revoke? (id: string): Promise<void>
  /**
   * Carries closes between the instances that share this store. Without one, session and
   * user closes reach this instance's sockets only.
   */
  bus?: CloseBus
  /** Called when the Fastify instance closes. */
  close? (): Promise<void> | void
}

/**
 * A close carried between instances: the guarded sockets of one session group, or those whose
 * `identify` result was one user id, are to be closed with `code` and `reason`.
 */
export interface CloseMessage {
  scope: 'session' | 'user'
  /** the session group (a hash of the session id or a random id, never the session id), or the user id */
  id: string
  /** 4000–4999 */
  code: number
  reason: string
  /** a user close keeps the sockets of this session group */
  except: string | null
  /** the session ended: its group never holds a live socket again */
  ended: boolean
}

/** A close found in a marker: published while this instance may not have been listening. */
export interface MissedClose extends CloseMessage {
  /** when it was published (epoch ms, the publisher's clock) */
  at: number
}

export interface CloseListener {
  /** a close published by another instance */
  message (message: CloseMessage): void
  /**
   * The subscription is live again after a gap that began at `since` (epoch ms): closes
   * published in between may have been missed, so the listener reads the markers. Until the
   * promise resolves the gap stays open, and a rejection has the next ping try again.
   */
  resync (since: number): Promise<void>
  /**
   * The subscription lost its connection (`err` when the client said why; it reconnects by
   * itself), or a resync failed (it is tried again).
   */
  error (err: unknown): void
}

/** One instance's subscription to the closes of every instance that shares the store. */
export interface CloseSubscription {
  /** how long a marker outlives its close, in ms: a gap longer than this may have lost closes */
  readonly markerTTL: number
  /**
   * Hands `message` to every other subscribed instance and leaves a marker (for `markerTTL`)
   * that a disconnected one finds when it resyncs. Resolves once the store has taken both.
   */
  publish (message: CloseMessage): Promise<void>
  /** the markers of these session groups and user ids: the closes published for them lately */
  missed (groups: readonly string[], users: readonly string[]): Promise<MissedClose[]>
  /** unsubscribes and closes the subscription's connection */
  close (): Promise<void>
}

/** Carries closes between the instances that share a store (`TokenStore.bus`). */
export interface CloseBus {
  /** Starts delivering closes to `listener`; resolves once the subscription is live. */
  subscribe (listener: CloseListener): Promise<CloseSubscription>
}
