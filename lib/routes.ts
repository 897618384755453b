/**
 * Which routes are guarded, and the refusal of every upgrade the guard cannot vouch for.
 * The plugin sees routes through `onRoute`, so it misses those declared before it was
 * registered or outside its encapsulation context; failing open there would let one missing
 * `await` open sockets for any origin. So each route it sees is marked, and an upgrade is
 * refused (500) unless it went through a marked route: by this plugin's `onRequest` hook for
 * the routes of its context (Fastify computes a route's hooks at ready, so that hook reaches
 * routes declared earlier too), and, for upgrades of other contexts, at
 * `websocketServer.handleUpgrade`, which every upgrade of @fastify/websocket goes through.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest, HookHandlerDoneFunction, RouteOptions } from 'fastify'
import type { IncomingMessage } from 'node:http'
import type { Duplex } from 'node:stream'
import { publishUpgradeReject } from './diagnostics'
import { WebsocketGuardRouteNotGuarded } from './errors'
import { guardHook, type GuardContext } from './guard'
import { resolveRouteGuard } from './options'
import { upgradeWatched } from './sockets/connections'

/** On a route's `config`: the guard saw the route declared. */
const SEEN = Symbol('fastify-websocket-guard.seen')
/** On a raw upgrade request: it was routed to a route the guard saw. Shared by every copy. */
const VOUCHED = Symbol.for('fastify-websocket-guard.vouched')
/** On `websocketServer`: its `handleUpgrade` is already wrapped. */
const WRAPPED = Symbol.for('fastify-websocket-guard.wrapped')

const FIX = 'declare websocket routes after `await app.register(websocketGuard)`, in the context where it is registered or below it (or declare the route with guard: false)'

/** The `onRoute` hook: marks every route and adds the guard's hook to the guarded ones. */
export function onRoute (ctx: GuardContext): (routeOptions: RouteOptions) => void {
  return function guardRoute (routeOptions) {
    const options = routeOptions as RouteOptions & { guard?: unknown, websocket?: unknown, wsHandler?: unknown }
    const websocket = options.websocket === true || typeof options.wsHandler === 'function'
    routeOptions.config = { ...routeOptions.config, [SEEN]: true }
    const route = resolveRouteGuard(options.guard, websocket, routeOptions.url, ctx.opts)
    if (route === null) return
    const existing = routeOptions.preValidation
    const hook = guardHook(ctx, route, routeOptions.url)
    // first, so that no route-level code sees an unchecked upgrade
    routeOptions.preValidation = existing === undefined ? [hook] : [hook].concat(existing as any)
  }
}

/** The `onRequest` hook of the plugin's context: an upgrade of an unseen route is refused. */
export function vouchForRoute (ctx: GuardContext): (request: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction) => void {
  return function vouch (request, _reply, done) {
    if ((request as { ws?: unknown }).ws !== true) return done()
    const { config, url } = request.routeOptions
    if ((config as unknown as Record<symbol, unknown>)[SEEN] === true) {
      (request.raw as unknown as Record<symbol, unknown>)[VOUCHED] = true
      return done()
    }
    const error = new WebsocketGuardRouteNotGuarded(`Websocket route ${String(url)} is not guarded: ${FIX}`)
    if (url !== undefined && !ctx.unguardedRoutes.has(url)) {
      ctx.unguardedRoutes.add(url)
      request.log.error({ code: error.code, route: url }, `fastify-websocket-guard: refused an upgrade of ${url}, which was declared where the guard could not see it; ${FIX}`)
    }
    ctx.refuse(request, error)
    done(error)
  }
}

// bounds the log-once memory of paths outside the plugin's context
const MAX_REMEMBERED_PATHS = 1024

/** The last line: an upgrade that no guard vouched for never reaches `ws`. */
export function refuseUnvouchedUpgrades (fastify: FastifyInstance, ctx: GuardContext): void {
  // @fastify/websocket, a dependency checked at registration, decorates it
  const wss = (fastify as unknown as { websocketServer: Record<string | symbol, any> }).websocketServer
  if (wss[WRAPPED] === true) return
  const handleUpgrade = wss.handleUpgrade as (req: IncomingMessage, socket: Duplex, head: Buffer, cb: (...args: unknown[]) => void) => void
  wss[WRAPPED] = true
  wss.handleUpgrade = function guardedHandleUpgrade (req: IncomingMessage, socket: Duplex, head: Buffer, cb: (...args: unknown[]) => void) {
    if ((req as unknown as Record<symbol, unknown>)[VOUCHED] === true) {
      // the guard's listener leaves the connection while ws takes it (sockets/connections.ts)
      return upgradeWatched(this, socket, cb, (upgraded) => { handleUpgrade.call(this, req, socket, head, upgraded) })
    }
    // the path only: a query or fragment may hold a token
    const path = String(req.url).split(/[?#;]/, 1)[0] as string
    const error = new WebsocketGuardRouteNotGuarded(`Websocket route for ${path} is not guarded: ${FIX}`)
    if (!ctx.unguardedRoutes.has(path) && ctx.unguardedRoutes.size < MAX_REMEMBERED_PATHS) {
      ctx.unguardedRoutes.add(path)
      fastify.log.error({ code: error.code, path }, `fastify-websocket-guard: refused an upgrade of ${path}, whose route was declared outside the guard's encapsulation context; ${FIX}`)
    }
    publishUpgradeReject(req, path, error)
    const body = JSON.stringify({ statusCode: 500, code: error.code, error: 'Internal Server Error', message: error.message })
    socket.end(`HTTP/1.1 500 Internal Server Error\r\nConnection: close\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`)
  }
}
