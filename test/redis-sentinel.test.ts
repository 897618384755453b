// Sentinel as users run it: a primary, a replica and 3 Sentinels, the clients finding the
// primary through the Sentinels (ioredis and iovalkey `sentinels`/`name`, node-redis
// `createSentinel`). SIGKILL the primary: the guard answers 503 during the gap, then issues and
// consumes again once the Sentinels have promoted the replica, without a restart, and no token
// opens twice.
import t from 'tap'
import { redisTokenStore, type RedisClientLike } from '../lib/index'
import { generateToken, hashToken } from '../lib/tokens'
import { Client, close } from './helpers/app'
import {
  APP_ORIGIN, CLIENT_KINDS, buildInstance, inSync, redisSkip, sentinelClient, startSentinel,
  type Instance, type RedisSentinel
} from './helpers/redis'
import { eventually } from './helpers/util'

t.test('Sentinel failover after the primary is killed', { skip: redisSkip(t) }, async (t) => {
  // one group per client library, started together (a Sentinel group takes seconds to form)
  const groups = await Promise.all(CLIENT_KINDS.map(() => startSentinel(t, { downAfter: 1000, failoverTimeout: 2000 })))

  for (const [k, kind] of CLIENT_KINDS.entries()) {
    const sentinel = groups[k] as RedisSentinel
    t.test(`through ${kind}`, async (t) => {
      const instances: Instance[] = []
      const clients: RedisClientLike[] = []
      for (let i = 0; i < 2; i++) {
        const { client } = await sentinelClient(t, kind, sentinel)
        clients.push(client)
        instances.push(await buildInstance(t, { sessions: 'secure-session', store: redisTokenStore({ client }), guard: { storeTimeout: 300 } }))
      }
      // durability through the Sentinels: the pipeline reaches the primary (WAIT on a replica
      // is an error) and the replica acknowledges
      const durable = redisTokenStore({ client: clients[0] as RedisClientLike, durability: { replicas: 1, timeout: 5000 } })
      const record = { hash: hashToken(generateToken()), expiresAt: Date.now() + 60_000, path: null }
      await durable.issue('durable', record, 8)
      t.equal(await durable.consume('durable', record.hash, '/chat', Date.now()), 'consumed', 'a durable consume through the Sentinels')
      t.equal(await sentinel.replica.command('EXISTS', 'ws-guard:{durable}'), 0, 'and the replica has applied it')
      const [a, b] = instances as [Instance, Instance]
      const user = new Client(a.base, APP_ORIGIN)
      const onB = (): Client => Object.assign(new Client(b.base, APP_ORIGIN), { cookie: user.cookie })
      const opened = (): number => a.opened.length + b.opened.length

      const used = await user.token()
      const first = await onB().connect('/chat?token=' + used)
      t.equal(first.opened, true, 'works through the Sentinels')
      await close(first)
      // issued before the outage, presented during it and after
      const pending = await user.token()
      await inSync(sentinel.primary, sentinel.replica)

      await sentinel.primary.kill()
      const during = await onB().connect('/chat?token=' + pending)
      t.equal(during.opened, false, 'nothing opens during the gap')
      t.equal(during.status, 503)
      t.equal(during.body.code, 'WS_GUARD_STORE_UNAVAILABLE')
      const refused = await user.getToken()
      t.equal(refused.status, 503, 'no token issued during the gap')
      t.equal(refused.body.code, 'WS_GUARD_STORE_UNAVAILABLE')
      t.equal(opened(), 1)

      for (const instance of [a, b]) {
        const probe = new Client(instance.base, APP_ORIGIN)
        await eventually(t, 'the token route recovers after the promotion', async () => (await probe.getToken()).status === 200, 30_000)
      }
      // the Sentinel that led the failover tells the others within a hello period (2 s)
      await eventually(t, 'every Sentinel names the replica as the primary', async () => {
        const ports = await Promise.all(sentinel.sentinels.map(async (s) => Number((await s.command('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', sentinel.name))[1])))
        return ports.every((port) => port === sentinel.replica.port)
      })

      const fresh = await user.token()
      const after = await onB().connect('/chat?token=' + fresh)
      t.equal(after.opened, true, 'a token issued after the promotion opens')
      await close(after)
      t.equal((await user.connect('/chat?token=' + fresh)).status, 403, 'once')
      // consumed before the outage and replicated: gone on the new primary too
      const replay = await onB().connect('/chat?token=' + used)
      t.equal(replay.status, 403, 'a token spent before the failover stays spent')
      // the consume answered 503 may have run when the client reconnected: at most once in all
      const late = [await user.connect('/chat?token=' + pending), await onB().connect('/chat?token=' + pending)]
      t.ok(late.filter((r) => r.opened).length <= 1, 'the pending token opens at most once')
      t.equal(late[1]?.opened, false)
      await Promise.all(late.map(close))
      t.ok(opened() <= 3 && opened() >= 2, `${opened()} sockets: one per token at most`)
    })
  }
})
