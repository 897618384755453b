/**
 * The guard: a `preValidation` hook on every guarded route, run before the upgrade. Its data
 * path reads top to bottom: the origin decision, then exactly one presented token, consumed
 * by the backend, then the result on the request; any failure is refused (logged, reported
 * to `onReject`) and answered by Fastify with its status (403, 503 or 500).
 */
import type { FastifyRequest, HookHandlerDoneFunction, preValidationHookHandler } from 'fastify'
import type { TokenBackend } from './backends/index'
import { publishAccept, publishReject } from './diagnostics'
import { isRefusal, NoWebsocketTokenStored, type Refusal, WebsocketGuardNoSession, WebsocketGuardStoreUnavailable, WebsocketOriginNotAllowed } from './errors'
import type { ResolvedOptions, RouteGuard } from './options'
import { upgradeOrigin } from './origin'
import { sessionOf } from './session'
import { GuardResult, type SocketTracker } from './sockets/index'
import type { SocketEntry } from './sockets/registry'
import { pathOf, presentedToken, type PresentedToken } from './tokens'
import { isThenable } from './deadline'

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
  /** the request URL with tokens redacted, for `onReject` */
  redactUrl: (url: string) => string
  /** routes (or paths) whose unguarded upgrades were already logged */
  unguardedRoutes: Set<string>
  /** whether the Secure-cookie-over-http warning was logged */
  warnedInsecureCookie: boolean
  /** logs and reports a refusal; the caller then throws it */
  refuse: (request: FastifyRequest, error: Refusal) => void
}

/**
 * The hook is callback-style: where nothing waits (an allow-list or same-origin check, a
 * store that answers at once) the whole check runs synchronously, with no promise made.
 */
export function guardHook (ctx: GuardContext, route: RouteGuard, url: string): preValidationHookHandler {
  return function websocketGuard (request, _reply, done) {
    // a plain HTTP request to the route is not checked and consumes nothing
    if ((request as { ws?: unknown }).ws !== true) return done()
    let origin: string | null | Promise<string>
    try {
      // 1. origin: a refused origin never reaches the token, so it consumes nothing
      origin = upgradeOrigin(route.origins, route.allowMissingOrigin, request)
    } catch (err) {
      return refused(ctx, request, null, err, done)
    }
    if (isThenable(origin)) {
      origin.then((allowed) => { checkToken(ctx, route, url, request, allowed, done) }, (err: unknown) => { refused(ctx, request, null, err, done) })
    } else {
      checkToken(ctx, route, url, request, origin, done)
    }
  }
}

/** 2. token: exactly one presented, then consumed from the session's tokens; then the result. */
function checkToken (ctx: GuardContext, route: RouteGuard, url: string, request: FastifyRequest, origin: string | null, done: HookHandlerDoneFunction): void {
  let entry: SocketEntry | null = null
  let presented: PresentedToken | null = null
  let consumed: Promise<void> | void = undefined
  try {
    // the socket's life: registered before the token is consumed, so that no close of its
    // session can pass in between (lib/sockets/)
    if (ctx.sockets !== null) entry = ctx.sockets.reserve(request, url)
    if (route.token) {
      presented = presentedOf(ctx, request)
      consumed = consumePresented(ctx, request, presented.token)
    }
  } catch (err) {
    return refused(ctx, request, entry, cookieless(err, request), done)
  }
  if (isThenable(consumed)) {
    consumed.then(() => { admitted(ctx, request, origin, presented, entry, done) }, (err: unknown) => { refused(ctx, request, entry, cookieless(err, request), done) })
  } else {
    admitted(ctx, request, origin, presented, entry, done)
  }
}

