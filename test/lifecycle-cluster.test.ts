// The close bus on a real Redis Cluster of 3 primaries and 3 replicas, through each cluster
// client, and under Sentinel, through each client: two app instances in this process, each with its own cluster client, sessions in the
// cookie (@fastify/secure-session, one key for both), so that only the cluster connects them.
import { createHash } from 'node:crypto'
import t, { type Test } from 'tap'
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify'
import cookie from '@fastify/cookie'
import secureSession from '@fastify/secure-session'
import websocket from '@fastify/websocket'
import websocketGuard, { redisTokenStore } from '../lib/index'
import { redisCloseBus } from '../lib/stores/redis-bus'
import { APP_ORIGIN, CLIENT_KINDS, SECURE_SESSION_KEY, clusterClient, command, monitor, redisClient, redisSkip, sentinelClient, startCluster, startRedis, startSentinel, type ClientKind, type RedisCluster, type RedisSentinel } from './helpers/redis'
import { addEchoRoute, addSessionRoutes, call, Client, closedWithin, echoes, ENDED, held, tryOpen, until, type Opened } from './helpers/lifecycle'

interface Node {
  app: FastifyInstance
  base: string
}

async function node (t: Test, topology: { cluster: RedisCluster } | { sentinel: RedisSentinel }, kind: ClientKind, { heartbeat }: { heartbeat?: number } = {}): Promise<Node> {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(cookie)
  await app.register(secureSession, { key: SECURE_SESSION_KEY, cookie: { path: '/', secure: false } })
  await app.register(websocket)
  const { client } = 'cluster' in topology ? await clusterClient(t, kind, topology.cluster) : await sentinelClient(t, kind, topology.sentinel)
  const store = redisTokenStore({ client })
  t.ok(store.bus, `${kind}: the client carries closes`)
  if (heartbeat !== undefined) store.bus = redisCloseBus(client, 'ws-guard:', { heartbeat })
  await app.register(websocketGuard, {
    origins: [APP_ORIGIN],
    sessionPlugin: '@fastify/secure-session',
    store,
    storeTimeout: 3000,
    identify: (request: FastifyRequest) => (request.session.get('user' as never) as string | undefined) ?? null
  })
  addEchoRoute(app)
  addSessionRoutes(app, true)
  await app.listen({ port: 0, host: '127.0.0.1' })
  return { app, base: `http://127.0.0.1:${(app.server.address() as { port: number }).port}` }
}

/** Opens a socket on `at` with `client`'s session (a load balancer sending it there). */
async function openOn (client: Client, at: Node): Promise<Opened> {
  const moved = new Client(at.base, APP_ORIGIN)
  moved.cookie = client.cookie
  const r = await tryOpen(moved)
  client.cookie = moved.cookie
  if (!('ws' in r)) throw new Error(`refused: ${JSON.stringify(r.body)}`)
  return r
}

