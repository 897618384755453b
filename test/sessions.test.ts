/**
 * The guard on each session backend: @fastify/session (tokens in the session, saved by the
 * guard), @fastify/secure-session (tokens in a server-side store), a user `store`, and
 * failing stores, which fail closed with 503.
 */
import t, { type Test } from 'tap'
import Fastify from 'fastify'
import cookie from '@fastify/cookie'
import session, { MemoryStore } from '@fastify/session'
import websocket from '@fastify/websocket'
import websocketGuard, { memoryTokenStore, type TokenStore } from '../lib/index'
import { buildApp, Client, close, connect, type ConnectResult } from './helpers/app'
import { refused, sleep } from './helpers/util'

type Mode = 'ok' | 'fail' | 'throw' | 'hang' | 'slow'

/** A @fastify/session store on a Map whose `set` can be made to fail, hang or be slow. */
function sessionStore (): { mode: Mode, sets: number, sessions: Map<string, any>, get: Function, set: Function, destroy: Function } {
  const store = {
    mode: 'ok' as Mode,
    sets: 0,
    sessions: new Map<string, any>(),
    get (id: string, callback: (err: Error | null, value?: unknown) => void) {
      const value = store.sessions.get(id)
      callback(null, value === undefined ? undefined : JSON.parse(value))
    },
    set (id: string, value: unknown, callback: (err?: Error) => void) {
      store.sets++
      if (store.mode === 'fail') { callback(new Error('session store down')); return }
      if (store.mode === 'hang') return
      const save = (): void => { store.sessions.set(id, JSON.stringify(value)); callback() }
      if (store.mode === 'slow') setTimeout(save, 300)
      else save()
    },
    destroy (id: string, callback: () => void) {
      store.sessions.delete(id)
      callback()
    }
  }
  return store
}

/** A TokenStore around the in-memory one whose calls can be made to throw, reject, hang or be slow. */
function tokenStore (): TokenStore & { mode: Mode | 'reject', calls: string[], closed: number } {
  const inner = memoryTokenStore()
  const store = {
    mode: 'ok' as Mode | 'reject',
    calls: [] as string[],
    closed: 0,
    async run<T> (name: string, call: () => Promise<T>): Promise<T> {
      store.calls.push(name)
      if (store.mode === 'throw') throw new Error('token store down')
      if (store.mode === 'reject') return await Promise.reject(new Error('token store down'))
      if (store.mode === 'hang') return await new Promise<T>(() => {})
      if (store.mode === 'slow') await sleep(300)
      return await call()
    },
    issue (id: string, token: any, maxTokens: number) { return store.run('issue', () => inner.issue(id, token, maxTokens)) },
    consume (id: string, hash: string, path: string, now: number) { return store.run('consume', () => inner.consume(id, hash, path, now)) },
    close () { store.closed++; inner.close() }
  }
  return store
}

async function opensOnce (t: Test, client: Client, token: string): Promise<void> {
  const r = await client.connect('/chat?token=' + token)
  t.equal(r.opened, true, 'opens')
  await close(r)
  const again = await client.connect('/chat?token=' + token)
  t.equal(again.opened, false, 'and never again')
}

t.test('@fastify/session with its default MemoryStore', async (t) => {
  const { base, opened } = await buildApp(t)
  const client = new Client(base)
  const tokens = [await client.token(), await client.token(), await client.token()]
  for (const token of tokens.reverse()) await opensOnce(t, client, token)
  t.equal(opened.length, 3)
})

