// The socket's life at its edges: upgrades that fail or are closed between the checks and the
// opening, sockets without a session or a token, injectWS, shutdown, odd session plugins and
// stores, and the registry's own structures.
import t from 'tap'
import { connect as tcpConnect } from 'node:net'
import { randomUUID } from 'node:crypto'
import Fastify, { type FastifyRequest } from 'fastify'
import cookie from '@fastify/cookie'
import session, { MemoryStore } from '@fastify/session'
import websocket from '@fastify/websocket'
import websocketGuard, { issueWebsocketToken, memoryTokenStore, type TokenStore } from '../lib/index'
import { EndedGroups } from '../lib/sockets/index'
import { Deadlines } from '../lib/sockets/deadlines'
import { clock, TrackedEntry } from '../lib/sockets/registry'
import { buildApp, Client, SECRET, type AppOptions } from './helpers/app'
import { call, closedWithin, ENDED, held, open, tryOpen, until, withSessionRoutes } from './helpers/lifecycle'

function gate (): { wait: Promise<void>, open (): void } {
  let open!: () => void
  const wait = new Promise<void>((resolve) => { open = resolve })
  return { wait, open }
}

async function app (t: Parameters<typeof buildApp>[0], options: AppOptions = {}): Promise<Awaited<ReturnType<typeof buildApp>>> {
  return await buildApp(t, withSessionRoutes(options))
}

t.test('an upgrade whose connection is gone before the guard reserves it registers nothing', async (t) => {
  let seen = false
  const { app: server, base } = await app(t, {
    guard: {
      async origins (_origin: string, request: FastifyRequest) {
        // the client hangs up while the origin is being decided
        await until(() => request.raw.socket.destroyed)
        seen = true
        return true
      }
    }
  })
  const { port } = new URL(base)
  const socket = tcpConnect(Number(port), '127.0.0.1')
  await new Promise((resolve) => socket.once('connect', resolve))
  socket.write('GET /chat?token=x HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n')
  await new Promise((resolve) => setTimeout(resolve, 50))
  socket.resetAndDestroy()
  t.ok(await until(() => seen))
  await new Promise((resolve) => setTimeout(resolve, 50))
  t.same(held(server), { sockets: 0, groups: 0, users: 0, deadlines: 0 })
})

t.test('an upgrade that a later hook refuses leaves nothing registered', async (t) => {
  const { app: server, base } = await app(t, {
    setup (a) {
      a.get('/refused', { websocket: true, guard: true, preValidation: async (_request, reply) => { await reply.code(401).send({ no: true }) } }, () => {})
    }
  })
  const r = await tryOpen(new Client(base), '/refused')
  t.equal((r as { status: number }).status, 401)
  t.ok(await until(() => held(server)?.sockets === 0), 'forgotten once its connection closed')
})

t.test('a close while identify runs refuses the upgrade', async (t) => {
  const waiting = gate()
  const called = gate()
  const { base, opened } = await app(t, {
    guard: {
      async identify () {
        called.open()
        await waiting.wait
        return 'alice'
      }
    }
  })
  const client = new Client(base)
  const pending = tryOpen(client)
  await called.wait
  await call(client, '/close-session')
  waiting.open()
  const r = await pending
  t.notOk('ws' in r)
  t.equal((r as { status: number }).status, 403)
  t.equal((r as { body: { code: string } }).body.code, 'WS_GUARD_NO_TOKEN_STORED')
  t.equal(opened.length, 0)
})

t.test('a close after the checks, before the socket opens, closes it as it opens', async (t) => {
  const waiting = gate()
  const called = gate()
  const { base } = await app(t, {
    setup (a) {
      a.get('/slow', {
        websocket: true,
        guard: true,
        preHandler: async () => {
          called.open()
          await waiting.wait
        }
      }, (socket) => { socket.send('hello') })
    }
  })
  const client = new Client(base)
  const pending = tryOpen(client, '/slow')
  await called.wait
  await call(client, '/logout')
  waiting.open()
  const r = await pending
  t.ok('ws' in r, 'the upgrade completes')
  if ('ws' in r) t.same(await r.closed, ENDED, 'and is closed at once')
})

