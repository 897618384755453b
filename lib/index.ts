/**
 * fastify-websocket-guard: protects @fastify/websocket routes against Cross-Site WebSocket
 * Hijacking. An upgrade on a route declared with `guard` passes two checks in a
 * `preValidation` hook, before the socket opens: its `Origin` is allowed, and it presents a
 * one-time token that this session was issued, which is consumed. Anything else is a 403.
 */
import { randomBytes } from 'node:crypto'
import fp from 'fastify-plugin'
import type { FastifyInstance, FastifyReply, FastifyRequest, preValidationAsyncHookHandler } from 'fastify'
import '../types/fastify'
import {
  WebsocketGuardBadRequest,
  WebsocketGuardStoreUnavailable,
  WebsocketOriginNotAllowed,
  NoWebsocketTokenStored,
  WebsocketSecurityError
} from './errors'
import { normaliseOrigin } from './origin'
import { resolveOptions, resolveRouteGuard, type FastifyWebsocketGuardOptions, type OriginCheck, type ResolvedOptions, type RouteGuard } from './options'
import { redactTokenLogs } from './redact'
import { assertConsumed, hashToken, pathOf, presentedToken, type TokenStore } from './tokens'
import { consumeInSession, issueInSession, newToken, readSession, SpentTokens, writeSession, type IssuedToken, type SessionLike } from './stores/session'
import { memoryTokenStore } from './stores/memory'

/** Where a session's tokens are issued into and consumed from; picked once, at registration. */
interface TokenBackend {
  /** whether `consume` saves the session itself (and a 503 from it means the session store failed) */
  readonly savesSession: boolean
  issue (session: SessionLike, path: string | null): Promise<IssuedToken>
  consume (session: SessionLike, token: string, path: string): Promise<void>
  close (): Promise<void> | void
}

/** Rejects a store call that missed its deadline. The error is made only then: capturing
 * its stack on every call cost more than the rest of the guard together. */
function missedDeadline (reject: (err: Error) => void, timeout: number): void {
  reject(new WebsocketGuardStoreUnavailable(`Websocket token store did not answer within ${timeout} ms`))
}

// Already settled: a store call that has answered too wins a race against it.
const PENDING = Symbol('pending')
const stillPending = Promise.resolve(PENDING)

/** Runs a store call with a deadline; any failure becomes a 503, never a pass. */
async function storeCall<T> (call: Promise<T> | T, timeout: number): Promise<T> {
  // A call that has already settled (a synchronous session store) needs no deadline: arming
  // and clearing a timer for each upgrade cost more than checking the token.
  const early = await Promise.race([call, stillPending]).catch(storeUnavailable)
  if (early !== PENDING) return early as T
  let timer: NodeJS.Timeout | undefined
  const deadline = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(missedDeadline, timeout, reject, timeout)
  })
  try {
    // a catch that always throws, then a finally, leaves V8 an unreachable branch to count
    return await Promise.race([call, deadline]).catch(storeUnavailable)
  } finally {
    clearTimeout(timer)
  }
}

function storeUnavailable (err: unknown): never {
  throw err instanceof WebsocketGuardStoreUnavailable ? err : new WebsocketGuardStoreUnavailable(undefined, { cause: err })
}

/** Tokens inside the session itself (@fastify/session without a store). */
function sessionBackend (opts: ResolvedOptions): TokenBackend {
  const spent = new SpentTokens()
  return {
    savesSession: true,
    async issue (session, path) {
      return issueInSession(session, opts.sessionKey, opts.tokenTTL, opts.maxTokens, path)
    },
    async consume (session, token, path) {
      consumeInSession(session, opts.sessionKey, token, path, spent)
      // @fastify/session saves in onSend, which a successful upgrade never reaches
      const save = (session as { save?: () => Promise<void> }).save
      if (typeof save === 'function') await storeCall(save.call(session), opts.storeTimeout)
    },
    close () {}
  }
}

