// The socket's life on one instance (API.md "The socket's life"): session end, closeSession,
// closeUser, identify, expiry, revalidation, the signal, shutdown, and no socket left open by
// an upgrade racing its session's end.
import t from 'tap'
import WebSocket from 'ws'
import { MemoryStore } from '@fastify/session'
import type { FastifyRequest } from 'fastify'
import { buildApp, Client, type AppOptions } from './helpers/app'
import { call, closedWithin, echoes, ENDED, held, open, raceLogout, tryOpen, until, withSessionRoutes, type Opened } from './helpers/lifecycle'
import { memoryTokenStore } from '../lib/index'

const LIFETIME = { code: 4408, reason: 'socket lifetime reached' }

async function app (t: Parameters<typeof buildApp>[0], options: AppOptions = {}): Promise<Awaited<ReturnType<typeof buildApp>>> {
  return await buildApp(t, withSessionRoutes(options))
}

t.test('logout closes every socket of that session with 4401 and leaves the other sessions\' sockets open', async (t) => {
  const { app: server, base } = await app(t)
  const alice = new Client(base)
  const bob = new Client(base)
  const hers = [await open(alice), await open(alice), await open(alice)]
  const his = await open(bob)
  t.same(held(server), { sockets: 4, groups: 2, users: 0, deadlines: 0 })

  t.equal((await call(alice, '/logout')).status, 200)
  for (const socket of hers) t.same(await socket.closed, ENDED)
  t.equal(await echoes(his), true, 'the other session\'s socket still works')
  t.same(held(server), { sockets: 1, groups: 1, users: 0, deadlines: 0 })
  his.ws.close()
  await his.closed
  t.ok(await until(() => held(server)?.sockets === 0), 'a socket closed by its client leaves nothing behind')
  t.same(held(server), { sockets: 0, groups: 0, users: 0, deadlines: 0 })
})

t.test('destroy and regenerate, promise and callback forms, close the sockets and return as before', async (t) => {
  const results: Record<string, unknown> = {}
  const { base } = await app(t, {
    setup (a) {
      a.post('/destroy-cb', (request, reply) => {
        request.session.destroy((err?: unknown) => { results.destroyCb = err ?? null; reply.send({ ok: true }) })
      })
      a.post('/regenerate', async (request) => {
        const before = request.session.sessionId
        results.regenerate = await request.session.regenerate()
        return { changed: request.session.sessionId !== before }
      })
      a.post('/regenerate-cb', (request, reply) => {
        request.session.regenerate((err?: unknown) => { results.regenerateCb = err ?? null; reply.send({ ok: true }) })
      })
      a.post('/regenerate-keys', async (request) => {
        request.session.set('user' as never, 'alice' as never)
        await request.session.regenerate(['user', 'websocket_token', 'websocket_token_group'] as never)
        return { user: request.session.get('user' as never), group: request.session.get('websocket_token_group' as never) ?? null }
      })
      a.post('/regenerate-keys-cb', (request, reply) => {
        request.session.regenerate(['websocket_token_group'] as never, (err?: unknown) => {
          reply.send({ err: err ?? null, group: request.session.get('websocket_token_group' as never) ?? null })
        })
      })
    }
  })
  for (const route of ['/destroy-cb', '/regenerate', '/regenerate-cb', '/regenerate-keys', '/regenerate-keys-cb']) {
    const client = new Client(base)
    const socket = await open(client)
    const other = await open(new Client(base))
    const res = await call(client, route)
    t.equal(res.status, 200, route)
    t.same(await socket.closed, ENDED, `${route} closed the session's socket`)
    t.equal(await echoes(other), true, `${route} left another session alone`)
    if (route === '/regenerate') t.same(res.body, { changed: true })
    if (route === '/regenerate-keys') t.same(res.body, { user: 'alice', group: null }, 'the app\'s keys are kept, the guard\'s are not')
    if (route === '/regenerate-keys-cb') t.same(res.body, { err: null, group: null })
    // a fresh socket of the regenerated session opens and stays
    const again = await tryOpen(client)
    t.ok('ws' in again, `${route}: the session that goes on opens new sockets`)
    if ('ws' in again) {
      t.equal(await echoes(again), true)
      again.ws.close()
    }
    other.ws.close()
  }
  t.same(results, { destroyCb: null, regenerate: undefined, regenerateCb: null })
})