t.test('the guard saves the session after consuming: another instance sharing the store refuses the replay', async (t) => {
  const store = new MemoryStore()
  const one = await buildApp(t, { session: { store } })
  const two = await buildApp(t, { session: { store } })
  const client = new Client(one.base)
  const token = await client.token()
  const unused = await client.token()
  const r = await client.connect('/chat?token=' + token)
  t.equal(r.opened, true)
  await close(r)
  // a fresh request in between loads and saves the session again
  const fresh = await fetch(one.base + '/nothing', { headers: { cookie: client.cookie } })
  t.equal(fresh.status, 404)
  // instance two has never seen the token spent: only the saved session can tell it
  const onTwo = new Client(two.base)
  onTwo.cookie = client.cookie
  const replay = await onTwo.connect('/chat?token=' + token)
  t.equal(replay.opened, false)
  t.equal(replay.body.code, 'WS_GUARD_TOKEN_MISMATCH', 'the session on instance two no longer holds it')
  // the other token travelled with the session
  await opensOnce(t, onTwo, unused)
  const back = await client.connect('/chat?token=' + unused)
  t.equal(back.opened, false, 'and is spent for instance one too')
})

t.test('a seed-style token (a plain string stored by the app) works once', async (t) => {
  const seed = 'seed-token-' + 'x'.repeat(20)
  const { base } = await buildApp(t, {
    setup (app) {
      app.get('/seed', async (request) => {
        request.session.set('websocket_token' as any, seed)
        return { ok: true }
      })
    }
  })
  const client = new Client(base)
  client.tokenPath = '/seed'
  await client.getToken()
  await opensOnce(t, client, seed)
})

t.test('a session object without save() (a plain object) works too', async (t) => {
  const seed = 'plain-object-token'
  const { base } = await buildApp(t, {
    setup (app) {
      app.addHook('onRequest', async (request) => {
        if (request.url.startsWith('/chat')) (request as any).session = { websocket_token: seed }
      })
    }
  })
  const client = new Client(base)
  const r = await client.connect('/chat?token=' + seed)
  t.equal(r.opened, true)
  await close(r)
  const wrong = await client.connect('/chat?token=other')
  t.equal(wrong.body.code, 'WS_GUARD_TOKEN_MISMATCH')
})

t.test('a session store whose save fails: 503, no socket, the token is spent', async (t) => {
  const store = sessionStore()
  const lines: any[] = []
  const { base, opened, rejections } = await buildApp(t, {
    session: { store },
    fastify: { logger: { level: 'info', stream: { write: (s: string) => { lines.push(JSON.parse(s)) } } } }
  })
  const client = new Client(base)
  const token = await client.token()
  const next = await client.token()
  store.mode = 'fail'
  const r = await client.connect('/chat?token=' + token)
  refused(t, r, 'WS_GUARD_STORE_UNAVAILABLE', { statusCode: 503 })
  t.notOk(JSON.stringify(r.body).includes(token))
  t.equal(opened.length, 0)
  t.same(rejections.map((r) => [r.code, r.statusCode]), [['WS_GUARD_STORE_UNAVAILABLE', 503]], 'onReject saw it')
  const line = lines.find((l) => l.msg === 'websocket guard failed closed: token store unavailable')
  t.equal(line?.level, 50, 'logged at error')
  t.equal(line?.code, 'WS_GUARD_STORE_UNAVAILABLE')
  t.equal(line?.err?.message, 'session store down', 'with the cause')
  const protocol = await client.connect('/chat', { protocols: ['websocket-guard', 'websocket-guard.' + next] })
  refused(t, protocol, 'WS_GUARD_STORE_UNAVAILABLE', { statusCode: 503 })
  store.mode = 'ok'
  // fail closed: a token whose consumption could not be saved does not come back
  const retry = await client.connect('/chat?token=' + token)
  t.equal(retry.opened, false)
  await opensOnce(t, client, await client.token())
})

t.test('a session store whose save hangs: 503 after storeTimeout, no socket', async (t) => {
  const store = sessionStore()
  const { base, opened } = await buildApp(t, { session: { store }, guard: { storeTimeout: 100 } })
  const client = new Client(base)
  const token = await client.token()
  store.mode = 'hang'
  const r = await client.connect('/chat?token=' + token)
  refused(t, r, 'WS_GUARD_STORE_UNAVAILABLE', { statusCode: 503 })
  t.match(r.body.message, /100 ms/)
  t.equal(opened.length, 0)
})

