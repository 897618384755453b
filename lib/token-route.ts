/**
 * Issuing tokens: the token route (`GET {tokenRoute}` answers `{ token, expiresAt }` to a
 * same-origin request with a session, optionally bound to `?path=`), and
 * `fastify.websocketGuard.issueToken` for the app's own routes and pages.
 */
import type { FastifyReply, FastifyRequest, RouteHandlerMethod } from 'fastify'
import { publishToken } from './diagnostics'
import { isRefusal, WebsocketGuardBadRequest, WebsocketGuardNoSession } from './errors'
import type { GuardContext } from './guard'
import { fail, isRequestPath, REQUEST_PATH_RULE } from './options'
import { checkTokenRequestOrigin } from './origin'
import { sessionOf } from './session'
import type { IssuedToken } from './tokens'
import { isThenable } from './deadline'

/**
 * Synchronous where nothing waits (an allow-list or same-origin check, a store that answers
 * at once): Fastify sends a returned value as it sends a resolved one.
 */
export function tokenRouteHandler (ctx: GuardContext): RouteHandlerMethod {
  return function issueWebsocketTokenRoute (request: FastifyRequest, reply: FastifyReply): IssuedToken | Promise<IssuedToken> {
    try {
      const checked = checkTokenRequestOrigin(ctx.opts.origins, request)
      const issued = isThenable(checked) ? checked.then(() => issueFromRoute(ctx, request, reply)) : issueFromRoute(ctx, request, reply)
      return isThenable(issued) ? issued.catch(refusedBy(ctx, request)) : issued
    } catch (err) {
      return refusedBy(ctx, request)(err)
    }
  }
}

function issueFromRoute (ctx: GuardContext, request: FastifyRequest, reply: FastifyReply): IssuedToken | Promise<IssuedToken> {
  reply.header('cache-control', 'no-store')
  return issueTokenNow(ctx, request, boundPath(request.query))
}

function refusedBy (ctx: GuardContext, request: FastifyRequest): (err: unknown) => never {
  return (err) => {
    if (isRefusal(err)) ctx.refuse(request, err)
    throw err
  }
}

function boundPath (query: unknown): string | null {
  const path = (query as Record<string, unknown> | undefined)?.path
  if (path === undefined) return null
  if (!isRequestPath(path)) throw new WebsocketGuardBadRequest(`path must be ${REQUEST_PATH_RULE}`)
  return path
}

/** `fastify.websocketGuard.issueToken`: what the token route does, from any route. */
export function issueTokenFor (ctx: GuardContext): (request: FastifyRequest, options?: { path?: string | null }) => Promise<IssuedToken> {
  return async function issueToken (request, options = {}) {
    const path = options?.path ?? null
    if (path !== null && !isRequestPath(path)) fail('path', `must be null or ${REQUEST_PATH_RULE}, got ${JSON.stringify(path)}`)
    return await issueTokenNow(ctx, request, path)
  }
}

function issueTokenNow (ctx: GuardContext, request: FastifyRequest, path: string | null): IssuedToken | Promise<IssuedToken> {
  const session = sessionOf(request, null)
  if (session === null) {
    throw new WebsocketGuardNoSession(`fastify-websocket-guard: no usable session on this request; is ${ctx.opts.sessionPlugin} registered for it, and does its cookie's path cover it?`)
  }
  warnInsecureCookie(ctx, request, session as { cookie?: { secure?: unknown } })
  const issued = ctx.backend.issue(request, session, path)
  if (isThenable(issued)) return issued.then((done) => published(request, path, done))
  return published(request, path, issued)
}

function published (request: FastifyRequest, path: string | null, issued: IssuedToken): IssuedToken {
  publishToken(request, path, issued.expiresAt)
  return issued
}

/**
 * @fastify/session never sends a `Secure` cookie over plain http, so the browser would keep
 * no session and every token issued here would be lost: say so, once.
 */
function warnInsecureCookie (ctx: GuardContext, request: FastifyRequest, session: { cookie?: { secure?: unknown } }): void {
  if (ctx.warnedInsecureCookie || session.cookie?.secure !== true || request.protocol === 'https') return
  ctx.warnedInsecureCookie = true
  request.log.warn({ code: 'WS_GUARD_INSECURE_COOKIE' }, 'fastify-websocket-guard: the session cookie is Secure but this request came over plain http, so the browser gets no session cookie and cannot use the token: set cookie.secure to \'auto\' (or false) for local http, keep it Secure in production')
}
