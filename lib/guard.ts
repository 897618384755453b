/**
 * The guard: a `preValidation` hook on every guarded route, run before the upgrade. Its data
 * path reads top to bottom: the origin decision, then exactly one presented token, consumed
 * by the backend, then the result on the request; any failure is refused (logged, reported
 * to `onReject`) and answered by Fastify with its status (403, or 503 from a store).
 */
import type { FastifyRequest, preValidationAsyncHookHandler } from 'fastify'
import type { TokenBackend } from './backends/index'
import { isRefusal, type Refusal, WebsocketGuardStoreUnavailable } from './errors'
import type { ResolvedOptions, RouteGuard } from './options'
import { upgradeOrigin } from './origin'
import { sessionOf } from './session'
import { GuardResult, type SocketTracker } from './sockets/index'
import type { SocketEntry } from './sockets/registry'
import { assertConsumed, pathOf, presentedToken } from './tokens'

/** `request.websocketGuard` on a guarded route that passed. */
export interface WebsocketGuardResult {
  /** the normalised allowed origin, or `null` when none was sent and that is allowed */
  readonly origin: string | null
  /** the consumed token, or `null` where the route checks no token */
  readonly token: string | null
  /** aborted, before the close frame is sent, when the guard closes the socket */
  readonly signal: AbortSignal
}

/** What every hook of one plugin instance shares, built once at registration. */
export interface GuardContext {
  opts: ResolvedOptions
  backend: TokenBackend
  /** the registry of the socket's life; `null` when the guard follows no socket */
  sockets: SocketTracker | null
}

export function guardHook (ctx: GuardContext, route: RouteGuard): preValidationAsyncHookHandler {
  return async function websocketGuard (request: FastifyRequest): Promise<void> {
    let entry: SocketEntry | null = null
    try {
      // 1. origin: a refused origin never reaches the token, so it consumes nothing
      const origin = await upgradeOrigin(route.origins, route.allowMissingOrigin, request)
      // the socket's life: registered before the token is consumed, so that no close of its
      // session can pass in between (lib/sockets/)
      if (ctx.sockets !== null) entry = ctx.sockets.reserve(request)
      // 2. token: exactly one presented, then consumed from the session's tokens
      const token = route.token ? await consumePresented(ctx, request) : null
      request.websocketGuard = entry === null ? new GuardResult(origin, token, null) : await (ctx.sockets as SocketTracker).admit(request, entry, origin, token)
    } catch (err) {
      if (entry !== null) ctx.sockets?.release(entry)
      if (isRefusal(err)) refuse(ctx.opts, request, err)
      throw err
    }
  }
}

async function consumePresented ({ opts, backend }: GuardContext, request: FastifyRequest): Promise<string> {
  const protocols = request.headers['sec-websocket-protocol']
  const presented = presentedToken(request.url, typeof protocols === 'string' ? protocols : undefined, opts.queryParam, opts.protocolPrefix)
  const session = sessionOf(request)
  if (session === null) assertConsumed('none-stored')
  await backend.consume(request, session as NonNullable<typeof session>, presented.token, pathOf(request.url))
  if (presented.viaProtocol) {
    // ws then selects one of the client's other protocols, never the token entry
    if (presented.protocols === undefined) delete request.headers['sec-websocket-protocol']
    else request.headers['sec-websocket-protocol'] = presented.protocols
  }
  return presented.token
}

const MAX_LOGGED_ORIGIN = 256

/** Logs a refusal (never a token) and reports it to `onReject`; the caller then throws it. */
export function refuse (opts: ResolvedOptions, request: FastifyRequest, error: Refusal): void {
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
