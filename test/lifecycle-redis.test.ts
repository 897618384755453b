// The socket's life across instances sharing a real redis-server (two apps in this process,
// each with its own clients, so that only Redis connects them): closes travel over the store's
// close bus, and a close published while an instance was cut off is applied when it is back.
import t, { type Test } from 'tap'
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify'
import cookie from '@fastify/cookie'
import session, { MemoryStore } from '@fastify/session'
import secureSession from '@fastify/secure-session'
import websocket from '@fastify/websocket'
import { RedisStore } from 'connect-redis'
import { createClient } from 'redis'
import IORedis from 'ioredis'
import websocketGuard, { redisTokenStore, type CloseListener, type CloseSubscription, type FastifyWebsocketGuardOptions, type TokenStore } from '../lib/index'
import { redisCloseBus } from '../lib/stores/redis-bus'
import { SECRET } from './helpers/app'
import { APP_ORIGIN, CLIENT_KINDS, redisClient, redisSkip, SECURE_SESSION_KEY, startRedis, type ClientKind } from './helpers/redis'
import { addEchoRoute, addSessionRoutes, call, Client, closedWithin, echoes, ENDED, held, tryOpen, until, type Opened } from './helpers/lifecycle'

interface Node {
  app: FastifyInstance
  base: string
  store: TokenStore
  /** log lines at warn and above */
  lines: any[]
}

interface NodeOptions {
  kind?: ClientKind
  sessions?: 'redis' | 'memory' | 'secure'
  guard?: FastifyWebsocketGuardOptions
  /** changes the store before the app registers it (a wrapped bus) */
  adapt?: (store: TokenStore) => TokenStore
  /** an ioredis client without lazyConnect */
  eager?: boolean
  /** the bus's heartbeat, in ms */
  heartbeat?: number
}

async function node (t: Test, url: string, options: NodeOptions = {}): Promise<Node> {
  const lines: any[] = []
  const app = Fastify({ logger: { level: 'warn', stream: { write (line: string) { lines.push(JSON.parse(line)) } } } })
  t.teardown(() => app.close())
  await app.register(cookie)
  if (options.sessions === 'secure') {
    await app.register(secureSession, { key: SECURE_SESSION_KEY, cookie: { path: '/', secure: false } })
  } else if (options.sessions === 'memory') {
    await app.register(session, { secret: SECRET, cookie: { secure: false }, store: new MemoryStore() })
  } else {
    const sessionClient = createClient({ url })
    sessionClient.on('error', () => {})
    await sessionClient.connect()
    t.teardown(() => { sessionClient.destroy() })
    await app.register(session, { secret: SECRET, cookie: { secure: false }, store: new RedisStore({ client: sessionClient, prefix: 'sess:' }) })
  }
  await app.register(websocket)
  let client
  if (options.eager === true) {
    const io = new IORedis(url)
    io.on('error', () => {})
    t.teardown(() => { io.disconnect() })
    client = io
  } else {
    client = (await redisClient(t, options.kind ?? 'node-redis', url)).client
  }
  const base = redisTokenStore({ client })
  if (options.heartbeat !== undefined) base.bus = redisCloseBus(client, 'ws-guard:', { heartbeat: options.heartbeat })
  const store = options.adapt?.(base) ?? base
  await app.register(websocketGuard, {
    origins: [APP_ORIGIN],
    sessionPlugin: options.sessions === 'secure' ? '@fastify/secure-session' : '@fastify/session',
    store,
    identify: (request: FastifyRequest) => (request.session.get('user' as never) as string | undefined) ?? null,
    ...options.guard
  })
  addEchoRoute(app)
  addSessionRoutes(app, options.sessions === 'secure')
  await app.listen({ port: 0, host: '127.0.0.1' })
  return { app, base: `http://127.0.0.1:${(app.server.address() as { port: number }).port}`, store, lines }
}

/** The same browser session on another instance (behind a load balancer). */
function on (client: Client, other: Node): Client {
  const moved = new Client(other.base, APP_ORIGIN)
  moved.cookie = client.cookie
  return moved
}

