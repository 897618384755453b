/**
 * The app's session object, whichever plugin made it: @fastify/session's `Session` (data as
 * own properties, with `get`/`set`), @fastify/secure-session's (only `get`/`set`), or a plain
 * object (the seed's functions accept one).
 */
import { hash, randomBytes } from 'node:crypto'
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

/** @fastify/session's session id; `undefined` for a cookie session or a plain object, which have none. */
export function sessionIdOf (session: SessionLike): string | undefined {
  const id = (session as { sessionId?: unknown }).sessionId
  return typeof id === 'string' ? id : undefined
}

/**
 * An id for `purpose` derived from @fastify/session's session id (a hash, never the id
 * itself), so that every request of one session agrees on it however they interleave (two
 * first token requests of tabs opening at once); `undefined` for a session without an id.
 */
export function derivedId (session: SessionLike, purpose: string): string | undefined {
  const id = sessionIdOf(session)
  return id === undefined ? undefined : hash('sha256', `fastify-websocket-guard:${purpose}${id}`, 'base64url').slice(0, 22)
}

/** A random id of the same length, where there is no session id to derive one from. */
export function randomId (): string {
  return randomBytes(16).toString('base64url')
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