t.test('a route that checks only the origin: its sockets belong to the session too', async (t) => {
  const { app: server, base } = await app(t, {
    setup (a) {
      a.post('/hello', async (request) => {
        request.session.set('seen' as never, true as never)
        // a session without a group regenerates as before
        await request.session.regenerate(['seen'] as never)
        return {}
      })
      a.get('/origin-only', { websocket: true, guard: { token: false } }, (socket, request) => {
        socket.on('close', () => {
          // read only after the guard closed it: already aborted
          closedSignals.push((request.websocketGuard as { signal: AbortSignal }).signal.aborted)
        })
      })
    }
  })
  const closedSignals: boolean[] = []
  const client = new Client(base)
  // a session that never had a token, hence no group yet
  await call(client, '/hello')
  const r = await client.connect('/origin-only')
  t.equal(r.opened, true)
  const second = await client.connect('/origin-only')
  t.equal(held(server)?.groups, 1, 'the group made at the first upgrade was saved in the session')
  await call(client, '/logout')
  for (const socket of [r, second]) {
    const closed = await new Promise((resolve) => socket.socket?.once('close', (code, reason) => resolve({ code, reason: reason.toString() })))
    t.same(closed, ENDED)
  }
  t.ok(await until(() => closedSignals.length === 2))
  t.same(closedSignals, [true, true])
})

t.test('@fastify/secure-session, origin only: a group that cannot be saved from an upgrade still holds the socket', async (t) => {
  const { app: server, base } = await app(t, {
    secureSession: {},
    guard: { revalidateInterval: 1000 },
    setup (a) { a.get('/origin-only', { websocket: true, guard: { token: false } }, () => {}) }
  })
  const r = await new Client(base).connect('/origin-only')
  t.equal(r.opened, true)
  t.equal(held(server)?.sockets, 1)
  r.socket?.close()
})

t.test('a socket opened without any session has a group of its own, a lifetime, and closes at shutdown', async (t) => {
  const { app: server, base } = await app(t, {
    guard: { maxSocketLifetime: 400, revalidateInterval: 50 },
    setup (a) {
      a.get('/bare', {
        websocket: true,
        guard: { token: false },
        onRequest: async (request) => { (request as unknown as { session: null }).session = null }
      }, () => {})
    }
  })
  const client = new Client(base)
  const first = await client.connect('/bare')
  t.equal(first.opened, true)
  const closed = await new Promise((resolve) => first.socket?.once('close', (code) => resolve(code)))
  t.equal(closed, 4408, 'its lifetime')
  const second = await client.connect('/bare')
  const closing = new Promise((resolve) => second.socket?.once('close', (code) => resolve(code)))
  await server.close()
  t.equal(typeof await closing, 'number', 'closed at shutdown')
  t.same(held(server), { sockets: 0, groups: 0, users: 0, deadlines: 0 })
})

t.test('injectWS: an injected guarded socket lives and ends like any other', async (t) => {
  const { app: server, base } = await app(t, { guard: { origins: ['http://localhost'] } })
  const client = new Client(base)
  const token = await client.token('?path=/chat')
  const socket = await server.injectWS('/chat?token=' + token, { headers: { cookie: client.cookie, origin: 'http://localhost', host: 'localhost' } })
  t.equal(held(server)?.sockets, 1)
  const closed = new Promise((resolve) => socket.once('close', (code, reason) => resolve({ code, reason: reason.toString() })))
  await call(client, '/logout')
  t.same(await closed, ENDED)
  const again = await server.injectWS('/chat?token=' + await new Client(base).token('?path=/chat').catch(() => 'x'), { headers: { origin: 'http://localhost', host: 'localhost' } }).catch((err: Error) => err)
  t.type(again, Error, 'a token from another session opens nothing')
  // (an injected socket closed by its client is forgotten when ws destroys its stream, after
  // ws's close timeout: injectWS's stream never closes by itself)
  t.ok(await until(() => held(server)?.sockets === 0))
})