async function openOn (client: Client, at: Node): Promise<Opened> {
  const moved = on(client, at)
  const r = await tryOpen(moved)
  // the browser keeps whatever cookie any instance set
  client.cookie = moved.cookie
  if (!('ws' in r)) throw new Error(`refused: ${JSON.stringify(r.body)}`)
  return r
}

/** Kills every pub/sub connection (the buses' subscribers); they reconnect by themselves. */
async function killSubscribers (url: string): Promise<void> {
  const admin = createClient({ url })
  await admin.connect()
  await admin.sendCommand(['CLIENT', 'KILL', 'TYPE', 'pubsub'])
  admin.destroy()
}

for (const kind of CLIENT_KINDS) {
  t.test(`${kind}: logout on A closes the session's sockets on A and B; closeUser and closeSession reach every instance`, { skip: redisSkip(t) }, async (t) => {
    const redis = await startRedis(t)
    const a = await node(t, redis.url, { kind })
    const b = await node(t, redis.url, { kind })
    const alice = new Client(a.base, APP_ORIGIN)
    await call(alice, '/login', 'POST', { user: 'alice' })
    const early = await alice.token('?path=/chat')
    const hers = [await openOn(alice, a), await openOn(alice, b), await openOn(alice, b)]
    const bob = new Client(a.base, APP_ORIGIN)
    await call(bob, '/login', 'POST', { user: 'bob' })
    const his = [await openOn(bob, a), await openOn(bob, b)]

    await call(alice, '/logout')
    for (const socket of hers) t.same(await closedWithin(socket, 5000), ENDED)
    for (const socket of his) t.equal(await echoes(socket), true, 'another session is left alone')
    // the old cookie, replayed on either instance, with a token issued before the logout
    for (const at of [a, b]) {
      const replay = await tryOpen(on(alice, at), '/chat', early)
      t.notOk('ws' in replay, 'a token issued before the logout is refused after it')
    }

    // bob on two devices; "log out my other devices" from the first
    const phone = new Client(b.base, APP_ORIGIN)
    await call(phone, '/login', 'POST', { user: 'bob' })
    const onPhone = await openOn(phone, a)
    await call(on(bob, b), '/close-user', 'POST', { id: 'bob', except: true })
    t.same(await closedWithin(onPhone, 5000), ENDED)
    for (const socket of his) t.equal(await echoes(socket), true, 'the caller\'s session keeps its sockets')
    await call(phone, '/close-user', 'POST', { id: 'bob' })
    for (const socket of his) t.same(await closedWithin(socket, 5000), ENDED)

    const carol = new Client(b.base, APP_ORIGIN)
    const hersToo = [await openOn(carol, a), await openOn(carol, b)]
    await call(carol, '/close-session')
    for (const socket of hersToo) t.same(await closedWithin(socket, 5000), ENDED)
    const after = await openOn(carol, a)
    t.equal(await echoes(after), true, 'the session goes on')
    after.ws.close()
    t.ok(await until(() => held(a.app)?.sockets === 0 && held(b.app)?.sockets === 0))
  })

  t.test(`${kind}: the subscriber killed just before a logout: the remote sockets close once it reconnects`, { skip: redisSkip(t) }, async (t) => {
    const redis = await startRedis(t)
    const a = await node(t, redis.url, { kind })
    const b = await node(t, redis.url, { kind })
    const alice = new Client(a.base, APP_ORIGIN)
    await call(alice, '/login', 'POST', { user: 'alice' })
    const remote = await openOn(alice, b)
    const bob = new Client(a.base, APP_ORIGIN)
    await call(bob, '/login', 'POST', { user: 'bob' })
    const bobs = await openOn(bob, b)
    const carol = new Client(a.base, APP_ORIGIN)
    const carols = await openOn(carol, b)
    await killSubscribers(redis.url)
    // published while B listens to nothing
    await call(alice, '/logout')
    await call(carol, '/close-user', 'POST', { id: 'bob' })
    await call(carol, '/close-session')
    t.same(await closedWithin(remote, 10_000), ENDED, 'applied from its marker')
    t.same(await closedWithin(bobs, 10_000), ENDED, 'a user close too')
    t.same(await closedWithin(carols, 10_000), ENDED, 'a session close too')
    t.ok(b.lines.some((l) => /lost its close bus connection/.test(l.msg)), 'the gap was logged')
  })
}

