// Two instances in separate processes sharing a real redis-server (connect-redis sessions,
// redisTokenStore on node-redis or ioredis): closes cross process boundaries only through
// Redis. Also: the race across two instances, and a shutdown that leaves nothing running. The
// children run the built package (dist/); test/helpers/instance.ts starts them.
import t from 'tap'
import { createClient } from 'redis'
import { CLIENT_KINDS, redisSkip, startRedis } from './helpers/redis'
import { call, Client, closedWithin, echoes, ENDED, raceLogout, tryOpen } from './helpers/lifecycle'
import { at, instance, openOn } from './helpers/instance'

for (const kind of CLIENT_KINDS) {
  t.test(`${kind}, two processes: logout on A closes the session's sockets on A and B; closeUser reaches both; a lost close is applied after a reconnect`, { skip: redisSkip(t) }, async (t) => {
    const redis = await startRedis(t)
    const config = { redisUrl: redis.url, client: kind, identify: true }
    const a = await instance(t, config)
    const b = await instance(t, config)
    const alice = new Client(a.base, null)
    await call(alice, '/login', 'POST', { user: 'alice' })
    const early = await alice.token('?path=/chat')
    const hers = [await openOn(alice, a), await openOn(alice, b), await openOn(alice, b)]
    const bob = new Client(b.base, null)
    await call(bob, '/login', 'POST', { user: 'bob' })
    const his = [await openOn(bob, a), await openOn(bob, b)]

    await call(alice, '/logout')
    for (const socket of hers) t.same(await closedWithin(socket, 5000), ENDED)
    for (const socket of his) t.equal(await echoes(socket), true)
    for (const instance of [a, b]) {
      const replay = await tryOpen(at(alice, instance), '/chat', early)
      t.notOk('ws' in replay, 'the old cookie and a token issued before the logout: refused')
    }

    await call(new Client(a.base, null), '/close-user', 'POST', { id: 'bob' })
    for (const socket of his) t.same(await closedWithin(socket, 5000), ENDED, 'closeUser on A closes bob\'s sockets on A and B')

    // the subscribers are killed just before a logout: B applies it once it has reconnected
    const carol = new Client(a.base, null)
    await call(carol, '/login', 'POST', { user: 'carol' })
    const remote = await openOn(carol, b)
    const admin = createClient({ url: redis.url })
    await admin.connect()
    t.teardown(() => { admin.destroy() })
    await admin.sendCommand(['CLIENT', 'KILL', 'TYPE', 'pubsub'])
    await call(carol, '/logout')
    t.same(await closedWithin(remote, 10_000), ENDED, 'closed after the reconnection')
  })
}

t.test('the race across two processes: an upgrade on B and the logout on A at the same moment never leave a socket open (100 rounds)', { skip: redisSkip(t) }, async (t) => {
  const redis = await startRedis(t)
  const config = { redisUrl: redis.url, client: 'node-redis' }
  const a = await instance(t, config)
  const b = await instance(t, config)
  await raceLogout(t, 100, async () => {
    const client = new Client(a.base, null)
    const token = await client.token('?path=/chat')
    const [upgrade] = await Promise.all([tryOpen(at(client, b), '/chat', token), call(client, '/logout')])
    return upgrade
  })
  const held = await (await fetch(b.base + '/held')).json() as { sockets: number }
  t.equal(held.sockets, 0, 'B holds nothing')
})

t.test('app.close() leaves nothing running: the process exits by itself, with its sockets closed', { skip: redisSkip(t) }, async (t) => {
  const redis = await startRedis(t)
  for (const kind of CLIENT_KINDS) {
    const server = await instance(t, { redisUrl: redis.url, client: kind, guard: { maxSocketLifetime: 60_000, revalidateInterval: 1000 } })
    const socket = await openOn(new Client(server.base, null), server)
    await call(new Client(server.base, null), '/shutdown')
    t.ok(await closedWithin(socket, 5000), 'its socket closed')
    const code = await Promise.race([server.exited, new Promise((resolve) => setTimeout(resolve, 10_000, 'still running'))])
    t.equal(code, 0, `${kind}: exited by itself`)
  }
})
