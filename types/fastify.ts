/**
 * Fastify type augmentation: the route option `guard` and `request.websocketGuard`.
 * Loaded by the package's entry point, so importing the plugin is enough.
 */
import type { GuardRouteOptions } from '../lib/options'
import type { WebsocketGuardResult } from '../lib/guard'
import type { WebsocketGuardDecorator } from '../lib/index'

declare module 'fastify' {
  interface RouteShorthandOptions {
    /** Check `Origin` and consume a one-time token before the upgrade (fastify-websocket-guard). */
    guard?: boolean | GuardRouteOptions
  }
  interface FastifyInstance {
    /** issue tokens from your own routes, close sessions' and users' sockets (fastify-websocket-guard) */
    websocketGuard: WebsocketGuardDecorator
  }
  interface FastifyRequest {
    /** `null` on unguarded routes; the checks' result on a guarded route that passed. */
    websocketGuard: WebsocketGuardResult | null
  }
}

export {}
