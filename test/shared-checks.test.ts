// One rule, one place: each rule shared by several entry points (the plugin's options, the
// token route, the exported functions, the stores) refuses the same values everywhere, with
// a coded error, and a refused call changes nothing.
import t from 'tap'
import Fastify from 'fastify'
import cookie from '@fastify/cookie'
import session from '@fastify/session'
import websocket from '@fastify/websocket'
import websocketGuard, { consumeWebsocketToken, issueWebsocketToken, memoryTokenStore, createOriginMatcher } from '../lib/index'
import { buildApp, Client, SECRET } from './helpers/app'

const RESERVED = ['save', 'cookie', 'destroy', 'regenerate', 'touch', 'sessionId', '__ts', '__proto__', 'constructor', 'toString']

t.test("a sessionKey the session uses itself is refused by issueWebsocketToken too, and the session stays intact", async (t) => {
  let saved = 0
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(cookie)
  await app.register(session, { secret: SECRET, cookie: { secure: false } })
  await app.register(websocket)
  await app.register(websocketGuard)
  const outcomes: Array<{ key: string, code: unknown, message: string, saveIsFunction: boolean }> = []
  app.get('/issue', async (request) => {
    for (const key of RESERVED) {
      try {
        issueWebsocketToken(request.session, { sessionKey: key })
        outcomes.push({ key, code: null, message: 'issued', saveIsFunction: typeof request.session.save === 'function' })
      } catch (err) {
        outcomes.push({ key, code: (err as { code?: unknown }).code, message: (err as Error).message, saveIsFunction: typeof request.session.save === 'function' })
      }
    }
    request.session.set('visited' as never, true as never)
    const original = request.session.save
    request.session.save = function (this: unknown, ...args: unknown[]) { saved++; return (original as (...a: unknown[]) => unknown).apply(this, args) } as typeof original
    return { ok: true }
  })
  const res = await app.inject({ url: '/issue' })
  t.equal(res.statusCode, 200, 'the request still answers: the session was not broken')
  t.equal(saved, 1, 'and the session is still saved')
  for (const o of outcomes) {
    t.equal(o.code, 'WS_GUARD_INVALID_OPTION', `${o.key}: refused with the option code`)
    t.match(o.message, /option sessionKey must not be a name the session object uses itself/, `${o.key}: the message says why`)
    t.equal(o.saveIsFunction, true, `${o.key}: session.save is untouched`)
  }
})

t.test('the sessionKey rule is the same for the plugin and both seed functions', async (t) => {
  for (const key of [...RESERVED, '', 'k'.repeat(129)]) {
    const s: Record<string, unknown> = { keep: 1 }
    t.throws(() => issueWebsocketToken(s, { sessionKey: key }), { code: 'WS_GUARD_INVALID_OPTION', name: 'TypeError' }, `issue: ${key.slice(0, 10)}`)
    t.throws(() => consumeWebsocketToken('/?token=x', s, key), { code: 'WS_GUARD_INVALID_OPTION', name: 'TypeError' }, `consume: ${key.slice(0, 10)}`)
    t.same(s, { keep: 1 }, 'nothing written')
    const app = Fastify()
    await app.register(cookie)
    await app.register(session, { secret: SECRET })
    await app.register(websocket)
    await t.rejects(async () => { await app.register(websocketGuard, { sessionKey: key }) }, { code: 'WS_GUARD_INVALID_OPTION' }, `plugin: ${key.slice(0, 10)}`)
    await app.close()
  }
  t.doesNotThrow(() => issueWebsocketToken({}, { sessionKey: 'k'.repeat(128) }), 'the longest key is accepted')
})

