// A new user's first hour: each first step that used to fail silently or with a message
// pointing nowhere now works, or fails with a coded error that says what to do.
import t, { type Test } from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import cookie from '@fastify/cookie'
import session from '@fastify/session'
import secureSession from '@fastify/secure-session'
import websocket from '@fastify/websocket'
import { Writable } from 'node:stream'
import { connect as netConnect } from 'node:net'
import websocketGuard, { memoryTokenStore, type FastifyWebsocketGuardOptions } from '../lib/index'
import { buildApp, Client, close, SECRET } from './helpers/app'

function capture (): { logs: any[], stream: Writable } {
  const logs: any[] = []
  return { logs, stream: new Writable({ write (chunk, _enc, cb) { logs.push(JSON.parse(chunk.toString())); cb() } }) }
}

async function sessionApp (t: Test, sessionOptions: Record<string, unknown>, guard: FastifyWebsocketGuardOptions = {}, logger: unknown = false): Promise<FastifyInstance> {
  const app = Fastify({ logger: logger as boolean })
  t.teardown(() => app.close())
  await app.register(cookie)
  await app.register(session, { secret: SECRET, ...sessionOptions })
  await app.register(websocket)
  await app.register(websocketGuard, guard)
  app.get('/chat', { websocket: true }, (socket) => { socket.send('hello') })
  return app
}

t.test('a session cookie whose path does not cover the token route: 500 WS_GUARD_NO_SESSION, no phantom token', async (t) => {
  const app = await sessionApp(t, { cookie: { secure: false, path: '/app' } })
  const res = await app.inject({ url: '/websocket-token' })
  t.equal(res.statusCode, 500)
  t.equal(res.json().code, 'WS_GUARD_NO_SESSION')
  t.notOk('token' in res.json(), 'no token issued')
})

t.test('an absolute-form request target gets no throw-away session either', async (t) => {
  const app = await sessionApp(t, { cookie: { secure: false } })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as { port: number }
  const answer = await new Promise<string>((resolve, reject) => {
    const socket = netConnect(port, '127.0.0.1', () => {
      socket.write(`GET http://127.0.0.1:${port}/websocket-token HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: close\r\n\r\n`)
    })
    let data = ''
    socket.on('data', (chunk) => { data += chunk.toString() })
    socket.on('end', () => resolve(data))
    socket.on('error', reject)
  })
  t.match(answer, /^HTTP\/1\.1 500/, 'refused')
  t.match(answer, /WS_GUARD_NO_SESSION/)
  t.notMatch(answer, /"token"/)
})

t.test('an upgrade without any cookie: NoWebsocketTokenStored says the session cookie was missing', async (t) => {
  const { base } = await buildApp(t)
  const client = new Client(base)
  await client.token()
  const r = await client.connect('/chat?token=' + await client.token(), { cookie: false })
  t.equal(r.body.code, 'WS_GUARD_NO_TOKEN_STORED')
  t.match(r.body.message, /carried no session cookie/)
  const withCookie = await client.connect('/chat?token=' + 'x'.repeat(43))
  t.notMatch(withCookie.body.message, /carried no session cookie/, 'not said when a cookie came')
})

t.test('a Secure session cookie on a plain-http token request: one warning saying how to fix it', async (t) => {
  const { logs, stream } = capture()
  const app = await sessionApp(t, {}, {}, { level: 'warn', stream })
  for (let i = 0; i < 3; i++) t.equal((await app.inject({ url: '/websocket-token' })).statusCode, 200)
  const warnings = logs.filter((l) => l.code === 'WS_GUARD_INSECURE_COOKIE')
  t.equal(warnings.length, 1, 'logged once')
  t.equal(warnings[0].level, 40)
  t.match(warnings[0].msg, /cookie\.secure to 'auto'/)
  const { logs: quiet, stream: quietStream } = capture()
  const auto = await sessionApp(t, { cookie: { secure: 'auto' } }, {}, { level: 'warn', stream: quietStream })
  await auto.inject({ url: '/websocket-token' })
  t.same(quiet.filter((l) => l.code === 'WS_GUARD_INSECURE_COOKIE'), [], 'not with secure: auto')
})