t.test('storeTimeout is respected for session saves', async (t) => {
  const store = sessionStore()
  const patient = await buildApp(t, { session: { store }, guard: { storeTimeout: 5000 } })
  const client = new Client(patient.base)
  const token = await client.token()
  store.mode = 'slow'
  const r = await client.connect('/chat?token=' + token)
  t.equal(r.opened, true, 'a slow save within storeTimeout passes')
  await close(r)

  const store2 = sessionStore()
  const hasty = await buildApp(t, { session: { store: store2 }, guard: { storeTimeout: 50 } })
  const c2 = new Client(hasty.base)
  const token2 = await c2.token()
  store2.mode = 'slow'
  refused(t, await c2.connect('/chat?token=' + token2), 'WS_GUARD_STORE_UNAVAILABLE', { statusCode: 503 })
})

t.test('@fastify/secure-session: tokens in the in-memory store', async (t) => {
  t.test('issue, consume, replay of the old cookie refused', async (t) => {
    const { base, opened } = await buildApp(t, { secureSession: {} })
    const client = new Client(base)
    const token = await client.token()
    t.ok(client.cookie.startsWith('session='), 'a secure-session cookie')
    const cookieAtIssue = client.cookie
    const r = await client.connect('/chat?token=' + token)
    t.equal(r.opened, true)
    await close(r)
    t.same(opened[0]?.websocketGuard, { origin: base, token })
    // the old cookie still decrypts to the same session, but the store has forgotten the token
    const replay = await connect(`${base.replace('http', 'ws')}/chat?token=${token}`, { origin: base, headers: { cookie: cookieAtIssue } })
    t.equal(replay.opened, false)
    t.equal(replay.body.code, 'WS_GUARD_NO_TOKEN_STORED')
    const viaProtocol = await client.connect('/chat', { protocols: ['websocket-guard', 'websocket-guard.' + token] })
    t.equal(viaProtocol.opened, false)
  })

  t.test('an old cookie from before the app changed its session is refused too', async (t) => {
    const { base } = await buildApp(t, {
      secureSession: {},
      setup (app) {
        app.get('/login', async (request) => { (request as any).session.set('user', 'alice'); return { ok: true } })
      }
    })
    const client = new Client(base)
    const token = await client.token()
    const before = client.cookie
    client.tokenPath = '/login'
    await client.getToken()
    t.not(client.cookie, before, 'the session cookie changed')
    await opensOnce(t, client, token)
    const old = await connect(`${base.replace('http', 'ws')}/chat?token=${token}`, { origin: base, headers: { cookie: before } })
    t.equal(old.opened, false)
  })

  t.test('no cookie, or a forged one: nothing stored', async (t) => {
    const { base } = await buildApp(t, { secureSession: {} })
    const client = new Client(base)
    const token = await client.token()
    const none = await client.connect('/chat?token=' + token, { cookie: false })
    t.equal(none.body.code, 'WS_GUARD_NO_TOKEN_STORED')
    const forged = await client.connect('/chat?token=' + token, { cookie: false, headers: { cookie: 'session=' + 'A'.repeat(80) } })
    t.equal(forged.body.code, 'WS_GUARD_NO_TOKEN_STORED')
    await opensOnce(t, client, token)
  })

  t.test('multi-tab, path binding, expiry', async (t) => {
    const { base } = await buildApp(t, { secureSession: {}, guard: { maxTokens: 3 } })
    const client = new Client(base)
    const tokens = [await client.token(), await client.token(), await client.token(), await client.token()]
    const evicted = await client.connect('/chat?token=' + tokens[0])
    t.equal(evicted.body.code, 'WS_GUARD_TOKEN_MISMATCH', 'the oldest was evicted')
    for (const token of [tokens[2], tokens[3], tokens[1]] as string[]) await opensOnce(t, client, token)
    const bound = await client.token('?path=/elsewhere')
    const wrongPath = await client.connect('/chat?token=' + bound)
    t.equal(wrongPath.body.code, 'WS_GUARD_TOKEN_MISMATCH')
  })

  t.test('another session cannot use the token', async (t) => {
    const { base } = await buildApp(t, { secureSession: {} })
    const alice = new Client(base)
    const bob = new Client(base)
    const token = await alice.token()
    await bob.token()
    const r = await bob.connect('/chat?token=' + token)
    t.equal(r.body.code, 'WS_GUARD_TOKEN_MISMATCH')
    await opensOnce(t, alice, token)
  })

  t.test('a user store takes precedence over the in-memory one', async (t) => {
    const store = tokenStore()
    const { base } = await buildApp(t, { secureSession: {}, guard: { store } })
    const client = new Client(base)
    const token = await client.token()
    await opensOnce(t, client, token)
    t.same(store.calls, ['issue', 'consume', 'consume'])
  })
})

