/**
 * The app's session object, whichever plugin made it: @fastify/session's `Session` (data as
 * own properties, with `get`/`set`), @fastify/secure-session's (only `get`/`set`), or a plain
 * object (the seed's functions accept one).
 */
import type { FastifyRequest } from 'fastify'

/**
 * A @fastify/session or @fastify/secure-session session, or a plain object. Method syntax on
 * purpose: their `get`/`set` take `keyof SessionData`, which only a method's (bivariant)
 * parameters accept, so `request.session` type-checks as it is. `any` values so that an object
 * typed by an interface (which has no index signature) is accepted too.
 */
export type SessionLike = { get? (key: string): unknown, set? (key: string, value: unknown): void } | Record<string, any>

/**
 * The request's session, or `null` when the session plugin gave it none that can keep a
 * value. Outside its cookie's `path` (or for an absolute-form request target)
 * @fastify/session leaves a bare `{}`, which would take a token and forget it: only a session
 * with `get`/`set` can be written to. A plain object the app set may still hold tokens to
 * consume (the seed's convention), if it has the session key.
 */
export function sessionOf (request: FastifyRequest, sessionKey: string | null): SessionLike | null {
  const session = (request as unknown as { session?: Record<string, unknown> | null }).session
  if (typeof session !== 'object' || session === null) return null
  if (typeof session.get === 'function') return session as SessionLike
  return sessionKey !== null && sessionKey in session ? session as SessionLike : null
}

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
