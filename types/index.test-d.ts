// Type tests, compiled (never run) by `tsc -p types/tsconfig.json` against the BUILT package,
// imported by its own name as users import it. Each `@ts-expect-error` must meet an error,
// or tsc fails: the public types must accept what users write and refuse their mistakes.
import Fastify, { type FastifyError, type FastifyRequest } from 'fastify'
import cookie from '@fastify/cookie'
import session from '@fastify/session'
import websocket, { type WebSocket } from '@fastify/websocket'
import { createClient } from 'redis'
import { Redis } from 'ioredis'
import websocketGuard, {
  fastifyWebsocketGuard,
  consumeWebsocketToken,
  createOriginMatcher,
  issueWebsocketToken,
  memoryTokenStore,
  redisTokenStore,
  NoWebsocketTokenPresented,
  NoWebsocketTokenStored,
  WebsocketGuardStoreUnavailable,
  WebsocketOriginNotAllowed,
  WebsocketSecurityError,
  WebsocketTokenExpired,
  WebsocketTokenMismatch,
  type ConsumeOutcome,
  type FastifyWebsocketGuardOptions,
  type GuardRouteOptions,
  type OriginMatcher,
  type StoredToken,
  type TokenStore,
  type WebsocketGuardResult
} from 'fastify-websocket-guard'

function expectType<T> (_value: T): void {}
/** true only when A and B are the same type, not merely assignable one way */
type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends (<T>() => T extends B ? 1 : 2) ? true : false
function expectExact<T extends true> (_proof?: T): void {}