/** Tokens in a server-side store, found through a random id kept in the session. */
function storeBackend (opts: ResolvedOptions, store: TokenStore, owned: boolean): TokenBackend {
  return {
    savesSession: false,
    async issue (session, path) {
      let id = readSession(session, opts.sessionKey)
      if (typeof id !== 'string') {
        id = randomBytes(16).toString('base64url')
        writeSession(session, opts.sessionKey, id)
      }
      const now = Date.now()
      const { issued, record } = newToken(opts.tokenTTL, path, now)
      await storeCall(store.issue(id as string, record, opts.maxTokens), opts.storeTimeout)
      return issued
    },
    async consume (session, token, path) {
      const id = readSession(session, opts.sessionKey)
      if (typeof id !== 'string') throw new NoWebsocketTokenStored()
      assertConsumed(await storeCall(store.consume(id, hashToken(token), path, Date.now()), opts.storeTimeout))
    },
    async close () {
      // a store the user passed in is theirs to close
      if (owned) await store.close?.()
    }
  }
}

function pickBackend (opts: ResolvedOptions): TokenBackend {
  if (opts.store !== undefined) return storeBackend(opts, opts.store, false)
  // A cookie session cannot forget a token: a replayed old cookie would bring it back.
  if (opts.sessionPlugin === '@fastify/secure-session') return storeBackend(opts, memoryTokenStore(), true)
  return sessionBackend(opts)
}

/** The normalised origin when `check` allows it, `null` otherwise. */
async function allowedOrigin (check: OriginCheck, origin: string, request: FastifyRequest): Promise<string | null> {
  const normalised = normaliseOrigin(origin)
  if (normalised === null) return null
  switch (check.kind) {
    case 'list':
      return check.match(normalised) ? normalised : null
    case 'function':
      return (await check.fn(origin, request)) === true ? normalised : null
    default:
      return normaliseOrigin(`${request.protocol}://${request.host}`) === normalised ? normalised : null
  }
}

const MAX_LOGGED_ORIGIN = 256
const MAX_BOUND_PATH = 1024

function sessionOf (request: FastifyRequest): SessionLike | null {
  const session = (request as unknown as { session?: unknown }).session
  return typeof session === 'object' && session !== null ? session as SessionLike : null
}