t.test('a destroy that fails in the session store still fails the same way, and the sockets close', async (t) => {
  class FailingStore extends MemoryStore {
    override destroy (_id: string, callback: (err?: unknown) => void): void { callback(new Error('store down')) }
  }
  const seen: unknown[] = []
  const { base } = await app(t, {
    session: { store: new FailingStore() },
    setup (a) {
      a.post('/logout-promise', async (request) => {
        try {
          await request.session.destroy()
        } catch (err) {
          seen.push((err as Error).message)
        }
        return { ok: true }
      })
      a.post('/logout-cb', (request, reply) => {
        request.session.destroy((err?: unknown) => { seen.push((err as Error).message); reply.send({ ok: true }) })
      })
      a.post('/logout-throws', (request, reply) => {
        // a callback that throws: as with any store, the throw is the app's
        process.once('uncaughtException', (err) => { seen.push(`uncaught ${err.message}`); reply.send({ ok: true }) })
        request.session.destroy(() => { throw new Error('callback threw') })
      })
    }
  })
  for (const route of ['/logout-promise', '/logout-cb', '/logout-throws']) {
    const client = new Client(base)
    const socket = await open(client)
    t.equal((await call(client, route)).status, 200)
    t.same(await socket.closed, ENDED, route)
  }
  t.same(seen, ['store down', 'store down', 'uncaught callback threw'])
})

t.test('@fastify/secure-session: delete() and regenerate() close the session\'s sockets', async (t) => {
  const returned: unknown[] = []
  const { base } = await app(t, {
    secureSession: {},
    setup (a) {
      a.post('/delete', async (request) => {
        returned.push((request.session as unknown as { delete (): unknown }).delete())
        return { ok: true }
      })
      a.post('/regenerate-secure', async (request) => {
        request.session.set('user' as never, 'alice' as never)
        returned.push((request.session as unknown as { regenerate (keep: string[]): unknown }).regenerate(['user', 'websocket_token_group']))
        return { user: request.session.get('user' as never), group: request.session.get('websocket_token_group' as never) ?? null }
      })
      a.post('/regenerate-plain', async (request) => {
        returned.push((request.session as unknown as { regenerate (): unknown }).regenerate())
        return { ok: true }
      })
    }
  })
  for (const route of ['/delete', '/regenerate-secure', '/regenerate-plain']) {
    const client = new Client(base)
    const socket = await open(client)
    const other = await open(new Client(base))
    const res = await call(client, route)
    t.equal(res.status, 200)
    if (route === '/regenerate-secure') t.same(res.body, { user: 'alice', group: null })
    t.same(await socket.closed, ENDED, route)
    t.equal(await echoes(other), true)
    other.ws.close()
  }
  // a session without a group (it never had a token) deletes and regenerates as before
  const fresh = new Client(base)
  t.equal((await call(fresh, '/regenerate-plain')).status, 200)
  t.equal((await call(fresh, '/delete')).status, 200)
  t.same(returned, [undefined, undefined, undefined, undefined, undefined])
})

t.test('a token issued before logout is refused after it, with the old cookie replayed', async (t) => {
  const cases: Array<[string, AppOptions]> = [
    ['tokens in the session', {}],
    ['tokens in a memory store', { guard: { store: memoryTokenStore() } }],
    ['@fastify/secure-session', { secureSession: {} }]
  ]
  for (const [name, options] of cases) {
    const { base, opened } = await app(t, {
      ...options,
      setup (a) {
        a.post('/delete', async (request) => {
          (request.session as unknown as { delete (): void }).delete()
          return { ok: true }
        })
      }
    })
    const client = new Client(base)
    const early = await client.token('?path=/chat')
    const socket = await open(client)
    const oldCookie = client.cookie
    t.equal((await call(client, options.secureSession === undefined ? '/logout' : '/delete')).status, 200)
    t.same(await socket.closed, ENDED)
    // the attacker (or a stale tab) sends the cookie from before the logout
    client.cookie = oldCookie
    const replay = await tryOpen(client, '/chat', early)
    t.notOk('ws' in replay, `${name}: refused`)
    t.equal((replay as { status: number }).status, 403)
    t.equal(opened.length, 1, `${name}: no second socket opened`)
    if (options.secureSession !== undefined) {
      // a stateless cookie still names the ended group: a token issued to it now opens nothing either
      const late = await tryOpen(client, '/chat')
      t.notOk('ws' in late, 'a token issued to the replayed cookie after the end is refused too')
      t.equal((late as { body: { code: string } }).body.code, 'WS_GUARD_NO_TOKEN_STORED')
    }
  }
})