t.test('the close bus across a real Redis Cluster of 3 primaries and 3 replicas', { skip: redisSkip(t, { cli: true }) }, async (t) => {
  const cluster = await startCluster(t)

  for (const kind of CLIENT_KINDS) {
    t.test(`${kind}: a logout on one instance closes the session's sockets on the other; closeUser too`, async (t) => {
      const a = await node(t, { cluster }, kind)
      const b = await node(t, { cluster }, kind)
      const alice = new Client(a.base, APP_ORIGIN)
      await call(alice, '/login', 'POST', { user: 'alice' })
      const hers = [await openOn(alice, b), await openOn(alice, b), await openOn(alice, a)]
      const bob = new Client(b.base, APP_ORIGIN)
      await call(bob, '/login', 'POST', { user: 'bob' })
      const his = [await openOn(bob, a), await openOn(bob, b)]

      await call(alice, '/logout')
      for (const socket of hers) t.same(await closedWithin(socket, 5000), ENDED, 'her socket closed with 4401')
      for (const socket of his) t.equal(await echoes(socket), true, 'another session is left alone')

      const carol = new Client(a.base, APP_ORIGIN)
      await call(carol, '/login', 'POST', { user: 'carol' })
      const hersToo = await openOn(carol, b)
      await call(new Client(a.base, APP_ORIGIN), '/close-user', 'POST', { id: 'bob' })
      for (const socket of his) t.same(await closedWithin(socket, 5000), ENDED, 'closeUser on A closed his socket')
      // the marker is on the primary of its key's slot (any other node would answer MOVED)
      const marker = `ws-guard:user:${createHash('sha256').update('bob').digest('base64url')}`
      const { primary } = await cluster.shard(Number(await command(cluster.nodes[0]?.port as number, ['CLUSTER', 'KEYSLOT', marker])))
      const markers = await command(primary.port, ['LRANGE', marker, '0', '-1']) as string[]
      t.ok(markers.some((m) => JSON.parse(m).scope === 'user'), 'closeUser left its marker on its slot\'s primary')
      t.equal(await echoes(hersToo), true, 'another user is left alone')
      hersToo.ws.close()
      t.ok(await until(() => held(a.app)?.sockets === 0 && held(b.app)?.sockets === 0))
    })

    t.test(`${kind}: closes published just after every subscriber was cut off still arrive`, async (t) => {
      const a = await node(t, { cluster }, kind, { heartbeat: 200 })
      const b = await node(t, { cluster }, kind, { heartbeat: 200 })
      const alice = new Client(a.base, APP_ORIGIN)
      await call(alice, '/login', 'POST', { user: 'alice' })
      const hers = await openOn(alice, b)
      const bob = new Client(a.base, APP_ORIGIN)
      await call(bob, '/login', 'POST', { user: 'bob' })
      const his = await openOn(bob, b)
      const dave = new Client(a.base, APP_ORIGIN)
      await call(dave, '/login', 'POST', { user: 'dave' })
      const daves = await openOn(dave, b)
      // every pub/sub connection cut: what is published before it is back is heard by no one
      // (the race with the reconnection is the bus's, either way the close must arrive)
      await Promise.all(cluster.nodes.map((n) => command(n.port, ['CLIENT', 'KILL', 'TYPE', 'pubsub']).catch(() => null)))
      await call(alice, '/logout')
      await call(new Client(a.base, APP_ORIGIN), '/close-user', 'POST', { id: 'bob' })
      t.same(await closedWithin(hers, 10_000), ENDED, 'the logout reached B')
      t.same(await closedWithin(his, 10_000), ENDED, 'closeUser reached B')
      t.equal(await echoes(daves), true, 'another session is left alone')
      daves.ws.close()
    })
  }
})

t.test('the close bus under Sentinel (1 primary, 1 replica, 3 sentinels)', { skip: redisSkip(t) }, async (t) => {
  const sentinel = await startSentinel(t)
  for (const kind of CLIENT_KINDS) {
    t.test(`${kind}: a logout on one instance closes the session's sockets on the other`, async (t) => {
      const a = await node(t, { sentinel }, kind)
      const b = await node(t, { sentinel }, kind)
      const alice = new Client(a.base, APP_ORIGIN)
      await call(alice, '/login', 'POST', { user: 'alice' })
      const hers = [await openOn(alice, b), await openOn(alice, a)]
      const bob = new Client(b.base, APP_ORIGIN)
      await call(bob, '/login', 'POST', { user: 'bob' })
      const his = await openOn(bob, b)
      await call(alice, '/logout')
      for (const socket of hers) t.same(await closedWithin(socket, 5000), ENDED, 'her socket closed with 4401')
      t.equal(await echoes(his), true, 'another session is left alone')
      await call(new Client(a.base, APP_ORIGIN), '/close-user', 'POST', { id: 'bob' })
      t.same(await closedWithin(his, 5000), ENDED, 'closeUser on A closed his socket on B')
    })
  }
})

t.test('a subscription closed while its resync is pending sends nothing once the resync fails', { skip: redisSkip(t) }, async (t) => {
  const redis = await startRedis(t)
  const { client } = await redisClient(t, 'ioredis', redis.url)
  let failResync: ((err: Error) => void) | null = null
  const errors: unknown[] = []
  const subscription = await redisCloseBus(client, 'ws-guard:').subscribe({
    message () {},
    error (err) { errors.push(err) },
    resync: async () => await new Promise<void>((_resolve, reject) => { failResync = reject })
  })
  // the subscriber's connection cut: it reconnects, pings itself, then resyncs
  await command(redis.port, ['CLIENT', 'KILL', 'TYPE', 'pubsub'])
  t.ok(await until(() => failResync !== null), 'the resync started')
  await subscription.close()
  const seen = await monitor(t, redis.port)
  ;(failResync as unknown as (err: Error) => void)(new Error('resync failed'))
  await new Promise((resolve) => setTimeout(resolve, 300))
  await seen.settle()
  t.ok(errors.some((e) => e instanceof Error && e.message === 'resync failed'), 'the failure was reported')
  t.same(seen.seen.filter((c) => /^publish$/i.test(c.args[0] as string)), [], 'no ping after close')
})
