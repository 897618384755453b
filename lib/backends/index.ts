/**
 * Where a session's tokens are issued into and consumed from, picked once at registration:
 * the session itself (@fastify/session without a `store`), or a server-side store found
 * through a random id kept in the session. The guard and the token route talk to a backend
 * without knowing which one it is.
 */
import type { FastifyRequest } from 'fastify'
import type { ResolvedOptions } from '../options'
import type { SessionLike } from '../session'
import type { IssuedToken } from '../tokens'
import { memoryTokenStore } from '../stores/memory'
import { sessionBackend } from './session'
import { storeBackend } from './store'

export interface TokenBackend {
  /** Synchronous where nothing had to wait: a promise only for a store that did not answer at once. */
  issue (request: FastifyRequest, session: SessionLike, path: string | null): Promise<IssuedToken> | IssuedToken
  /** Consumes `token` or throws the refusal: a security error, or a 503 when a store failed. */
  consume (request: FastifyRequest, session: SessionLike, token: string, path: string): Promise<void> | void
  /**
   * Makes the tokens that `stored` names (what `session` held under sessionKey, read before
   * the session plugin cleared it) unusable, in every copy of the session.
   */
  revoke (session: SessionLike, stored: unknown): Promise<void>
  /**
   * A cookie session is written (its first write is the login): what it will need to find
   * its tokens goes with that write, so that first token requests made at once agree on it.
   */
  stamp? (session: SessionLike): void
  close (): Promise<void> | void
}

export function pickBackend (opts: ResolvedOptions): TokenBackend {
  if (opts.store !== undefined) return storeBackend(opts, opts.store, false)
  // A cookie session cannot forget a token: a replayed old cookie would bring it back.
  if (opts.sessionPlugin === '@fastify/secure-session') return storeBackend(opts, memoryTokenStore(), true)
  return sessionBackend(opts)
}