t.test('closeSession closes the session\'s sockets and drops its tokens; the session goes on', async (t) => {
  const { base } = await app(t)
  const client = new Client(base)
  const early = await client.token('?path=/chat')
  const socket = await open(client)
  const other = await open(new Client(base))
  t.same((await call(client, '/close-session', 'POST', { code: 4000, reason: 'privileges changed' })).body, { ok: true })
  t.same(await socket.closed, { code: 4000, reason: 'privileges changed' })
  t.equal(await echoes(other), true)
  const replay = await tryOpen(client, '/chat', early)
  t.notOk('ws' in replay, 'a token issued before the call is refused')
  const after = await open(client)
  t.equal(await echoes(after), true, 'a token issued after the call opens, and stays open')
  // default code and reason
  t.same((await call(client, '/close-session', 'POST', {})).body, { ok: true })
  t.same(await after.closed, ENDED)
  // a session with no socket, and with no group at all
  t.same((await call(client, '/close-session', 'POST', {})).body, { ok: true })
  t.same((await call(new Client(base), '/close-session', 'POST', {})).body, { ok: true })
  other.ws.close()
})

t.test('closeUser closes that user\'s sockets in every session; except keeps the caller\'s session', async (t) => {
  const { app: server, base } = await app(t, {
    guard: { identify: (request: FastifyRequest) => (request.session.get('user' as never) as string | undefined) ?? null }
  })
  const laptop = new Client(base)
  const phone = new Client(base)
  const bob = new Client(base)
  const anonymous = new Client(base)
  await call(laptop, '/login', 'POST', { user: 'alice' })
  await call(phone, '/login', 'POST', { user: 'alice' })
  await call(bob, '/login', 'POST', { user: 'bob' })
  const onLaptop = [await open(laptop), await open(laptop)]
  const onPhone = await open(phone)
  const bobs = await open(bob)
  const nobody = await open(anonymous)
  t.same(held(server), { sockets: 5, groups: 4, users: 2, deadlines: 0 })

  // "log out my other devices", from the laptop
  t.same((await call(laptop, '/close-user', 'POST', { id: 'alice', except: true })).body, { ok: true })
  t.same(await onPhone.closed, ENDED)
  for (const socket of onLaptop) t.equal(await echoes(socket), true, 'the caller\'s session keeps its sockets')
  t.equal(await echoes(bobs), true)

  t.same((await call(bob, '/close-user', 'POST', { id: 'alice', code: 4403, reason: 'banned' })).body, { ok: true })
  for (const socket of onLaptop) t.same(await socket.closed, { code: 4403, reason: 'banned' })
  t.equal(await echoes(bobs), true)
  t.equal(await echoes(nobody), true)
  t.same(held(server), { sockets: 2, groups: 2, users: 1, deadlines: 0 })
  // nobody by that name: nothing to close
  t.same((await call(bob, '/close-user', 'POST', { id: 'carol' })).body, { ok: true })
  bobs.ws.close()
  nobody.ws.close()
})