t.test('a bound path follows one rule: token route, issueWebsocketToken and tokenRoute', async (t) => {
  const bad = ['chat', '/chat?x=1', '/chat#x', '/ch at', '/chat\t', '/' + 'a'.repeat(1024)]
  const { base } = await buildApp(t)
  const client = new Client(base)
  for (const path of bad) {
    const s: Record<string, unknown> = {}
    t.throws(() => issueWebsocketToken(s, { path }), { code: 'WS_GUARD_INVALID_OPTION', message: /option path must be null or one request path/ }, `issueWebsocketToken ${JSON.stringify(path.slice(0, 12))}`)
    t.same(s, {}, 'nothing issued')
    const res = await client.getToken(`?path=${encodeURIComponent(path)}`)
    t.equal(res.status, 400, `token route ${JSON.stringify(path.slice(0, 12))}: 400`)
    t.equal(res.body.code, 'WS_GUARD_BAD_REQUEST')
    const app = Fastify()
    await app.register(cookie)
    await app.register(session, { secret: SECRET })
    await app.register(websocket)
    if (path.startsWith('/')) {
      await t.rejects(async () => { await app.register(websocketGuard, { tokenRoute: path }) }, { code: 'WS_GUARD_INVALID_OPTION', message: /option tokenRoute must be one request path/ }, `tokenRoute ${JSON.stringify(path.slice(0, 12))}`)
    }
    await app.close()
  }
  const longest = '/' + 'a'.repeat(1023)
  t.doesNotThrow(() => issueWebsocketToken({}, { path: longest }), 'the longest path is accepted by the function')
  t.equal((await client.getToken(`?path=${longest}`)).status, 200, 'and by the token route')
})

t.test('every option error carries WS_GUARD_INVALID_OPTION, wherever it is raised', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(cookie)
  await app.register(session, { secret: SECRET })
  await app.register(websocket)
  await t.rejects(async () => { await app.register(websocketGuard, { tokenTTL: 0 }) }, { code: 'WS_GUARD_INVALID_OPTION', message: /option tokenTTL/ })
  const app2 = Fastify()
  t.teardown(() => app2.close())
  await app2.register(cookie)
  await app2.register(session, { secret: SECRET })
  await app2.register(websocket)
  await app2.register(websocketGuard)
  t.throws(() => app2.get('/x', { websocket: true, guard: { token: 'no' as unknown as boolean } }, () => {}), { code: 'WS_GUARD_INVALID_OPTION' })
  t.throws(() => createOriginMatcher('*'), { code: 'WS_GUARD_INVALID_OPTION', message: /^origins: / })
  t.throws(() => memoryTokenStore({ sweepInterval: 0 }), { code: 'WS_GUARD_INVALID_OPTION', message: /option sweepInterval/ })
  t.throws(() => memoryTokenStore({ maxIds: 1.5 }), { code: 'WS_GUARD_INVALID_OPTION', message: /option maxIds/ })
  t.throws(() => issueWebsocketToken({}, { tokenTTL: Number.NaN }), { code: 'WS_GUARD_INVALID_OPTION', message: /option tokenTTL/ })
  t.throws(() => consumeWebsocketToken(42 as unknown as string, {}), { code: 'WS_GUARD_INVALID_OPTION' })
  t.throws(() => issueWebsocketToken(null as unknown as object), { code: 'WS_GUARD_INVALID_OPTION' })
})

t.test('start-up and wiring errors carry codes', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(cookie)
  await app.register(websocket)
  await t.rejects(async () => { await app.register(websocketGuard) }, { code: 'WS_GUARD_MISSING_DEPENDENCY', message: /needs @fastify\/session/ })

  // a request the session plugin gave no session: 500 with its code
  const bare = Fastify()
  t.teardown(() => bare.close())
  await bare.register(cookie)
  await bare.register(session, { secret: SECRET })
  await bare.register(websocket)
  await bare.register(websocketGuard)
  bare.addHook('onRequest', async (request) => { (request as any).session = null })
  const res = await bare.inject({ url: '/websocket-token' })
  t.equal(res.statusCode, 500)
  t.equal(res.json().code, 'WS_GUARD_NO_SESSION')
  t.match(res.json().message, /no usable session on this request/)
})
