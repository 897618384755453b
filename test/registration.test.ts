/**
 * Registration: missing plugins and invalid options fail at start-up with a message naming
 * them; routes anywhere below the guard are guarded.
 */
import t, { type Test } from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import cookie from '@fastify/cookie'
import session from '@fastify/session'
import secureSession from '@fastify/secure-session'
import websocket from '@fastify/websocket'
import websocketGuard, { memoryTokenStore, type FastifyWebsocketGuardOptions } from '../lib/index'
import { buildApp, Client, close, SECRET } from './helpers/app'
import { refused } from './helpers/util'

async function baseApp (t: Test, plugins: { session?: boolean, websocket?: boolean, secureSession?: boolean } = {}): Promise<FastifyInstance> {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(cookie)
  if (plugins.session !== false) await app.register(session, { secret: SECRET })
  if (plugins.secureSession === true) await app.register(secureSession, { key: Buffer.alloc(32, 7) })
  if (plugins.websocket !== false) await app.register(websocket)
  return app
}

t.test('missing plugins fail at start-up, naming them', async (t) => {
  t.test('no @fastify/session', async (t) => {
    const app = await baseApp(t, { session: false })
    await t.rejects(async () => { await app.register(websocketGuard) }, /@fastify\/session/)
  })

  t.test("sessionPlugin '@fastify/secure-session' without it", async (t) => {
    const app = await baseApp(t)
    await t.rejects(async () => { await app.register(websocketGuard, { sessionPlugin: '@fastify/secure-session' }) }, /@fastify\/secure-session/)
  })

  t.test('@fastify/secure-session registered, sessionPlugin left at its default', async (t) => {
    const app = await baseApp(t, { session: false, secureSession: true })
    await t.rejects(async () => { await app.register(websocketGuard) }, /needs @fastify\/session/)
  })

  t.test('no @fastify/websocket', async (t) => {
    const app = await baseApp(t, { websocket: false })
    await t.rejects(async () => { await app.register(websocketGuard) }, /@fastify\/websocket/)
  })

  t.test('also when the app is started without awaiting register', async (t) => {
    const app = Fastify()
    t.teardown(() => app.close())
    app.register(cookie)
    app.register(websocket)
    app.register(websocketGuard)
    await t.rejects(async () => { await app.ready() }, /@fastify\/session/)
  })

  t.test('everything present: registers', async (t) => {
    const app = await baseApp(t)
    await app.register(websocketGuard)
    await app.ready()
    t.ok(app.hasPlugin('fastify-websocket-guard'), 'registered under its name')
    t.ok(app.hasRequestDecorator('websocketGuard'))
  })
})

const invalid: Array<[keyof FastifyWebsocketGuardOptions, unknown[]]> = [
  ['origins', ['app.example.com', '*', ['*'], [], /^https:\/\/app\.example\.com/, /app\.example\.com$/, /^https:\/\/a\.example|https:\/\/b\.example$/, ['https://ok.example', 'https://ok.example/path'], 42, null, 'https://*.com']],
  ['tokenRoute', ['websocket-token', '', true, 42, '/token?x=1', '/to ken']],
  ['sessionPlugin', ['express-session', '@fastify/cookie', 42]],
  ['sessionKey', ['', 42, 'k'.repeat(129), '__proto__', 'constructor', 'save', 'cookie']],
  ['tokenTTL', [0, -1, Number.NaN, '10', Number.POSITIVE_INFINITY, null]],
  ['maxTokens', [0, 1.5, -2, '8', Number.NaN]],
  ['queryParam', ['', 'a b', 'a&b', 'a=b', 'a#', 42]],
  ['protocol', ['a,b', 'a b', '', 'a\tb', 42]],
  ['store', [{}, { issue () {} }, { consume () {} }, 'redis', null, 42]],
  ['storeTimeout', [0, -5, Number.NaN, '100', 2 ** 31]],
  ['logLevel', ['verbose', 'WARN', 42]],
  ['onReject', ['log', {}, true]],
  ['allowMissingOrigin', ['yes', 1, null]],
  ['redactLogs', ['no', 0, null]]
]