async function main (): Promise<void> {
  const app = Fastify()
  await app.register(cookie)
  await app.register(session, { secret: 'a-secret-with-at-least-32-characters' })
  await app.register(websocket)

  // no options at all
  await app.register(websocketGuard)

  // every option, typed
  await app.register(websocketGuard, {
    origins: ['https://app.example.com', 'https://*.example.com', /^https:\/\/admin\.example\.com$/],
    allowMissingOrigin: false,
    tokenRoute: '/websocket-token',
    sessionPlugin: '@fastify/session',
    sessionKey: 'websocket_token',
    tokenTTL: 60_000,
    maxTokens: 8,
    queryParam: 'token',
    protocol: 'websocket-guard',
    store: memoryTokenStore({ sweepInterval: 30_000 }),
    storeTimeout: 1000,
    logLevel: 'warn',
    onReject (error, request) {
      expectType<string>(error.code)
      expectType<number>(error.statusCode)
      expectType<string>(error.message)
      expectType<FastifyRequest>(request)
      request.log.info({ code: error.code }, 'rejected')
    },
    redactLogs: true
  })

  // each form of `origins`
  await app.register(websocketGuard, { origins: 'https://app.example.com' })
  await app.register(websocketGuard, { origins: /^https:\/\/app\.example\.com$/ })
  await app.register(websocketGuard, { origins: (origin, request) => origin === `${request.protocol}://${request.host}` })
  await app.register(websocketGuard, { origins: async (origin) => origin.endsWith('.example.com') })
  await app.register(websocketGuard, { tokenRoute: false, sessionPlugin: '@fastify/secure-session', logLevel: 'silent' })
  await app.register(websocketGuard, { store: redisTokenStore({ client: createClient(), prefix: 'ws:' }) })
  await app.register(websocketGuard, { store: redisTokenStore({ client: new Redis({ lazyConnect: true }) }) })
  await app.register(fastifyWebsocketGuard, { tokenTTL: 30_000 })

  // an options object built apart is typed by the exported interface
  const options: FastifyWebsocketGuardOptions = { origins: ['https://app.example.com'], maxTokens: 4 }
  await app.register(websocketGuard, options)

  // a custom store: the TokenStore interface is implementable
  const custom: TokenStore = {
    async issue (id: string, token: StoredToken, maxTokens: number) {
      expectType<string>(id); expectType<string>(token.hash); expectType<number>(token.expiresAt)
      expectType<string | null>(token.path); expectType<number>(maxTokens)
    },
    async consume (id: string, hash: string, path: string, now: number): Promise<ConsumeOutcome> {
      return id === hash && path !== '' && now > 0 ? 'consumed' : 'mismatch'
    }
  }
  await app.register(websocketGuard, { store: custom })

  // mistakes do not compile
  // @ts-expect-error not a session plugin the guard knows
  await app.register(websocketGuard, { sessionPlugin: 'express-session' })
  // @ts-expect-error a TTL is a number of milliseconds
  await app.register(websocketGuard, { tokenTTL: '60s' })
  // @ts-expect-error maxTokens is a number
  await app.register(websocketGuard, { maxTokens: '8' })
  // @ts-expect-error origins is not a number
  await app.register(websocketGuard, { origins: 42 })
  // @ts-expect-error nor a list of numbers
  await app.register(websocketGuard, { origins: [443] })
  // @ts-expect-error an origin function answers a boolean
  await app.register(websocketGuard, { origins: (origin: string) => origin })
  // @ts-expect-error not a pino level
  await app.register(websocketGuard, { logLevel: 'loud' })
  // @ts-expect-error onReject gets (error, request)
  await app.register(websocketGuard, { onReject: (error: string) => { console.log(error) } })
  // @ts-expect-error onReject takes no third argument
  await app.register(websocketGuard, { onReject: (error: Error, request: FastifyRequest, extra: number) => { console.log(error, request, extra) } })
  // @ts-expect-error tokenRoute is a path or false, never true
  await app.register(websocketGuard, { tokenRoute: true })
  // @ts-expect-error allowMissingOrigin is a boolean
  await app.register(websocketGuard, { allowMissingOrigin: 'yes' })
  // @ts-expect-error redactLogs is a boolean
  await app.register(websocketGuard, { redactLogs: 1 })
  // @ts-expect-error a store needs issue and consume
  await app.register(websocketGuard, { store: { issue: async () => {} } })

  // the route option `guard`
  app.get('/chat', { websocket: true, guard: true }, (socket, request) => {
    expectType<WebSocket>(socket)
    expectType<WebsocketGuardResult | null>(request.websocketGuard)
    const result: WebsocketGuardResult | null = request.websocketGuard
    request.websocketGuard = result
    expectExact<Equal<typeof request.websocketGuard, WebsocketGuardResult | null>>()
    expectExact<Equal<WebsocketGuardResult, { readonly origin: string | null, readonly token: string | null, readonly signal: AbortSignal }>>()
    // @ts-expect-error null on an unguarded route: narrowing is required
    console.log(request.websocketGuard.origin)
    if (request.websocketGuard !== null) {
      expectType<string | null>(request.websocketGuard.origin)
      expectType<string | null>(request.websocketGuard.token)
      // @ts-expect-error the token may be null (a route with token: false)
      request.websocketGuard.token.length.toFixed()
      expectType<AbortSignal>(request.websocketGuard.signal)
      // @ts-expect-error there is nothing else on it
      console.log(request.websocketGuard.session)
    }
  })
  // the socket's life
  app.post('/logout-others', async (request) => {
    await app.websocketGuard.closeSession(request)
    await app.websocketGuard.closeSession(request, { code: 4000, reason: 'privileges changed' })
    await app.websocketGuard.closeUser('alice', { except: request })
    await app.websocketGuard.closeUser('alice', { code: 4403, reason: 'banned', except: null })
    // @ts-expect-error a user id is a string
    await app.websocketGuard.closeUser(42)
    // @ts-expect-error code is a number
    await app.websocketGuard.closeSession(request, { code: '4401' })
    // @ts-expect-error no such option
    await app.websocketGuard.closeUser('alice', { everywhere: true })
    return 'ok'
  })
  app.get('/origin-only', { websocket: true, guard: { origins: ['https://app.example.com'], allowMissingOrigin: true, token: false } }, (socket) => { socket.close() })
  app.get('/fn', { websocket: true, guard: { origins: async (origin, request) => origin.length > 0 && request.url !== '' } }, (socket) => { socket.close() })
  app.get('/off', { websocket: true, guard: false }, (socket, request) => { expectType<WebsocketGuardResult | null>(request.websocketGuard); socket.close() })
  app.get('/plain', { guard: true }, async (request) => request.websocketGuard?.origin ?? 'none')
  app.route({ method: 'GET', url: '/route', guard: { token: true }, handler: async () => 'ok' })
  const overrides: GuardRouteOptions = { allowMissingOrigin: false }
  app.get('/typed', { websocket: true, guard: overrides }, (socket) => { socket.close() })

  // @ts-expect-error guard is a boolean or an object
  app.get('/bad1', { websocket: true, guard: 'yes' }, (socket) => { socket.close() })
  // @ts-expect-error token is a boolean
  app.get('/bad2', { websocket: true, guard: { token: 'no' } }, (socket) => { socket.close() })
  // @ts-expect-error no such key
  app.get('/bad3', { websocket: true, guard: { tokens: false } }, (socket) => { socket.close() })
  // @ts-expect-error origins in a route is what it is at registration
  app.get('/bad4', { websocket: true, guard: { origins: 42 } }, (socket) => { socket.close() })
  // @ts-expect-error allowMissingOrigin is a boolean
  app.route({ method: 'GET', url: '/bad5', guard: { allowMissingOrigin: 'no' }, handler: async () => 'ok' })

  // the seed's functions, on a real @fastify/session session and on plain objects
  app.get('/issue', async (request) => {
    const token = issueWebsocketToken(request.session, { path: '/chat', tokenTTL: 30_000, maxTokens: 2, sessionKey: 'ws' })
    expectType<string>(token)
    return { token }
  })
  app.get('/consume', async (request) => {
    const token = consumeWebsocketToken(request.url, request.session)
    expectExact<Equal<typeof token, string>>()
    return consumeWebsocketToken(request.url, request.session, 'websocket_token')
  })
  const plain: Record<string, unknown> = {}
  expectType<string>(issueWebsocketToken(plain))
  // an object typed by an interface (no index signature) is a plain object too
  interface AppSession { userId: string, websocket_token?: unknown }
  const typed: AppSession = { userId: 'u' }
  expectType<string>(issueWebsocketToken(typed))
  expectType<string>(consumeWebsocketToken('/chat?token=abc', { websocket_token: 'abc' }))
  // @ts-expect-error the path comes first
  consumeWebsocketToken(plain, '/chat?token=abc')
  // @ts-expect-error a session is an object
  issueWebsocketToken('session')
  // @ts-expect-error tokenTTL is a number
  issueWebsocketToken(plain, { tokenTTL: '1m' })

  // createOriginMatcher
  const match = createOriginMatcher(['https://app.example.com', /^https:\/\/[a-z]+\.example\.com$/])
  expectExact<Equal<typeof match, OriginMatcher>>()
  expectExact<Equal<OriginMatcher, (origin: string) => boolean>>()
  expectType<boolean>(match('https://app.example.com'))
  expectType<(origin: string) => boolean>(createOriginMatcher('https://app.example.com'))
  // @ts-expect-error a function entry is for the plugin option only
  createOriginMatcher(() => true)
  // @ts-expect-error nor inside a list
  createOriginMatcher(['https://app.example.com', (origin: string) => origin !== ''])
  // @ts-expect-error the matcher takes the Origin string
  match(undefined)

  // error classes: codes are literal, every one a WebsocketSecurityError with statusCode
  expectType<'WS_GUARD_ORIGIN_NOT_ALLOWED'>(new WebsocketOriginNotAllowed().code)
  expectType<'WS_GUARD_NO_TOKEN_PRESENTED'>(new NoWebsocketTokenPresented().code)
  expectType<'WS_GUARD_NO_TOKEN_STORED'>(new NoWebsocketTokenStored().code)
  expectType<'WS_GUARD_TOKEN_MISMATCH'>(new WebsocketTokenMismatch().code)
  expectType<'WS_GUARD_TOKEN_EXPIRED'>(new WebsocketTokenExpired().code)
  expectType<'WS_GUARD_STORE_UNAVAILABLE'>(new WebsocketGuardStoreUnavailable().code)
  // @ts-expect-error the codes are distinct
  expectType<'WS_GUARD_TOKEN_EXPIRED'>(new WebsocketTokenMismatch().code)
  const errors: WebsocketSecurityError[] = [new WebsocketOriginNotAllowed(), new NoWebsocketTokenPresented('why'),
    new NoWebsocketTokenStored(), new WebsocketTokenMismatch(), new WebsocketTokenExpired()]
  for (const error of errors) {
    expectType<string>(error.code)
    expectType<number>(error.statusCode)
    expectType<Error>(error)
  }
  // the errors go through Fastify's reply like any FastifyError-shaped error
  app.setErrorHandler((error: FastifyError, request, reply) => {
    if (error instanceof WebsocketSecurityError) return reply.code(error.statusCode).send({ code: error.code })
    return reply.send(error)
  })
}

void main