t.test('a gap longer than the markers live: every socket reconnects with a fresh token (4408)', { skip: redisSkip(t) }, async (t) => {
  const redis = await startRedis(t)
  const shortMarkers = (store: TokenStore): TokenStore => ({
    ...store,
    bus: {
      async subscribe (listener: CloseListener) {
        const live = await (store.bus as NonNullable<TokenStore['bus']>).subscribe(listener)
        return { ...live, markerTTL: 1, publish: live.publish, missed: live.missed, close: live.close } satisfies CloseSubscription
      }
    }
  })
  const b = await node(t, redis.url, { adapt: shortMarkers })
  const socket = await openOn(new Client(b.base, APP_ORIGIN), b)
  await killSubscribers(redis.url)
  t.same(await closedWithin(socket, 10_000), { code: 4408, reason: 'socket lifetime reached' })
})

t.test('a resync that fails is tried again; garbage on the channel and in markers is ignored', { skip: redisSkip(t) }, async (t) => {
  const redis = await startRedis(t)
  let failures = 1
  const flaky = (store: TokenStore): TokenStore => ({
    ...store,
    bus: {
      async subscribe (listener: CloseListener) {
        const live = await (store.bus as NonNullable<TokenStore['bus']>).subscribe(listener)
        return {
          ...live,
          markerTTL: live.markerTTL,
          publish: live.publish,
          close: live.close,
          async missed (groups, users) {
            // slow, so that pings are answered while it runs
            await new Promise((resolve) => setTimeout(resolve, 150))
            if (failures-- > 0) throw new Error('missed failed')
            return await live.missed(groups, users)
          }
        } satisfies CloseSubscription
      }
    }
  })
  const a = await node(t, redis.url)
  const b = await node(t, redis.url, { adapt: flaky, eager: true, heartbeat: 30 })
  const admin = createClient({ url: redis.url })
  await admin.connect()
  t.teardown(() => { admin.destroy() })
  const alice = new Client(a.base, APP_ORIGIN)
  const remote = await openOn(alice, b)
  const garbage = ['not json', '42', 'null', '{}', JSON.stringify({ scope: 'x' }), JSON.stringify({ scope: 'user', id: '' }),
    JSON.stringify({ scope: 'user', id: 'u', code: 1000 }), JSON.stringify({ scope: 'user', id: 'u', code: 4401, reason: 1 }),
    JSON.stringify({ scope: 'user', id: 'u', code: 4401, reason: '', except: 5 }), JSON.stringify({ scope: 'user', id: 'u', code: 4401, reason: '', except: null })]
  for (const text of garbage) await admin.publish('ws-guard:closes', text)
  await admin.set('ws-guard:closed:whatever', 'garbage')
  t.equal(await echoes(remote), true, 'nothing closed by garbage')
  await killSubscribers(redis.url)
  await call(alice, '/logout')
  t.same(await closedWithin(remote, 15_000), ENDED, 'closed after the resync was tried again')
  t.equal(failures, -1, 'the first resync failed')
})

t.test('a silent subscriber (Redis stopped) is noticed by its heartbeat and resynced once back', { skip: redisSkip(t) }, async (t) => {
  const redis = await startRedis(t)
  const a = await node(t, redis.url, { heartbeat: 100 })
  const b = await node(t, redis.url, { heartbeat: 100 })
  const client = new Client(a.base, APP_ORIGIN)
  const socket = await openOn(client, b)
  redis.pause()
  await new Promise((resolve) => setTimeout(resolve, 450))
  redis.resume()
  t.equal(await echoes(socket), true)
  await new Promise((resolve) => setTimeout(resolve, 300))
  await call(client, '/close-session')
  t.same(await closedWithin(socket, 5000), ENDED, 'closes still travel after the gap')
})