async function fastifyWebsocketGuard (fastify: FastifyInstance, options: FastifyWebsocketGuardOptions): Promise<void> {
  const opts = resolveOptions(options)
  if (!fastify.hasPlugin(opts.sessionPlugin)) {
    throw new Error(`fastify-websocket-guard needs ${opts.sessionPlugin}: register it before this plugin (or set the sessionPlugin option)`)
  }
  const backend = pickBackend(opts)

  fastify.decorateRequest('websocketGuard', null)
  if (opts.redactLogs) redactTokenLogs(fastify, opts.queryParam, opts.protocolPrefix)
  fastify.addHook('onClose', async () => { await backend.close() })

  function refuse (request: FastifyRequest, error: WebsocketSecurityError | WebsocketGuardStoreUnavailable): void {
    const origin = request.headers.origin
    const details = {
      code: error.code,
      route: request.routeOptions.url,
      origin: typeof origin === 'string' ? origin.slice(0, MAX_LOGGED_ORIGIN) : null
    }
    if (error instanceof WebsocketGuardStoreUnavailable) {
      request.log.error({ ...details, err: error.cause }, 'websocket guard failed closed: token store unavailable')
    } else if (opts.logLevel !== 'silent') {
      // Fastify's logger when logging is off has no `silent` method: calling it would turn
      // every refusal into a 500
      request.log[opts.logLevel](details, 'websocket guard refused the request')
    }
    if (opts.onReject !== undefined) {
      try {
        opts.onReject(error, request)
      } catch (err) {
        request.log.error({ err }, 'websocket guard onReject threw')
      }
    }
  }

  function isRefusal (err: unknown): err is WebsocketSecurityError | WebsocketGuardStoreUnavailable {
    return err instanceof WebsocketSecurityError || err instanceof WebsocketGuardStoreUnavailable
  }

  function guardHook (route: RouteGuard): preValidationAsyncHookHandler {
    return async function websocketGuard (request: FastifyRequest): Promise<void> {
      try {
        // 1. origin: a refused origin never reaches the token, so it consumes nothing
        const header = request.headers.origin
        let origin: string | null = null
        if (header === undefined) {
          if (!route.allowMissingOrigin) throw new WebsocketOriginNotAllowed('Origin header missing')
        } else {
          origin = await allowedOrigin(route.origins, header, request)
          if (origin === null) throw new WebsocketOriginNotAllowed()
        }
        // 2. token: exactly one presented, then consumed from the session's tokens
        let token: string | null = null
        if (route.token) {
          const protocols = request.headers['sec-websocket-protocol']
          const presented = presentedToken(request.url, typeof protocols === 'string' ? protocols : undefined, opts.queryParam, opts.protocolPrefix)
          const session = sessionOf(request)
          if (session === null) throw new NoWebsocketTokenStored()
          await backend.consume(session, presented.token, pathOf(request.url))
          if (presented.viaProtocol) {
            // ws then selects one of the client's other protocols, never the token entry
            if (presented.protocols === undefined) delete request.headers['sec-websocket-protocol']
            else request.headers['sec-websocket-protocol'] = presented.protocols
          }
          token = presented.token
        }
        request.websocketGuard = { origin, token }
      } catch (err) {
        if (err instanceof WebsocketGuardStoreUnavailable && backend.savesSession) {
          // The session store just failed or hung on our save. @fastify/session would try the
          // same save again in onSend, then answer with the store's own error instead of this
          // 503, or never answer at all.
          (request as unknown as { session: unknown }).session = null
        }
        if (isRefusal(err)) refuse(request, err)
        throw err
      }
    }
  }

  fastify.addHook('onRoute', (routeOptions) => {
    const route = resolveRouteGuard((routeOptions as { guard?: unknown }).guard, routeOptions.url, opts)
    if (route === null) return
    const existing = routeOptions.preValidation
    const hook = guardHook(route)
    // first, so that no route-level code sees an unchecked upgrade
    routeOptions.preValidation = existing === undefined ? [hook] : [hook].concat(existing as any)
  })

  function boundPath (query: unknown): string | null {
    const path = (query as Record<string, unknown> | undefined)?.path
    if (path === undefined) return null
    if (typeof path !== 'string' || !path.startsWith('/') || path.length > MAX_BOUND_PATH || /[?#\s]/.test(path)) {
      throw new WebsocketGuardBadRequest(`path must be one request path starting with / (at most ${MAX_BOUND_PATH} characters, no query)`)
    }
    return path
  }

  async function issueToken (request: FastifyRequest, reply: FastifyReply): Promise<IssuedToken> {
    try {
      // A cross-site page may make the browser send this request, but must get no token. A
      // same-site one (a sibling subdomain's <img> or no-cors fetch) sends no Origin yet could
      // make us issue tokens that evict the user's pending ones: it must show an allowed Origin.
      const site = request.headers['sec-fetch-site']
      const header = request.headers.origin
      if (site !== undefined && site !== 'same-origin' && site !== 'none' &&
          (header === undefined || site.includes('cross-site'))) {
        throw new WebsocketOriginNotAllowed('Cross-site token request')
      }
      if (header !== undefined && await allowedOrigin(opts.origins, header, request) === null) {
        throw new WebsocketOriginNotAllowed()
      }
      const path = boundPath(request.query)
      const session = sessionOf(request)
      if (session === null) throw new Error(`fastify-websocket-guard: no session on the token route; is ${opts.sessionPlugin} scoped to it?`)
      const issued = await backend.issue(session, path)
      reply.header('cache-control', 'no-store')
      return issued
    } catch (err) {
      if (isRefusal(err)) refuse(request, err)
      throw err
    }
  }

  if (opts.tokenRoute !== false) {
    fastify.get(opts.tokenRoute, { exposeHeadRoute: false }, issueToken)
  }
}

const plugin = fp(fastifyWebsocketGuard, {
  fastify: '5.x',
  name: 'fastify-websocket-guard',
  dependencies: ['@fastify/websocket']
})

export default plugin
export { plugin as fastifyWebsocketGuard }
export type { FastifyWebsocketGuardOptions, GuardRouteOptions, WebsocketGuardResult, OriginFunction, OriginsOption, SessionPluginName } from './options'
export {
  WebsocketSecurityError,
  WebsocketOriginNotAllowed,
  NoWebsocketTokenPresented,
  NoWebsocketTokenStored,
  WebsocketTokenMismatch,
  WebsocketTokenExpired,
  WebsocketGuardStoreUnavailable,
  WebsocketGuardBadRequest
} from './errors'
export { createOriginMatcher, type OriginEntry, type OriginMatcher } from './origin'
export { consumeWebsocketToken, issueWebsocketToken, type IssueOptions, type SessionLike } from './stores/session'
export { memoryTokenStore, type MemoryTokenStore, type MemoryTokenStoreOptions } from './stores/memory'
export { redisTokenStore, type RedisTokenStoreOptions, type RedisClientLike } from './stores/redis'
export type { TokenStore, StoredToken, ConsumeOutcome } from './tokens'