t.test('an unknown option is refused with the nearest known name; Fastify\'s register options are not unknown', async (t) => {
  for (const [name, nearest] of [['tokenTtl', 'tokenTTL'], ['origin', 'origins'], ['allowMissingOrigins', 'allowMissingOrigin'], ['sesionKey', 'sessionKey'], ['onreject', 'onReject']] as Array<[string, string]>) {
    const app = Fastify()
    await app.register(cookie)
    await app.register(session, { secret: SECRET })
    await app.register(websocket)
    await t.rejects(async () => { await app.register(websocketGuard, { [name as string]: 1 } as FastifyWebsocketGuardOptions) }, {
      code: 'WS_GUARD_INVALID_OPTION',
      message: new RegExp(`option ${name} is not an option of fastify-websocket-guard \\(did you mean ${nearest}\\?\\)`)
    }, name)
    await app.close()
  }
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(cookie)
  await app.register(session, { secret: SECRET })
  await app.register(websocket)
  await app.register(websocketGuard, { prefix: '/api', logSerializers: {} } as FastifyWebsocketGuardOptions)
  await app.ready()
  t.ok(app.hasRoute({ method: 'GET', url: '/websocket-token' }), 'prefix and logSerializers are Fastify\'s')
})

t.test('the other plugins missing: WS_GUARD_MISSING_DEPENDENCY naming each', async (t) => {
  const noWs = Fastify()
  t.teardown(() => noWs.close())
  await noWs.register(cookie)
  await noWs.register(session, { secret: SECRET })
  await t.rejects(async () => { await noWs.register(websocketGuard) }, { code: 'WS_GUARD_MISSING_DEPENDENCY', message: /needs @fastify\/websocket/ })
  const noSecure = Fastify()
  t.teardown(() => noSecure.close())
  await noSecure.register(cookie)
  await noSecure.register(websocket)
  await t.rejects(async () => { await noSecure.register(websocketGuard, { sessionPlugin: '@fastify/secure-session' }) }, { code: 'WS_GUARD_MISSING_DEPENDENCY', message: /needs @fastify\/secure-session/ })
})

t.test('tokenRouteOptions: a preHandler, config and schema reach the token route; url, path, method and handler are refused', async (t) => {
  const seenConfig: unknown[] = []
  const { base } = await buildApp(t, {
    guard: {
      tokenRouteOptions: {
        config: { rateLimit: { max: 2 } },
        preHandler: async (request, reply) => {
          seenConfig.push((request.routeOptions.config as { rateLimit?: unknown }).rateLimit)
          if (request.headers.authorization !== 'Bearer ok') await reply.code(401).send({ statusCode: 401, error: 'Unauthorized', message: 'log in first' })
        },
        schema: { querystring: { type: 'object', properties: { path: { type: 'string', maxLength: 20 } } } }
      }
    }
  })
  const client = new Client(base)
  const denied = await client.getToken()
  t.equal(denied.status, 401, 'the preHandler runs first')
  t.notOk(denied.body?.token)
  const ok = await client.getToken('', { authorization: 'Bearer ok' })
  t.equal(ok.status, 200)
  t.same(seenConfig[0], { max: 2 }, 'config is the route\'s')
  const long = await client.getToken('?path=/' + 'a'.repeat(30), { authorization: 'Bearer ok' })
  t.equal(long.status, 400, 'the schema applies')
  t.equal(ok.headers.get('cache-control'), 'no-store')
  const r = await client.connect('/chat?token=' + (ok.body.token as string))
  t.equal(r.opened, true)
  await close(r)
  for (const field of ['url', 'path', 'method', 'handler']) {
    const app = Fastify()
    await app.register(cookie)
    await app.register(session, { secret: SECRET })
    await app.register(websocket)
    await t.rejects(async () => { await app.register(websocketGuard, { tokenRouteOptions: { [field]: '/x' } as never }) }, { code: 'WS_GUARD_INVALID_OPTION', message: new RegExp(`option tokenRouteOptions must not set ${field}`) })
    await app.close()
  }
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(cookie)
  await app.register(session, { secret: SECRET })
  await app.register(websocket)
  await t.rejects(async () => { await app.register(websocketGuard, { tokenRouteOptions: 'fast' as never }) }, { code: 'WS_GUARD_INVALID_OPTION' })
})

t.test('fastify.websocketGuard.issueToken issues a working token from the app\'s own route, with every backend', async (t) => {
  const backends: Array<[string, Parameters<typeof buildApp>[1]]> = [
    ['in the session', {}],
    ['a memory store', { guard: { store: memoryTokenStore() } }],
    ['secure-session', { secureSession: { cookie: { path: '/', secure: false } } }]
  ]
  for (const [name, options] of backends) {
    const { base } = await buildApp(t, {
      ...options,
      guard: { ...options?.guard, tokenRoute: false },
      setup (app) {
        app.get('/page', async (request) => {
          const bound = await app.websocketGuard.issueToken(request, { path: '/chat' })
          const free = await app.websocketGuard.issueToken(request)
          return { bound: bound.token, free: free.token, expiresAt: bound.expiresAt }
        })
        app.get('/bad', async (request) => await app.websocketGuard.issueToken(request, { path: 'chat' }))
      }
    })
    const client = new Client(base)
    client.tokenPath = '/page'
    const page = await client.getToken()
    t.equal(page.status, 200, `${name}: issued`)
    t.ok(page.body.expiresAt > Date.now(), `${name}: expiresAt`)
    const r = await client.connect('/chat?token=' + (page.body.bound as string))
    t.equal(r.opened, true, `${name}: the bound token opens its route`)
    await close(r)
    const r2 = await client.connect('/chat?token=' + (page.body.free as string))
    t.equal(r2.opened, true, `${name}: the free token opens`)
    await close(r2)
    client.tokenPath = '/bad'
    const bad = await client.getToken()
    t.equal(bad.status, 500, `${name}: a bad path is a programming error`)
    t.equal(bad.body.code, 'WS_GUARD_INVALID_OPTION')
    options?.guard?.store?.close?.()
  }
})