/** 3. the result on the request, once the socket's life (if followed) has admitted it. */
function admitted (ctx: GuardContext, request: FastifyRequest, origin: string | null, presented: PresentedToken | null, entry: SocketEntry | null, done: HookHandlerDoneFunction): void {
  if (presented?.viaProtocol === true) {
    // ws then selects one of the client's other protocols, never the token entry
    // (never empty: a token entry offered alone was refused)
    const protocols = presented.protocols as string
    const headers = request.raw.headers
    headers['sec-websocket-protocol'] = protocols
    if (request.headers !== headers) request.headers = { ...request.headers, 'sec-websocket-protocol': protocols }
  }
  const token = presented === null ? null : presented.token
  if (entry === null) return accept(ctx, request, new GuardResult(origin, token, null), token, done)
  let result: GuardResult | Promise<GuardResult>
  try {
    result = (ctx.sockets as SocketTracker).admit(request, entry, origin, token)
  } catch (err) {
    return refused(ctx, request, entry, err, done)
  }
  if (!isThenable(result)) return accept(ctx, request, result, token, done)
  result.then(
    (admitted) => { accept(ctx, request, admitted, token, done) },
    (err: unknown) => { refused(ctx, request, entry, err, done) }
  )
}

function accept (ctx: GuardContext, request: FastifyRequest, result: GuardResult, token: string | null, done: HookHandlerDoneFunction): void {
  request.websocketGuard = result
  publishAccept(request, token, ctx.opts.queryParam)
  done()
}

function refused (ctx: GuardContext, request: FastifyRequest, entry: SocketEntry | null, err: unknown, done: HookHandlerDoneFunction): void {
  if (entry !== null) ctx.sockets?.release(entry)
  if (isRefusal(err)) ctx.refuse(request, err)
  done(err as Error)
}

function presentedOf ({ opts }: GuardContext, request: FastifyRequest): PresentedToken {
  // the raw headers are what the upgrade reads, whatever the app did to request.headers
  const protocols = request.raw.headers['sec-websocket-protocol']
  return presentedToken(request.url, typeof protocols === 'string' ? protocols : undefined, opts.queryParam, opts.protocolPrefix)
}

function consumePresented ({ opts, backend }: GuardContext, request: FastifyRequest, token: string): Promise<void> | void {
  const session = sessionOf(request, opts.sessionKey)
  if (session === null) {
    throw new WebsocketGuardNoSession(`fastify-websocket-guard: this upgrade has no usable session; is ${opts.sessionPlugin} registered for it, and does its cookie's path cover ${pathOf(request.url).split(/[#;]/, 1)[0] as string}?`)
  }
  return backend.consume(request, session, token, pathOf(request.url))
}

/** The commonest first-hour mistake: a Secure cookie over http, or a path that misses. */
function cookieless (err: unknown, request: FastifyRequest): unknown {
  return err instanceof NoWebsocketTokenStored && request.headers.cookie === undefined ? new NoWebsocketTokenStored(NO_COOKIE) : err
}

const NO_COOKIE = 'No websocket token in session: the upgrade carried no session cookie (over plain http the session cookie must not be Secure, and its path must cover this route)'


const MAX_LOGGED_ORIGIN = 256

/** Logs a refusal (never a token) and reports it to `onReject`, whose failures change nothing. */
export function refuser (opts: ResolvedOptions, redactUrl: (url: string) => string): GuardContext['refuse'] {
  return function refuse (request, error) {
    publishReject(request, error)
    const origin = request.headers.origin
    const details: Record<string, unknown> = {
      code: error.code,
      route: request.routeOptions.url,
      origin: typeof origin === 'string' ? origin.slice(0, MAX_LOGGED_ORIGIN) : null
    }
    if (error instanceof WebsocketOriginNotAllowed && error.expected !== undefined) details.expected = error.expected
    if (error.statusCode !== 403) {
      const what = error instanceof WebsocketGuardStoreUnavailable ? 'failed closed: token store unavailable' : 'refused the request: the app is wired so that it cannot check'
      request.log.error({ ...details, err: error.cause ?? error }, `websocket guard ${what}`)
    } else if (opts.logLevel !== 'silent') {
      // Fastify's logger when logging is off has no `silent` method: calling it would turn
      // every refusal into a 500
      request.log[opts.logLevel](details, 'websocket guard refused the request')
    }
    if (opts.onReject === undefined) return
    try {
      const result = opts.onReject(error, request, { url: redactUrl(request.url) }) as unknown
      if (typeof (result as Promise<void> | undefined)?.then === 'function') {
        (result as Promise<void>).then(undefined, (err: unknown) => { request.log.error({ err }, 'websocket guard onReject rejected') })
      }
    } catch (err) {
      request.log.error({ err }, 'websocket guard onReject threw')
    }
  }
}
