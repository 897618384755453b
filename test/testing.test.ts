/**
 * fastify-websocket-guard/testing: `injectGuardedWS` against real apps that never listen, as
 * a user's tests run them (`app.inject` for the token route, `app.injectWS` for the upgrade).
 *
 * These apps name `http://localhost` in `origins`; test/testing-default-origin.test.ts checks
 * the same-origin default, which must accept an injected request.
 */
import t, { type Test } from 'tap'
import { once } from 'node:events'
import Fastify, { type FastifyInstance } from 'fastify'
import cookie from '@fastify/cookie'
import session from '@fastify/session'
import websocket from '@fastify/websocket'
import type { WebSocket } from 'ws'
import websocketGuard, { type FastifyWebsocketGuardOptions } from '../lib/index'
import { injectGuardedWS } from '../lib/testing'
import { SECRET } from './helpers/app'

interface Seen {
  url: string
  protocol: string
  guard: { origin: string | null, token: string | null } | null
  sessionId: string
  headers: Record<string, string | string[] | undefined>
}

interface InjectApp {
  app: FastifyInstance
  /** what `/chat` saw, one entry per opened socket */
  seen: Seen[]
  rejections: string[]
  /** every request to the token route */
  tokenRequests: Array<{ path: string | undefined, origin: string | undefined, host: string | undefined }>
}

async function injectApp (t: Test, guard: FastifyWebsocketGuardOptions = {}, options: { sessionCookie?: Record<string, unknown>, setup?: (app: FastifyInstance) => void } = {}): Promise<InjectApp> {
  const app = Fastify({ logger: false })
  t.teardown(() => app.close())
  const seen: Seen[] = []
  const rejections: string[] = []
  const tokenRequests: InjectApp['tokenRequests'] = []
  app.addHook('onRequest', async (request) => {
    if (request.url.startsWith('/websocket-token')) {
      tokenRequests.push({ path: (request.query as { path?: string }).path, origin: request.headers.origin, host: request.headers.host })
    }
  })
  await app.register(cookie)
  await app.register(session, { secret: SECRET, cookie: { secure: false, ...options.sessionCookie } })
  await app.register(websocket)
  await app.register(websocketGuard, {
    origins: ['http://localhost'],
    onReject (error) { rejections.push(error.code) },
    ...guard
  })
  options.setup?.(app)
  app.get('/chat', { websocket: true, guard: true }, (socket, request) => {
    seen.push({ url: request.url, protocol: socket.protocol, guard: request.websocketGuard, sessionId: request.session.sessionId, headers: request.headers })
    socket.on('message', (data) => socket.send(data.toString()))
  })
  return { app, seen, rejections, tokenRequests }
}

/** Sends `text` and resolves once it comes back: the socket is really open, end to end. */
async function echoes (socket: WebSocket, text: string): Promise<boolean> {
  const heard = new Promise<boolean>((resolve) => {
    socket.on('message', (data) => { if (data.toString() === text) resolve(true) })
  })
  socket.send(text)
  return await heard
}

async function closeSocket (socket: WebSocket): Promise<void> {
  const closed = once(socket, 'close')
  socket.terminate()
  await closed
}

t.test('opens a guarded socket with a token bound to the path, in a subprotocol entry by default', async (t) => {
  const { app, seen, rejections } = await injectApp(t)
  const socket = await injectGuardedWS(app, '/chat')
  t.teardown(() => closeSocket(socket))
  t.equal(await echoes(socket, 'ping'), true, 'open, end to end')
  t.equal(seen.length, 1)
  const [first] = seen as [Seen]
  t.equal(first.url, '/chat', 'no token in the URL')
  t.equal(first.protocol, 'websocket-guard', 'the bare protocol selected')
  t.equal(first.guard?.origin, 'http://localhost', 'the default origin')
  t.match(first.guard?.token, /^[A-Za-z0-9_-]{43}$/)
  t.equal(first.headers.host, 'localhost', 'Host: localhost')
  t.same(rejections, [])

  // each call fetches a fresh token, in the same app
  const again = await injectGuardedWS(app, '/chat')
  t.teardown(() => closeSocket(again))
  t.not(seen[1]?.guard?.token, first.guard?.token, 'a fresh token')
})

