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
import type { FastifyInstance } from 'fastify'
import '../types/fastify'
import { pickBackend } from './backends/index'
import { WebsocketGuardMissingDependency } from './errors'
import { guardHook, type GuardContext } from './guard'
import { resolveOptions, resolveRouteGuard, type FastifyWebsocketGuardOptions } from './options'
import { redactTokenLogs } from './redact'
import { socketLife, type SocketClosers } from './sockets/index'
import { lifecycleOptions } from './sockets/options'
import { tokenRouteHandler } from './token-route'

async function fastifyWebsocketGuard (fastify: FastifyInstance, options: FastifyWebsocketGuardOptions): Promise<void> {
  const opts = resolveOptions(options)
  if (!fastify.hasPlugin(opts.sessionPlugin)) {
    throw new WebsocketGuardMissingDependency(`fastify-websocket-guard needs ${opts.sessionPlugin}: register it before this plugin (or set the sessionPlugin option)`)
  }
  const decorator = {} as SocketClosers
  // TEMPORARY: { ...opts, ...lifecycleOptions(options) } becomes opts once wip-lib's options land
  const life = await socketLife(fastify, { ...opts, ...lifecycleOptions(options) }, pickBackend(opts), decorator)
  const ctx: GuardContext = { opts, backend: life.backend, sockets: life.tracker }

  fastify.decorateRequest('websocketGuard', null)
  fastify.decorate('websocketGuard', decorator)
  if (opts.redactLogs) redactTokenLogs(fastify, opts.queryParam, opts.protocolPrefix)
  fastify.addHook('onClose', async () => { await ctx.backend.close() })

  fastify.addHook('onRoute', (routeOptions) => {
    const route = resolveRouteGuard((routeOptions as { guard?: unknown }).guard, routeOptions.url, opts)
    if (route === null) return
    const existing = routeOptions.preValidation
    const hook = guardHook(ctx, route)
    // first, so that no route-level code sees an unchecked upgrade
    routeOptions.preValidation = existing === undefined ? [hook] : [hook].concat(existing as any)
  })

  if (opts.tokenRoute !== false) {
    fastify.get(opts.tokenRoute, { exposeHeadRoute: false }, tokenRouteHandler(ctx))
  }
}

const plugin = fp(fastifyWebsocketGuard, {
  fastify: '5.x',
  name: 'fastify-websocket-guard',
  dependencies: ['@fastify/websocket']
})

export default plugin
export { plugin as fastifyWebsocketGuard }
export type { FastifyWebsocketGuardOptions, GuardRouteOptions, SessionPluginName } from './options'
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
  WebsocketGuardBadRequest
} from './errors'
export { createOriginMatcher, type OriginEntry, type OriginMatcher, type OriginFunction, type OriginsOption } from './origin'
export { consumeWebsocketToken, issueWebsocketToken, type IssueOptions } from './backends/session'
export type { SessionLike } from './session'
export { memoryTokenStore, type MemoryTokenStore, type MemoryTokenStoreOptions } from './stores/memory'
export { redisTokenStore, type RedisTokenStoreOptions, type RedisClientLike } from './stores/redis'
export type { TokenStore, StoredToken, ConsumeOutcome, CloseBus, CloseListener, CloseMessage, CloseSubscription, MissedClose } from './stores/types'