t.test('closeSession and closeUser refuse bad options with WS_GUARD_INVALID_OPTION and close nothing', async (t) => {
  let request: FastifyRequest | undefined
  const { app: server, base } = await app(t, {
    guard: { identify: () => 'alice' },
    setup (a) { a.post('/capture', async (r) => { request = r; return {} }) }
  })
  const client = new Client(base)
  const socket = await open(client)
  await call(client, '/capture')
  const bad: unknown[] = [
    { code: 3999 }, { code: 5000 }, { code: 4000.5 }, { code: '4401' }, { code: NaN }, { code: 1000 },
    { reason: 'x'.repeat(124) }, { reason: 'é'.repeat(62) }, { reason: 42 }, { except: 'me' }, { colour: 'red' }, null, 'soon'
  ]
  for (const options of bad) {
    await t.rejects(server.websocketGuard.closeSession(request as FastifyRequest, options as never), { code: 'WS_GUARD_INVALID_OPTION', name: 'TypeError' }, `closeSession ${JSON.stringify(options)}`)
    await t.rejects(server.websocketGuard.closeUser('alice', options as never), { code: 'WS_GUARD_INVALID_OPTION' }, `closeUser ${JSON.stringify(options)}`)
  }
  for (const id of ['', 42, null, 'x'.repeat(1025)]) {
    await t.rejects(server.websocketGuard.closeUser(id as never), { code: 'WS_GUARD_INVALID_OPTION' }, `closeUser id ${JSON.stringify(id)}`)
  }
  t.equal(await echoes(socket), true, 'nothing was closed')
  // a reason of exactly 123 bytes is the longest a close frame carries
  await server.websocketGuard.closeUser('alice', { code: 4999, reason: 'é'.repeat(61) + 'x' })
  t.same(await socket.closed, { code: 4999, reason: 'é'.repeat(61) + 'x' })
  // a request without a session has nothing to close
  await server.websocketGuard.closeSession({} as FastifyRequest)
  await server.websocketGuard.closeSession(null as never)
})

t.test('identify throwing, rejecting, hanging or answering nonsense refuses the upgrade (503, logged)', async (t) => {
  const modes: Record<string, (request: FastifyRequest) => unknown> = {
    throws: () => { throw new Error('identify threw') },
    rejects: async () => { throw new Error('identify rejected') },
    hangs: async () => await new Promise(() => {}),
    number: () => 42,
    empty: () => '',
    undefined: () => undefined
  }
  for (const [mode, identify] of Object.entries(modes)) {
    const lines: any[] = []
    const { base, opened } = await app(t, {
      fastify: { logger: { level: 'error', stream: { write: (line: string) => { lines.push(JSON.parse(line)) } } } },
      guard: { identify: identify as never, storeTimeout: 200 }
    })
    const r = await tryOpen(new Client(base))
    if (mode === 'undefined') {
      t.ok('ws' in r, 'no user is a socket without a user')
      if ('ws' in r) r.ws.close()
      continue
    }
    t.notOk('ws' in r, `${mode}: no socket`)
    t.equal((r as { status: number }).status, 503)
    t.equal((r as { body: { code: string } }).body.code, 'WS_GUARD_STORE_UNAVAILABLE')
    t.equal(opened.length, 0)
    const logged = lines.find((l) => l.code === 'WS_GUARD_STORE_UNAVAILABLE')
    t.ok(logged, `${mode}: logged`)
    if (mode === 'throws' || mode === 'rejects') t.match(logged.err.message, `identify ${mode === 'throws' ? 'threw' : 'rejected'}`)
    if (mode === 'hangs') t.match(logged.err.message, 'did not answer within 200 ms')
    if (mode === 'number') t.match(logged.err.message, 'identify must return null or a non-empty string')
  }
})

t.test('maxSocketLifetime and the session cookie\'s expiry close the socket with 4408, whichever is first', async (t) => {
  await t.test('maxSocketLifetime', async (t) => {
    const { app: server, base } = await app(t, { guard: { maxSocketLifetime: 300 } })
    const started = Date.now()
    const sockets = [await open(new Client(base)), await open(new Client(base))]
    const early = await open(new Client(base))
    early.ws.close()
    await early.closed
    for (const socket of sockets) t.same(await socket.closed, LIFETIME)
    t.ok(Date.now() - started >= 250, 'not before its lifetime')
    t.same(held(server), { sockets: 0, groups: 0, users: 0, deadlines: 0 })
  })
  await t.test('the session cookie\'s maxAge, before maxSocketLifetime', async (t) => {
    const { base } = await app(t, { session: { cookie: { secure: false, maxAge: 400 } }, guard: { maxSocketLifetime: 60_000 } })
    const socket = await open(new Client(base))
    t.same(await closedWithin(socket, 5000), LIFETIME)
  })
  await t.test('a session cookie without expiry: only maxSocketLifetime', async (t) => {
    const { base } = await app(t, { guard: { maxSocketLifetime: 200 } })
    const socket = await open(new Client(base))
    t.same(await closedWithin(socket, 5000), LIFETIME)
  })
  await t.test('a cookie with a fixed expires date', async (t) => {
    const { base } = await app(t, { session: { cookie: { secure: false, expires: new Date(Date.now() + 1500) } } })
    const socket = await open(new Client(base))
    t.same(await closedWithin(socket, 5000), LIFETIME)
  })
  await t.test('@fastify/secure-session\'s expiry', async (t) => {
    const { base } = await app(t, { secureSession: { expiry: 2 } })
    const socket = await open(new Client(base))
    t.same(await closedWithin(socket, 5000), LIFETIME)
  })
})