t.test('transport "query" puts the token in the query string, after any query of its own', async (t) => {
  const { app, seen, rejections } = await injectApp(t)
  const plain = await injectGuardedWS(app, '/chat', { transport: 'query' })
  t.teardown(() => closeSocket(plain))
  const withQuery = await injectGuardedWS(app, '/chat?room=1', { transport: 'query' })
  t.teardown(() => closeSocket(withQuery))
  t.equal(await echoes(withQuery, 'ping'), true)
  t.equal(seen[0]?.url, '/chat?token=' + seen[0]?.guard?.token)
  t.equal(seen[1]?.url, '/chat?room=1&token=' + seen[1]?.guard?.token, 'the token is bound to the path, not the query')
  t.equal(seen[0]?.protocol, '', 'no subprotocol offered')
  t.same(rejections, [])
})

t.test('the token is bound to the path: the token route is asked for it, without the query', async (t) => {
  const { app, tokenRequests } = await injectApp(t)
  const chat = await injectGuardedWS(app, '/chat?room=1')
  t.teardown(() => closeSocket(chat))
  t.same(tokenRequests, [{ path: '/chat', origin: undefined, host: 'localhost' }], 'as a page of the app asks: no Origin')
})

t.test('keeps the session of a cookie given in headers, with the other cookies', async (t) => {
  const { app, seen } = await injectApp(t)
  const res = await app.inject({ url: '/websocket-token', headers: { host: 'localhost' } })
  const sessionCookie = String(res.headers['set-cookie']).split(';')[0] as string
  const sessionId = decodeURIComponent(sessionCookie.slice(sessionCookie.indexOf('=') + 1)).split('.')[0]
  const socket = await injectGuardedWS(app, '/chat', { headers: { Cookie: `theme=dark; ${sessionCookie}; flag` } })
  t.teardown(() => closeSocket(socket))
  t.equal(seen[0]?.sessionId, sessionId, 'the session of the given cookie')
  const sent = String(seen[0]?.headers.cookie).split('; ')
  t.same(sent.filter((c) => c.startsWith('sessionId=')), [sessionCookie], 'one session cookie: the one the token route renewed')
  t.ok(sent.includes('theme=dark') && sent.includes('flag'), 'the other cookies go along')
})

t.test('origin: given, taken from headers, or none', async (t) => {
  const { app, seen, rejections } = await injectApp(t, { origins: ['http://localhost', 'http://app.test'] })
  const fromOption = await injectGuardedWS(app, '/chat', { origin: 'http://app.test', headers: { origin: 'http://evil.test' } })
  t.teardown(() => closeSocket(fromOption))
  const fromHeaders = await injectGuardedWS(app, '/chat', { headers: { Origin: 'http://app.test' } })
  t.teardown(() => closeSocket(fromHeaders))
  t.same(seen.map((s) => s.guard?.origin), ['http://app.test', 'http://app.test'], 'the option wins over headers; headers over the default')

  await t.rejects(injectGuardedWS(app, '/chat', { origin: 'http://evil.test' }), { message: 'Unexpected server response: 403' }, 'rejects as injectWS does')
  await t.rejects(injectGuardedWS(app, '/chat', { origin: null, headers: { origin: 'http://app.test' } }), { message: 'Unexpected server response: 403' })
  t.same(rejections, ['WS_GUARD_ORIGIN_NOT_ALLOWED', 'WS_GUARD_ORIGIN_NOT_ALLOWED'], 'refused at the upgrade, not at the token route')
  t.equal(seen.length, 2)
})

t.test('origin null sends none, for an app that allows a missing Origin', async (t) => {
  const { app, seen } = await injectApp(t, { allowMissingOrigin: true })
  const socket = await injectGuardedWS(app, '/chat', { origin: null })
  t.teardown(() => closeSocket(socket))
  t.equal(seen[0]?.headers.origin, undefined)
  t.equal(seen[0]?.guard?.origin, null)
  t.match(seen[0]?.guard?.token, /^[A-Za-z0-9_-]{43}$/, 'the token still checked')
})