t.test('shutdown: app.close() closes guarded sockets as @fastify/websocket does, aborts their signals, stops everything', async (t) => {
  for (const preClose of [undefined, (done: () => void) => { done() }]) {
    const signals: AbortSignal[] = []
    const server = Fastify()
    t.teardown(() => server.close())
    await server.register(cookie)
    await server.register(session, { secret: SECRET, cookie: { secure: false } })
    await server.register(websocket, preClose === undefined ? {} : { preClose })
    await server.register(websocketGuard, { maxSocketLifetime: 60_000, revalidateInterval: 60_000 })
    server.get('/chat', { websocket: true, guard: true }, (_socket, request) => { signals.push((request.websocketGuard as { signal: AbortSignal }).signal) })
    await server.listen({ port: 0, host: '127.0.0.1' })
    const base = `http://127.0.0.1:${(server.server.address() as { port: number }).port}`
    const socket = await open(new Client(base))
    t.ok(await until(() => signals.length === 1))
    await server.close()
    const closed = await closedWithin(socket, 5000)
    // 1001 'going away', before @fastify/websocket's own preClose would close it without a
    // code (1005); with a preClose of the app's that leaves them open too
    t.equal(closed?.code, 1001)
    t.equal(signals[0]?.aborted, true)
    t.same(held(server), { sockets: 0, groups: 0, users: 0, deadlines: 0 })
  }
})

t.test('shutdown: a Fastify that refuses hooks once ready still closes every guarded socket, as @fastify/websocket does', async (t) => {
  const lines: any[] = []
  const server = Fastify({ logger: { level: 'debug', stream: { write: (line: string) => { lines.push(JSON.parse(line)) } } } })
  t.teardown(() => server.close())
  server.addHook('onReady', function (done) {
    const addHook = this.addHook
    this.addHook = function (this: any, name: string, fn: any) {
      if (name === 'onClose') throw new Error('no hooks once ready')
      return addHook.call(this, name as any, fn)
    } as any
    done()
  })
  await server.register(cookie)
  await server.register(session, { secret: SECRET, cookie: { secure: false } })
  await server.register(websocket)
  await server.register(websocketGuard)
  server.get('/chat', { websocket: true }, () => {})
  await server.listen({ port: 0, host: '127.0.0.1' })
  const base = `http://127.0.0.1:${(server.server.address() as { port: number }).port}`
  const socket = await open(new Client(base))
  await server.close()
  t.equal((await closedWithin(socket, 5000))?.code, 1005, '@fastify/websocket\'s own close')
  t.same(held(server), { sockets: 0, groups: 0, users: 0, deadlines: 0 })
  t.ok(lines.some((line) => line.level === 20 && line.err?.message === 'no hooks once ready' && /shutdown hook/.test(line.msg)))
})

t.test('a session class the guard cannot probe at registration is learnt from its first session', async (t) => {
  const lines: any[] = []
  const { base } = await app(t, {
    fastify: { logger: { level: 'debug', stream: { write: (line: string) => { lines.push(JSON.parse(line)) } } } },
    session: {
      idGenerator: (request: FastifyRequest) => {
        if (request.headers === undefined) throw new Error('this id generator needs a real request')
        return randomUUID()
      }
    }
  })
  t.ok(lines.some((l) => /could not make a probe session/.test(l.msg)))
  const client = new Client(base)
  const socket = await open(client)
  await call(client, '/logout')
  t.same(await socket.closed, ENDED)
})

t.test('a session store whose destroy throws: the callback gets the throw, the promise rejects with it', async (t) => {
  class ThrowingStore extends MemoryStore {
    override destroy (): void { throw new Error('destroy threw') }
  }
  const seen: string[] = []
  const { base } = await app(t, {
    session: { store: new ThrowingStore() },
    setup (a) {
      a.post('/logout-cb', (request, reply) => {
        request.session.destroy((err?: unknown) => { seen.push((err as Error).message); reply.send({}) })
      })
      a.post('/logout-promise', async (request) => {
        await request.session.destroy().catch((err: Error) => { seen.push(err.message) })
        return {}
      })
    }
  })
  for (const route of ['/logout-cb', '/logout-promise']) {
    const client = new Client(base)
    const socket = await open(client)
    await call(client, route)
    t.same(await socket.closed, ENDED)
  }
  t.same(seen, ['destroy threw', 'destroy threw'])
})