t.test('every invalid option throws at registration, naming the option', async (t) => {
  for (const [option, values] of invalid) {
    for (const value of values) {
      const app = await baseApp(t)
      const err = await app.register(websocketGuard, { [option]: value } as FastifyWebsocketGuardOptions).then(() => null, (err: Error) => err)
      t.ok(err instanceof TypeError, `${option}: ${String(value)} is refused`)
      t.match(err?.message, new RegExp(`option ${option} `), `${option}: the message names the option`)
      await app.close()
    }
  }
})

t.test('options that are not an object', async (t) => {
  const app = await baseApp(t)
  await t.rejects((websocketGuard as unknown as (app: unknown, options: unknown) => Promise<void>)(app, 'origins'), {
    name: 'TypeError',
    message: /options must be an object/
  })
})

t.test('every valid option at its edge is accepted', async (t) => {
  const app = await baseApp(t)
  const store = memoryTokenStore()
  t.teardown(() => store.close())
  await app.register(websocketGuard, {
    origins: ['https://app.example.com/', 'https://*.example.org:8443', /^https:\/\/(a|b)\.example\.net$/],
    allowMissingOrigin: true,
    tokenRoute: '/',
    sessionPlugin: '@fastify/session',
    sessionKey: 'k'.repeat(128),
    tokenTTL: 0.5,
    maxTokens: 1,
    queryParam: 'a.b_c~d-e',
    protocol: "x!#$%&'*+-.^_`|~9",
    store,
    storeTimeout: 2 ** 31 - 1,
    logLevel: 'fatal',
    onReject () {},
    redactLogs: false
  })
  await app.ready()
  t.ok(app.hasRoute({ method: 'GET', url: '/' }), 'the token route is at tokenRoute')
})

t.test('an invalid route `guard` option throws, naming the route', async (t) => {
  const bad: unknown[] = ['yes', 1, [], null, { origin: 'https://a.example' }, { origins: '*' }, { origins: [] }, { allowMissingOrigin: 'yes' }, { token: 'no' }]
  for (const guard of bad) {
    const app = await baseApp(t)
    await app.register(websocketGuard)
    t.throws(() => app.get('/bad', { websocket: true, guard: guard as boolean }, () => {}), {
      name: 'TypeError',
      message: /option guard.*\(route \/bad\)/
    }, JSON.stringify(guard))
    await app.close()
  }
  // inside a plugin, the registration fails
  const app = await baseApp(t)
  await app.register(websocketGuard)
  await t.rejects(async () => {
    await app.register(async (child) => {
      child.get('/room', { websocket: true, guard: { token: 'no' } as any }, () => {})
    }, { prefix: '/ws' })
  }, /option guard\.token .*\(route \/ws\/room\)/)
})

t.test('routes declared with guard in an encapsulated child context are guarded', async (t) => {
  const { base } = await buildApp(t, {
    async setup (app) {
      await app.register(async (child) => {
        child.get('/', { websocket: true, guard: true }, (socket) => { socket.send('root') })
        child.get('/room', { websocket: true, guard: true }, (socket) => { socket.send('room') })
        await child.register(async (grandchild) => {
          grandchild.get('/deep', { websocket: true, guard: { token: false } }, (socket, request) => {
            socket.send(JSON.stringify(request.websocketGuard))
          })
        })
      }, { prefix: '/ws' })
    }
  })
  const client = new Client(base)
  for (const path of ['/ws', '/ws/', '/ws/room']) {
    const evil = await client.connect(path, { origin: 'https://evil.example' })
    refused(t, evil, 'WS_GUARD_ORIGIN_NOT_ALLOWED', { what: `${path}: bad origin` })
    const none = await client.connect(path)
    t.equal(none.body?.code, 'WS_GUARD_NO_TOKEN_PRESENTED', `${path}: token required`)
    const ok = await client.connect(`${path}?token=${await client.token()}`)
    t.equal(ok.opened, true, `${path}: opens with a token`)
    await close(ok)
  }
  const deep = await client.connect('/ws/deep', { origin: 'https://evil.example' })
  t.equal(deep.status, 403)
  const deepOk = await client.connect('/ws/deep')
  t.equal(deepOk.opened, true)
  await close(deepOk)
})