t.test('headers: a host of its own, and subprotocols of its own offered with the token', async (t) => {
  const { app, seen } = await injectApp(t)
  const hosted = await injectGuardedWS(app, '/chat', { headers: { Host: 'chat.test' } })
  t.teardown(() => closeSocket(hosted))
  t.equal(seen[0]?.headers.host, 'chat.test')

  const own = await injectGuardedWS(app, '/chat', { headers: { 'Sec-WebSocket-Protocol': 'chat.v1' } })
  t.teardown(() => closeSocket(own))
  // the bare protocol already offered is not offered twice (ws refuses a repeated one)
  const both = await injectGuardedWS(app, '/chat', { headers: { 'sec-websocket-protocol': 'chat.v1, websocket-guard' } })
  t.teardown(() => closeSocket(both))
  t.equal(await echoes(both, 'ping'), true)
  t.same(seen.slice(1).map((s) => s.protocol), ['websocket-guard', 'websocket-guard'])
  t.equal(seen.length, 3)
})

t.test('a token route that gives no token: rejects with its statusCode and code', async (t) => {
  t.test('a refusal', async (t) => {
    const { app, seen } = await injectApp(t, {}, {
      setup (app) {
        app.addHook('onRequest', async (request, reply) => {
          if (request.routeOptions.url === '/websocket-token') await reply.code(401).send({ statusCode: 401, code: 'APP_LOGIN_REQUIRED', error: 'Unauthorized', message: 'log in first' })
        })
      }
    })
    await t.rejects(injectGuardedWS(app, '/chat'), {
      statusCode: 401,
      code: 'APP_LOGIN_REQUIRED',
      message: 'injectGuardedWS: GET /websocket-token answered 401 APP_LOGIN_REQUIRED and no token: log in first'
    })
    t.equal(seen.length, 0)
  })

  t.test('another token route path: 404, with a hint', async (t) => {
    const { app } = await injectApp(t, { tokenRoute: '/ws-token' })
    await t.rejects(injectGuardedWS(app, '/chat'), {
      statusCode: 404,
      code: undefined,
      message: /answered 404 and no token: Route GET:\/websocket-token\?path=%2Fchat not found \(injectGuardedWS asks the plugin's default token route, \/websocket-token\)$/
    })
  })

  t.test('something else at that path: 200 and no token', async (t) => {
    const { app } = await injectApp(t, { tokenRoute: false }, {
      setup (app) { app.get('/websocket-token', async (_request, reply) => reply.type('text/plain').send('not a token')) }
    })
    await t.rejects(injectGuardedWS(app, '/chat'), { statusCode: 200, code: undefined, message: /answered 200 and no token \(injectGuardedWS asks/ })
  })
})

t.test('a session cookie the token route cannot set over plain http (Secure): the upgrade is refused', async (t) => {
  // @fastify/session's default cookie is Secure, and an injected request is plain http
  const { app, rejections } = await injectApp(t, {}, { sessionCookie: { secure: true } })
  await t.rejects(injectGuardedWS(app, '/chat'), { message: 'Unexpected server response: 403' })
  t.same(rejections, ['WS_GUARD_NO_TOKEN_STORED'])
})

t.test('bad arguments throw a TypeError before any request', async (t) => {
  const { app, rejections } = await injectApp(t)
  let requests = 0
  app.addHook('onRequest', async () => { requests++ })
  await t.rejects(injectGuardedWS(app, 'chat'), { name: 'TypeError', message: 'injectGuardedWS: path must be a request path starting with /' })
  await t.rejects(injectGuardedWS(app, 42 as unknown as string), TypeError)
  await t.rejects(injectGuardedWS(app, '/chat', { transport: 'header' as 'query' }), { name: 'TypeError', message: /transport must be "protocol" or "query"/ })
  t.equal(requests, 0)
  t.same(rejections, [])
})