t.test('a user `store`', async (t) => {
  t.test('is used with @fastify/session; the session holds only an id', async (t) => {
    const store = tokenStore()
    const { base } = await buildApp(t, {
      guard: { store },
      setup (app) {
        app.get('/session', async (request) => ({ value: request.session.get('websocket_token' as any) }))
      }
    })
    const client = new Client(base)
    const token = await client.token()
    const second = await client.token()
    client.tokenPath = '/session'
    const { body } = await client.getToken()
    t.type(body.value, 'string', 'the session keeps a store id')
    t.not(body.value, token)
    t.equal(body.value.length, 22)
    await opensOnce(t, client, token)
    await opensOnce(t, client, second)
    t.same(store.calls, ['issue', 'issue', 'consume', 'consume', 'consume', 'consume'])
  })

  for (const mode of ['throw', 'reject', 'hang'] as const) {
    t.test(`a store that ${mode}s: 503 on the upgrade and on the token route`, async (t) => {
      const store = tokenStore()
      const { base, opened, rejections } = await buildApp(t, { guard: { store, storeTimeout: 100 } })
      const client = new Client(base)
      const token = await client.token()
      store.mode = mode
      refused(t, await client.connect('/chat?token=' + token), 'WS_GUARD_STORE_UNAVAILABLE', { statusCode: 503 })
      refused(t, await client.connect('/chat', { protocols: ['websocket-guard', 'websocket-guard.' + token] }), 'WS_GUARD_STORE_UNAVAILABLE', { statusCode: 503 })
      const res = await client.getToken()
      refused(t, res, 'WS_GUARD_STORE_UNAVAILABLE', { statusCode: 503 })
      t.notOk('token' in (res.body ?? {}), 'the token route issues nothing')
      t.equal(opened.length, 0)
      t.same(rejections.map((r) => r.code), Array(3).fill('WS_GUARD_STORE_UNAVAILABLE'))
      store.mode = 'ok'
      // the store never answered, so the token was not consumed
      await opensOnce(t, client, token)
    })
  }

  t.test('storeTimeout is respected', async (t) => {
    const store = tokenStore()
    const { base } = await buildApp(t, { guard: { store, storeTimeout: 5000 } })
    const client = new Client(base)
    store.mode = 'slow'
    const token = await client.token()
    const r: ConnectResult = await client.connect('/chat?token=' + token)
    t.equal(r.opened, true, 'slow calls within storeTimeout pass')
    await close(r)

    const store2 = tokenStore()
    const hasty = await buildApp(t, { guard: { store: store2, storeTimeout: 50 } })
    const c2 = new Client(hasty.base)
    const token2 = await c2.token()
    store2.mode = 'slow'
    const tooSlow = await c2.connect('/chat?token=' + token2)
    refused(t, tooSlow, 'WS_GUARD_STORE_UNAVAILABLE', { statusCode: 503 })
    t.match(tooSlow.body.message, /50 ms/)
    refused(t, await c2.getToken(), 'WS_GUARD_STORE_UNAVAILABLE', { statusCode: 503 })
  })

  t.test('a store the user passed in is not closed with the app; the built-in one is', async (t) => {
    const store = tokenStore()
    const app = Fastify()
    await app.register(cookie)
    await app.register(session, { secret: 'a-secret-with-at-least-32-characters-for-tests' })
    await app.register(websocket)
    await app.register(websocketGuard, { store })
    await app.ready()
    await app.close()
    t.equal(store.closed, 0)
  })
})