t.test('two first token requests of one session at once, with a server-side store: both tokens work', async (t) => {
  const store = memoryTokenStore()
  t.teardown(() => store.close())
  const { base } = await buildApp(t, { guard: { store }, setup (app) { app.get('/hello', async (request) => { request.session.set('seen' as never, true as never); return { hi: true } }) } })
  for (let round = 0; round < 5; round++) {
    const client = new Client(base)
    client.tokenPath = '/hello'
    await client.getToken() // the session exists, but holds no store id yet
    client.tokenPath = '/websocket-token'
    const [a, b] = await Promise.all([client.token(), client.token()])
    for (const token of [a, b]) {
      const r = await client.connect('/chat?token=' + token)
      t.equal(r.opened, true, `round ${round}: each tab's token opens`)
      await close(r)
    }
  }
})

t.test('injectWS works under the same-origin default: no socket counts as http, no Host as localhost', async (t) => {
  const { app } = await buildApp(t)
  const res = await app.inject({ url: '/websocket-token', headers: { host: 'localhost' } })
  const cookieHeader = (res.headers['set-cookie'] as string).split(';')[0] as string
  const ws = await app.injectWS('/chat?token=' + (res.json().token as string), { headers: { cookie: cookieHeader, origin: 'http://localhost', host: 'localhost' } })
  t.equal(ws.readyState, 1, 'opened')
  ws.terminate()
  const res2 = await app.inject({ url: '/websocket-token' })
  const cookie2 = (res2.headers['set-cookie'] as string).split(';')[0] as string
  const ws2 = await app.injectWS('/chat?token=' + (res2.json().token as string), { headers: { cookie: cookie2, origin: 'http://localhost' } })
  t.equal(ws2.readyState, 1, 'inject\'s own Host (localhost:80) matches too')
  ws2.terminate()
})

t.test('a refusal under the same-origin default logs the origin it expected', async (t) => {
  const { logs, stream } = capture()
  const { base } = await buildApp(t, { fastify: { logger: { level: 'warn', stream } } })
  const client = new Client(base)
  await client.connect('/chat', { origin: 'https://app.example.com' })
  const line = logs.find((l) => l.code === 'WS_GUARD_ORIGIN_NOT_ALLOWED')
  t.equal(line?.expected, base, 'behind a TLS proxy without trustProxy this shows http:// where the browser sent https://')
  t.equal(line?.origin, 'https://app.example.com')
})

t.test('an onRequest hook that assigns request.headers cannot make the 101 echo the token entry', async (t) => {
  const { base, opened } = await buildApp(t, {
    setup (app) {
      app.addHook('onRequest', async (request) => { request.headers = { ...request.headers, 'x-request-start': '1' } })
    }
  })
  const client = new Client(base)
  const token = await client.token()
  const r = await client.connect('/chat', { protocols: ['websocket-guard', 'websocket-guard.' + token] })
  t.equal(r.opened, true)
  t.equal(r.protocol, 'websocket-guard', 'the bare protocol is selected, never the token entry')
  t.equal(opened[0]?.protocol, 'websocket-guard')
  await close(r)
})

t.test('the lifecycle options accept false and a duration, and refuse anything else', async (t) => {
  for (const [value, ok] of [[false, true], [1000, true], [0, false], [true, false], ['1000', false], [2 ** 31, false]] as Array<[unknown, boolean]>) {
    for (const name of ['maxSocketLifetime', 'revalidateInterval']) {
      const app = Fastify()
      await app.register(cookie)
      await app.register(session, { secret: SECRET })
      await app.register(websocket)
      const err = await app.register(websocketGuard, { [name]: value } as FastifyWebsocketGuardOptions).then(() => null, (e: Error & { code?: string }) => e)
      t.equal(err === null, ok, `${name}: ${String(value)}`)
      if (!ok) t.equal(err?.code, 'WS_GUARD_INVALID_OPTION')
      await app.close()
    }
  }
})