t.test('tokens without a group (issued by the seed\'s function) are dropped at logout; a failing revoke is logged', async (t) => {
  const lines: any[] = []
  const failing: TokenStore = { ...memoryTokenStore(), async revoke () { throw new Error('revoke failed') } }
  await t.test('seed-style token', async (t) => {
    const { base } = await app(t, {
      setup (a) {
        a.get('/seed', async (request) => ({ token: issueWebsocketToken(request.session, { path: '/chat' }) }))
        a.post('/regenerate', async (request) => { await request.session.regenerate(); return {} })
      }
    })
    const client = new Client(base)
    const { body } = await call(client, '/seed', 'GET')
    const oldCookie = client.cookie
    await call(client, '/regenerate')
    client.cookie = oldCookie
    const replay = await tryOpen(client, '/chat', body.token)
    t.notOk('ws' in replay)
  })
  await t.test('a store whose revoke fails', async (t) => {
    const { base } = await app(t, {
      guard: { store: failing },
      fastify: { logger: { level: 'error', stream: { write: (line: string) => { lines.push(JSON.parse(line)) } } } }
    })
    const client = new Client(base)
    const socket = await open(client)
    await call(client, '/logout')
    t.same(await socket.closed, ENDED, 'the sockets close all the same')
    t.ok(lines.some((l) => /could not revoke the tokens/.test(l.msg)))
    // closeSession says so, after closing the sockets
    const other = new Client(base)
    const theirs = await open(other)
    t.equal((await call(other, '/close-session')).status, 503)
    t.same(await theirs.closed, ENDED)
  })
})

t.test('lifecycle options are checked at registration', async (t) => {
  const plain = Fastify()
  t.teardown(() => plain.close())
  await plain.register(cookie)
  await plain.register(session, { secret: SECRET })
  await plain.register(websocket)
  await plain.register(websocketGuard)
  t.equal(held(plain)?.sockets, 0, 'no options: the defaults, closeOnSessionEnd on')
  for (const [options, name] of [[{ identify: 'me' }, 'identify'], [{ maxSocketLifetime: 0 }, 'maxSocketLifetime'], [{ revalidateInterval: 'often' }, 'revalidateInterval'], [{ closeOnSessionEnd: 'yes' }, 'closeOnSessionEnd']] as const) {
    const server = Fastify()
    t.teardown(() => server.close())
    await server.register(cookie)
    await server.register(session, { secret: SECRET })
    await server.register(websocket)
    await t.rejects(async () => { await server.register(websocketGuard, options as never) }, { code: 'WS_GUARD_INVALID_OPTION', message: new RegExp(name) })
  }
})

t.test('EndedGroups: remembered for their TTL, pruned from the front, bounded', async (t) => {
  const ended = new EndedGroups(50, 3)
  ended.add('a')
  ended.add('b')
  t.equal(ended.has('a'), true)
  t.equal(ended.has('z'), false)
  await new Promise((resolve) => setTimeout(resolve, 80))
  t.equal(ended.has('a'), false, 'forgotten after its TTL')
  ended.add('c')
  t.equal(ended.size, 1, 'the expired ones were pruned')
  for (const id of ['d', 'e', 'f']) ended.add(id)
  t.equal(ended.size, 3, 'never more than its bound')
  t.equal(ended.has('c'), false, 'the oldest went first')
  t.equal(ended.has('f'), true)
})

t.test('Deadlines: earliest first, removal from anywhere, far deadlines reached in steps', async (t) => {
  const fired: number[] = []
  const deadlines = new Deadlines((entry) => { fired.push(entry.openedAt); deadlines.remove(entry) })
  t.teardown(() => deadlines.stop())
  const now = clock()
  const entries = [50, 10, 40, 20, 30, 70, 60].map((offset) => {
    const entry = new TrackedEntry(offset)
    deadlines.add(entry, now + offset)
    return entry
  })
  deadlines.remove(entries[2] as TrackedEntry)
  deadlines.remove(entries[1] as TrackedEntry)
  const far = new TrackedEntry(-1)
  deadlines.add(far, now + 2 ** 33)
  t.ok(await until(() => fired.length === 5))
  t.same(fired, [20, 30, 50, 60, 70])
  t.equal(deadlines.size, 1, 'the far one waits')
  deadlines.remove(far)
  t.equal(deadlines.size, 0)
})