t.test('Redis unavailable at a logout: local sockets close, the failure is logged; closeUser rejects with 503', { skip: redisSkip(t) }, async (t) => {
  const redis = await startRedis(t)
  const a = await node(t, redis.url, { sessions: 'memory', guard: { storeTimeout: 200 } })
  const client = new Client(a.base, APP_ORIGIN)
  await call(client, '/login', 'POST', { user: 'alice' })
  const socket = await openOn(client, a)
  redis.pause()
  t.teardown(() => redis.resume())
  await call(client, '/logout')
  t.same(await closedWithin(socket, 5000), ENDED, 'the local socket closes anyway')
  t.ok(await until(() => a.lines.some((l) => /could not tell the other instances/.test(l.msg))))
  t.ok(a.lines.some((l) => /could not revoke/.test(l.msg)))
  const res = await call(new Client(a.base, APP_ORIGIN), '/close-user', 'POST', { id: 'alice' })
  t.same(res, { status: 503, body: { code: 'WS_GUARD_STORE_UNAVAILABLE' } })
  redis.resume()
})

t.test('revalidation: a session deleted straight from Redis closes its sockets on every instance', { skip: redisSkip(t) }, async (t) => {
  const redis = await startRedis(t)
  const a = await node(t, redis.url, { guard: { revalidateInterval: 100 } })
  const b = await node(t, redis.url, { guard: { revalidateInterval: 100 } })
  const admin = createClient({ url: redis.url })
  await admin.connect()
  t.teardown(() => { admin.destroy() })
  const alice = new Client(a.base, APP_ORIGIN)
  await call(alice, '/login', 'POST', { user: 'alice' })
  const sockets = [await openOn(alice, a), await openOn(alice, b)]
  const bob = new Client(a.base, APP_ORIGIN)
  await call(bob, '/login', 'POST', { user: 'bob' })
  const his = await openOn(bob, b)
  const sid = decodeURIComponent(/sessionId=([^;]+)/.exec(alice.cookie)?.[1] as string).split('.')[0] as string
  t.equal(await admin.del('sess:' + sid), 1, 'an admin deletes the session')
  for (const socket of sockets) t.same(await closedWithin(socket, 5000), ENDED)
  t.equal(await echoes(his), true)
  his.ws.close()
})

t.test('@fastify/secure-session across instances: delete() on A closes B\'s sockets; revalidation reads the markers', { skip: redisSkip(t) }, async (t) => {
  const redis = await startRedis(t)
  // B hears no message at all: only revalidation's marker reads can close its sockets
  const deaf = (store: TokenStore): TokenStore => ({
    ...store,
    bus: { subscribe: async (listener: CloseListener) => await (store.bus as NonNullable<TokenStore['bus']>).subscribe({ ...listener, message () {} }) }
  })
  // a @fastify/secure-session session does not know its app: every app of this process that
  // ends sessions would end it. B and C leave that to A, as separate processes would.
  const a = await node(t, redis.url, { sessions: 'secure' })
  const b = await node(t, redis.url, { sessions: 'secure', adapt: deaf, guard: { revalidateInterval: 100, closeOnSessionEnd: false, storeTimeout: 250 } })
  const c = await node(t, redis.url, { sessions: 'secure', guard: { closeOnSessionEnd: false } })
  const alice = new Client(a.base, APP_ORIGIN)
  await call(alice, '/login', 'POST', { user: 'alice' })
  const onB = await openOn(alice, b)
  const onC = await openOn(alice, c)
  const bob = new Client(a.base, APP_ORIGIN)
  const his = await openOn(bob, b)
  await call(alice, '/logout')
  t.same(await closedWithin(onC, 5000), ENDED, 'through the bus')
  t.same(await closedWithin(onB, 5000), ENDED, 'through revalidation')
  t.equal(await echoes(his), true)
  // Redis stops answering: a check that waits is not repeated, one that fails is logged
  redis.pause()
  await new Promise((resolve) => setTimeout(resolve, 400))
  redis.resume()
  t.ok(await until(() => b.lines.some((l) => /could not revalidate its sessions/.test(l.msg))))
  t.equal(await echoes(his), true, 'a failed check closes nothing')
  his.ws.close()
})