t.test('a route with guard: false gets no hook; one without guard gets it under guardAll, and not without', async (t) => {
  for (const guardAll of [true, false]) {
    const app = await baseApp(t)
    await app.register(websocketGuard, { guardAll })
    const seen: Array<{ url: string, preValidation: unknown }> = []
    app.addHook('onRoute', (route) => { seen.push({ url: route.url, preValidation: route.preValidation }) })
    app.get('/a', { websocket: true }, () => {})
    app.get('/b', { websocket: true, guard: false }, () => {})
    app.get('/c', { websocket: true, guard: true }, () => {})
    app.get('/d', async () => 'plain http')
    await app.ready()
    const hooks = (url: string): unknown[] => seen.filter((r) => r.url === url).map((r) => (r.preValidation as unknown[] | undefined)?.length)
    t.same(hooks('/a'), guardAll ? [1, 1] : [undefined, undefined], `guardAll ${String(guardAll)}: a route without guard`)
    t.same(hooks('/b'), [undefined, undefined], 'guard: false: none')
    t.same(hooks('/c'), [1, 1], 'guard: true: the GET route and its HEAD route')
    t.same(hooks('/d'), [undefined, undefined], 'a plain HTTP route: none')
    await app.close()
  }
})

t.test('the plugin function called directly without options uses the defaults', async (t) => {
  const app = await baseApp(t)
  await (websocketGuard as unknown as (app: FastifyInstance, options: undefined) => Promise<void>)(app, undefined)
  await app.ready()
  t.ok(app.hasRoute({ method: 'GET', url: '/websocket-token' }))
})

t.test('every export of the contract is there', async (t) => {
  const lib: Record<string, unknown> = await import('../lib/index')
  for (const name of [
    'default', 'fastifyWebsocketGuard', 'WebsocketSecurityError', 'WebsocketOriginNotAllowed', 'NoWebsocketTokenPresented',
    'NoWebsocketTokenStored', 'WebsocketTokenMismatch', 'WebsocketTokenExpired', 'WebsocketGuardStoreUnavailable',
    'WebsocketGuardBadRequest', 'WebsocketGuardNoSession', 'WebsocketGuardRouteNotGuarded', 'WebsocketGuardMissingDependency',
    'WebsocketGuardOptionError', 'createOriginMatcher', 'consumeWebsocketToken', 'issueWebsocketToken', 'memoryTokenStore',
    'redisTokenStore'
  ]) {
    t.type(lib[name], 'function', name)
  }
  t.equal(lib.fastifyWebsocketGuard, websocketGuard)
  const codes = ['WebsocketOriginNotAllowed', 'NoWebsocketTokenPresented', 'NoWebsocketTokenStored', 'WebsocketTokenMismatch', 'WebsocketTokenExpired']
    .map((name) => {
      const error = new (lib[name] as new () => Error & { code: string, statusCode: number })()
      t.ok(error instanceof (lib.WebsocketSecurityError as new () => Error), `${name} is a WebsocketSecurityError`)
      t.equal(error.statusCode, 403)
      return error.code
    })
  t.same(codes, ['WS_GUARD_ORIGIN_NOT_ALLOWED', 'WS_GUARD_NO_TOKEN_PRESENTED', 'WS_GUARD_NO_TOKEN_STORED', 'WS_GUARD_TOKEN_MISMATCH', 'WS_GUARD_TOKEN_EXPIRED'])
})
