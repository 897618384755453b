/**
 * fastify-websocket-guard: protects @fastify/websocket routes against Cross-Site WebSocket
 * Hijacking. An upgrade on a guarded route passes two checks in a `preValidation` hook,
 * before the socket opens: its `Origin` is allowed, and it presents a one-time token that
 * this session was issued, which is consumed. Anything else is refused.
 *
 * The plugin below only wires things, in this order: options, dependencies, backend,
 * decorators, log redaction, the hook on every guarded route, the token route.
 */
import fp from 'fastify-plugin'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import '../types/fastify'
import { pickBackend } from './backends/index'
import { WebsocketGuardMissingDependency } from './errors'
import { refuser, type GuardContext } from './guard'
import { resolveOptions, type FastifyWebsocketGuardOptions } from './options'
import { createUrlRedactor, redactTokenLogs } from './redact'
import { onRoute, refuseUnvouchedUpgrades, vouchForRoute } from './routes'
import { socketLife, type SocketClosers } from './sockets/index'
import { issueTokenFor, tokenRouteHandler } from './token-route'
import type { IssuedToken } from './tokens'

/** `fastify.websocketGuard`: issueToken, and closeSession / closeUser from the socket's life. */
export interface WebsocketGuardDecorator extends SocketClosers {
  /** issues a token into `request`'s session, as the token route does; `path` binds it */
  issueToken (request: FastifyRequest, options?: { path?: string | null }): Promise<IssuedToken>
}

async function fastifyWebsocketGuard (fastify: FastifyInstance, options: FastifyWebsocketGuardOptions): Promise<void> {
  const opts = resolveOptions(options)
  for (const dependency of [opts.sessionPlugin, '@fastify/websocket']) {
    if (!fastify.hasPlugin(dependency)) {
      throw new WebsocketGuardMissingDependency(`fastify-websocket-guard needs ${dependency}: register it before this plugin${dependency === opts.sessionPlugin ? ' (or set the sessionPlugin option)' : ''}`)
    }
  }
  const redactUrl = createUrlRedactor(opts.queryParam)
  const decorator = {} as WebsocketGuardDecorator
  // the socket's life (lib/sockets/): the registry, session ends, the close bus; it adds
  // closeSession and closeUser to the decorator
  const life = await socketLife(fastify, opts, pickBackend(opts), decorator)
  const ctx: GuardContext = {
    opts,
    backend: life.backend,
    sockets: life.tracker,
    redactUrl,
    unguardedRoutes: new Set(),
    warnedInsecureCookie: false,
    refuse: refuser(opts, redactUrl)
  }

  fastify.decorateRequest('websocketGuard', null)
  decorator.issueToken = issueTokenFor(ctx)
  fastify.decorate('websocketGuard', decorator)
  if (opts.redactLogs) redactTokenLogs(fastify, opts.queryParam, opts.protocolPrefix)
  fastify.addHook('onClose', async () => { await ctx.backend.close() })

  // every upgrade goes through a route the guard saw, or is refused
  fastify.addHook('onRoute', onRoute(ctx))
  fastify.addHook('onRequest', vouchForRoute(ctx))
  refuseUnvouchedUpgrades(fastify, ctx)

  if (opts.tokenRoute !== false) {
    fastify.route({ exposeHeadRoute: false, ...opts.tokenRouteOptions, method: 'GET', url: opts.tokenRoute, handler: tokenRouteHandler(ctx) })
  }
}

const plugin = fp(fastifyWebsocketGuard, {
  fastify: '5.x',
  name: 'fastify-websocket-guard'
})

export default plugin
export { plugin as fastifyWebsocketGuard }
export type { FastifyWebsocketGuardOptions, GuardRouteOptions, SessionPluginName, RejectDetails } from './options'
export type { WebsocketGuardResult } from './guard'
export type { CloseOptions, SocketClosers } from './sockets/index'
export {
  WebsocketSecurityError,
  WebsocketOriginNotAllowed,
  NoWebsocketTokenPresented,
  NoWebsocketTokenStored,
  WebsocketTokenMismatch,
  WebsocketTokenExpired,
  WebsocketGuardStoreUnavailable,
  WebsocketGuardBadRequest,
  WebsocketGuardNoSession,
  WebsocketGuardRouteNotGuarded,
  WebsocketGuardMissingDependency,
  WebsocketGuardOptionError
} from './errors'
export { createOriginMatcher, type OriginEntry, type OriginMatcher, type OriginFunction, type OriginsOption } from './origin'
export { consumeWebsocketToken, issueWebsocketToken, type IssueOptions } from './backends/session'
export type { SessionLike } from './session'
export { memoryTokenStore, type MemoryTokenStore, type MemoryTokenStoreOptions } from './stores/memory'
export { redisTokenStore, type RedisTokenStore, type RedisTokenStoreOptions, type RedisDurability, type RedisClientLike } from './stores/redis'
export type { TokenStore, StoredToken, ConsumeOutcome, CloseBus, CloseListener, CloseMessage, CloseSubscription, MissedClose } from './stores/types'