t.test('revalidation: one store read per session per interval; a session deleted from the store closes its sockets', async (t) => {
  class CountingStore extends MemoryStore {
    reads = 0
    sessions = new Map<string, unknown>()
    override set (id: string, session: unknown, callback: (err?: unknown) => void): void { this.sessions.set(id, session); super.set(id, session as never, callback) }
    override get (id: string, callback: Parameters<MemoryStore['get']>[1]): void { this.reads++; super.get(id, callback) }
  }
  const store = new CountingStore()
  const { base } = await app(t, { session: { store }, guard: { revalidateInterval: 150 } })
  const clients = [new Client(base), new Client(base), new Client(base)]
  const sockets: Opened[][] = []
  for (const [i, client] of clients.entries()) {
    await call(client, '/login', 'POST', { user: `user-${i}` })
    sockets.push([await open(client), await open(client), await open(client)])
  }
  const before = store.reads
  await new Promise((resolve) => setTimeout(resolve, 1000))
  const intervals = 1000 / 150
  const perInterval = (store.reads - before) / intervals
  t.ok(perInterval > 2 && perInterval <= 3.5, `about 3 reads per interval for 9 sockets in 3 sessions (${perInterval.toFixed(2)})`)
  // deleted behind the app's back: an admin, the store's own TTL
  const [sid] = [...store.sessions].find(([, s]) => (s as { user?: string }).user === 'user-1') as [string, unknown]
  await new Promise((resolve) => store.destroy(sid, resolve))
  for (const socket of sockets[1] as Opened[]) t.same(await closedWithin(socket, 3000), ENDED)
  for (const socket of [...(sockets[0] as Opened[]), ...(sockets[2] as Opened[])]) t.equal(await echoes(socket), true)
  for (const socket of sockets.flat()) socket.ws.close()
})

t.test('revalidation: a store error keeps the sockets; ENOENT counts as gone; a slow check is not asked twice', async (t) => {
  let mode: 'ok' | 'fail' | 'enoent' | 'slow' = 'ok'
  let reads = 0
  class Store extends MemoryStore {
    override get (id: string, callback: Parameters<MemoryStore['get']>[1]): void {
      if (mode === 'ok') return super.get(id, callback)
      reads++
      if (mode === 'fail') return callback(new Error('store down'))
      if (mode === 'enoent') return callback(Object.assign(new Error('gone'), { code: 'ENOENT' }))
    }
  }
  const lines: any[] = []
  const { base } = await app(t, {
    session: { store: new Store() },
    fastify: { logger: { level: 'warn', stream: { write: (line: string) => { lines.push(JSON.parse(line)) } } } },
    guard: { revalidateInterval: 100, storeTimeout: 1000 }
  })
  const socket = await open(new Client(base))
  mode = 'fail'
  await new Promise((resolve) => setTimeout(resolve, 350))
  t.equal(await echoes(socket), true, 'a store that fails proves nothing: the socket stays')
  t.ok(lines.some((l) => /could not revalidate a session/.test(l.msg)))
  mode = 'slow'
  reads = 0
  await new Promise((resolve) => setTimeout(resolve, 550))
  t.ok(reads <= 1, `a check still waiting is not repeated (${reads} reads)`)
  t.equal(await echoes(socket), true)
  mode = 'enoent'
  t.same(await closedWithin(socket, 3000), ENDED)
})

