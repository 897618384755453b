/**
 * The token-issuing route: `GET {tokenRoute}` answers `{ token, expiresAt }` to a same-origin
 * request with a session, optionally bound to `?path=`.
 */
import type { FastifyReply, FastifyRequest, RouteHandlerMethod } from 'fastify'
import { isRefusal, WebsocketGuardBadRequest, WebsocketGuardNoSession } from './errors'
import type { GuardContext } from './guard'
import { refuse } from './guard'
import { isRequestPath, REQUEST_PATH_RULE } from './options'
import { checkTokenRequestOrigin } from './origin'
import { sessionOf } from './session'
import type { IssuedToken } from './tokens'

export function tokenRouteHandler (ctx: GuardContext): RouteHandlerMethod {
  const { opts, backend } = ctx
  return async function issueWebsocketTokenRoute (request: FastifyRequest, reply: FastifyReply): Promise<IssuedToken> {
    try {
      await checkTokenRequestOrigin(opts.origins, request)
      const path = boundPath(request.query)
      const session = sessionOf(request)
      if (session === null) throw new WebsocketGuardNoSession(`fastify-websocket-guard: no session on the token route; is ${opts.sessionPlugin} scoped to it?`)
      const issued = await backend.issue(request, session, path)
      reply.header('cache-control', 'no-store')
      return issued
    } catch (err) {
      if (isRefusal(err)) refuse(opts, request, err)
      throw err
    }
  }
}

function boundPath (query: unknown): string | null {
  const path = (query as Record<string, unknown> | undefined)?.path
  if (path === undefined) return null
  if (!isRequestPath(path)) throw new WebsocketGuardBadRequest(`path must be ${REQUEST_PATH_RULE}`)
  return path
}