t.test('signal: aborted before the close frame is sent; never for a close by the client', async (t) => {
  const seen: Array<{ state: number, aborted: boolean }> = []
  const signals: AbortSignal[] = []
  const { base } = await app(t, {
    setup (a) {
      a.get('/watched', { websocket: true, guard: true }, (socket, request) => {
        const signal = (request.websocketGuard as { signal: AbortSignal }).signal
        signals.push(signal)
        signal.addEventListener('abort', () => {
          seen.push({ state: socket.readyState, aborted: signal.aborted })
          // the handler may still say goodbye: the close frame comes after
          socket.send('bye')
        })
        socket.send('ready')
      })
    }
  })
  const client = new Client(base)
  const socket = await open(client, '/watched')
  const messages = socket.result.messages as string[]
  t.ok(await until(() => messages.includes('ready')))
  await call(client, '/logout')
  t.same(await socket.closed, ENDED)
  t.same(seen, [{ state: WebSocket.OPEN, aborted: true }], 'aborted while the socket was still open')
  t.same(messages, ['ready', 'bye'], 'what the handler sent on abort arrived before the close')

  const other = await open(new Client(base), '/watched')
  other.ws.close()
  await other.closed
  await new Promise((resolve) => setTimeout(resolve, 50))
  t.equal(signals[1]?.aborted, false, 'a close by the client aborts nothing')
  t.equal(seen.length, 1)
})

t.test('closeOnSessionEnd: false leaves sockets open at logout; closeSession still closes them', async (t) => {
  const { app: server, base } = await app(t, { guard: { closeOnSessionEnd: false, maxSocketLifetime: 60_000 } })
  const client = new Client(base)
  const socket = await open(client)
  await call(client, '/logout')
  t.equal(await echoes(socket), true, 'still open after the logout')
  const other = new Client(base)
  const theirs = await open(other)
  await call(other, '/close-session', 'POST', {})
  t.same(await theirs.closed, ENDED)
  t.same(held(server), { sockets: 1, groups: 1, users: 0, deadlines: 1 })
  socket.ws.close()
})

t.test('with every lifecycle feature off the guard follows no socket; closeSession still drops tokens', async (t) => {
  const { app: server, base, opened } = await app(t, { guard: { closeOnSessionEnd: false } })
  t.equal(held(server), null, 'no registry at all')
  const client = new Client(base)
  const socket = await open(client)
  t.equal((opened[0]?.websocketGuard as { signal: AbortSignal }).signal.aborted, false, 'a signal that never aborts')
  const early = await client.token('?path=/chat')
  await call(client, '/close-session', 'POST', {})
  t.equal(await echoes(socket), true, 'nothing to close')
  const replay = await tryOpen(client, '/chat', early)
  t.notOk('ws' in replay, 'the token issued before is dropped')
  await server.websocketGuard.closeUser('anyone')
  socket.ws.close()
})

for (const [name, store] of [['tokens in the session', undefined], ['tokens in a memory store', memoryTokenStore]] as const) {
  t.test(`the race, ${name}: an upgrade and the logout of its session at the same moment never leave a socket open (100 rounds)`, async (t) => {
    const { app: server, base } = await app(t, store === undefined ? {} : { guard: { store: store() } })
    await raceLogout(t, 100, async () => {
      const client = new Client(base)
      const token = await client.token('?path=/chat')
      const [upgrade] = await Promise.all([tryOpen(client, '/chat', token), call(client, '/logout')])
      return upgrade
    })
    t.ok(await until(() => held(server)?.sockets === 0))
  })
}

t.test('sockets opened and closed by their clients, in any order, leave nothing behind', async (t) => {
  const { app: server, base } = await app(t, { guard: { maxSocketLifetime: 3_600_000, identify: () => 'someone', maxTokens: 100 } })
  const clients = Array.from({ length: 20 }, () => new Client(base))
  for (let round = 0; round < 10; round++) {
    const sockets = (await Promise.all(clients.map(async (client) => [await open(client), await open(client)]))).flat()
    t.equal(held(server)?.sockets, 40)
    // closed in a shuffled order: the heap and the lists lose entries from anywhere
    sockets.sort(() => Math.random() - 0.5)
    for (const socket of sockets) socket.ws.close()
    await Promise.all(sockets.map(async (socket) => await socket.closed))
    t.ok(await until(() => held(server)?.sockets === 0))
  }
  t.same(held(server), { sockets: 0, groups: 0, users: 0, deadlines: 0 })
})
