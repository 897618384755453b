// Two app instances behind an imaginary load balancer, tokens in redisTokenStore: exactly once
// across instances, with every client library; first on one Redis (sessions there too, through
// connect-redis), then on a real Redis Cluster of 3 primaries and 3 replicas, through a
// CLUSTER FAILOVER of the session's primary.
import t, { type Test } from 'tap'
import { redisTokenStore } from '../lib/index'
import { generateToken, hashToken } from '../lib/tokens'
import { Client, close, type ConnectResult } from './helpers/app'
import {
  APP_ORIGIN, CLIENT_KINDS, buildInstance, clusterClient, command, info, monitor, proxiedClusterClient, redisClient, redisSkip,
  startCluster, startRedis, waitFor, type Instance, type RedisCluster, type RedisServer
} from './helpers/redis'
import { eventually, refused } from './helpers/util'

for (const kind of CLIENT_KINDS) {
  t.test(`two instances, tokens in Redis through ${kind}`, { skip: redisSkip(t) }, async (t) => {
    const redis = await startRedis(t)
    const { command } = await redisClient(t, kind, redis.url)
    const instances: Instance[] = []
    for (let i = 0; i < 2; i++) {
      // each instance has its own connections, as separate processes would
      const { client } = await redisClient(t, kind, redis.url)
      instances.push(await buildInstance(t, { sessions: { redisUrl: redis.url }, store: redisTokenStore({ client }) }))
    }
    const [a, b] = instances as [Instance, Instance]
    const totalOpened = (): number => a.opened.length + b.opened.length

    // one browser: the load balancer sends each of its requests to either instance
    function browser (): { on: (instance: Instance) => Client, token: (instance: Instance, query?: string) => Promise<string> } {
      let cookie = ''
      const on = (instance: Instance): Client => {
        const client = new Client(instance.base, APP_ORIGIN)
        client.cookie = cookie
        return client
      }
      return {
        on,
        async token (instance, query = '') {
          const client = on(instance)
          const token = await client.token(query)
          cookie = client.cookie
          return token
        }
      }
    }

    t.test('a token issued on one instance opens on the other, once', async (t) => {
      const user = browser()
      const token = await user.token(a)
      const first = await user.on(b).connect('/chat?token=' + token)
      t.equal(first.opened, true)
      t.same(b.opened.at(-1), { origin: APP_ORIGIN, token })
      await close(first)
      for (const instance of [a, b]) {
        const again = await user.on(instance).connect('/chat?token=' + token)
        refused(t, again, 'WS_GUARD_NO_TOKEN_STORED')
      }
      // and the other way round, through the subprotocol
      const back = await user.token(b)
      const viaProtocol = await user.on(a).connect('/chat', { protocols: ['websocket-guard', 'websocket-guard.' + back] })
      t.equal(viaProtocol.opened, true)
      t.equal(viaProtocol.protocol, 'websocket-guard')
      await close(viaProtocol)
    })

    t.test('one token on 16 simultaneous upgrades over both instances opens exactly one', async (t) => {
      const user = browser()
      for (let round = 0; round < 6; round++) {
        // a second outstanding token keeps the session's key alive: the losers see a mismatch
        await user.token(round % 2 === 0 ? b : a)
        const token = await user.token(round % 2 === 0 ? a : b)
        const before = totalOpened()
        const results: ConnectResult[] = await Promise.all(Array.from({ length: 16 }, (_, i) =>
          user.on(i % 2 === 0 ? a : b).connect('/chat?token=' + token)))
        t.equal(results.filter((r) => r.opened).length, 1, `round ${round}: one upgrade opened`)
        t.equal(totalOpened() - before, 1, `round ${round}: one handler ran`)
        const refused = results.filter((r) => !r.opened)
        t.same(new Set(refused.map((r) => `${String(r.status)} ${String(r.body?.code)}`)), new Set(['403 WS_GUARD_TOKEN_MISMATCH']), `round ${round}: 15 refused`)
        await Promise.all(results.map(close))
      }
    })

    t.test('a token bound to a path is refused on another route of the other instance, and stays valid', async (t) => {
      const user = browser()
      const token = await user.token(a, '?path=/chat')
      const elsewhere = await user.on(b).connect('/other?token=' + token)
      refused(t, elsewhere, 'WS_GUARD_TOKEN_MISMATCH')
      t.match(elsewhere.body.message, /bound to another path/)
      const there = await user.on(b).connect('/chat?token=' + token)
      t.equal(there.opened, true)
      await close(there)
      // an unbound token opens on any guarded route
      const any = await user.token(b)
      const other = await user.on(a).connect('/other?token=' + any)
      t.equal(other.opened, true)
      await close(other)
    })

    t.test('a wrong token consumes nothing on either instance', async (t) => {
      const user = browser()
      const token = await user.token(a)
      const wrong = await user.on(b).connect('/chat?token=' + token.slice(0, -1) + (token.endsWith('A') ? 'B' : 'A'))
      t.equal(wrong.body.code, 'WS_GUARD_TOKEN_MISMATCH')
      const foreign = await user.on(a).connect('/chat?token=' + token, { origin: 'http://evil.test' })
      t.equal(foreign.body.code, 'WS_GUARD_ORIGIN_NOT_ALLOWED')
      const right = await user.on(b).connect('/chat?token=' + token)
      t.equal(right.opened, true)
      await close(right)
    })

    t.test('every key in Redis carries an expiry', async (t) => {
      const keys = await command('KEYS', '*') as string[]
      t.ok(keys.some((k) => k.startsWith('ws-guard:')), 'token keys')
      t.ok(keys.some((k) => k.startsWith('sess:')), 'session keys')
      // -1 is a key without expiry; -2 one that expired in between
      for (const key of keys) t.not(Number(await command('PTTL', key)), -1, `${key} expires`)
    })
  })

  t.test(`expiry across instances, tokens in Redis through ${kind}`, { skip: redisSkip(t) }, async (t) => {
    const redis = await startRedis(t)
    const { command } = await redisClient(t, kind, redis.url)
    const { client } = await redisClient(t, kind, redis.url)
    const store = redisTokenStore({ client })
    const short = await buildInstance(t, { sessions: { redisUrl: redis.url }, store, guard: { tokenTTL: 1000 } })
    const long = await buildInstance(t, { sessions: { redisUrl: redis.url }, store })

    const user = new Client(short.base, APP_ORIGIN)
    const res = await user.getToken()
    const { token, expiresAt } = res.body
    const other = new Client(long.base, APP_ORIGIN)
    other.cookie = user.cookie
    const kept = await other.token()
    await eventually(t, 'the first token expired', () => Date.now() > expiresAt)
    const late = await other.connect('/chat?token=' + token)
    refused(t, late, 'WS_GUARD_TOKEN_EXPIRED')
    const fresh = await user.connect('/chat?token=' + kept)
    t.equal(fresh.opened, true)
    await close(fresh)

    // a session whose only token has expired has no key left at all
    const keysBefore = new Set(await command('KEYS', 'ws-guard:*') as string[])
    const alone = new Client(short.base, APP_ORIGIN)
    const lone = (await alone.getToken()).body
    const added = (await command('KEYS', 'ws-guard:*') as string[]).filter((k) => !keysBefore.has(k))
    t.equal(added.length, 1, 'one key for the new session')
    await eventually(t, 'the lone token expired', () => Date.now() > lone.expiresAt + 50)
    const gone = await new Client(long.base, APP_ORIGIN).connect('/chat?token=' + String(lone.token), { headers: { cookie: alone.cookie } })
    t.equal(gone.body.code, 'WS_GUARD_NO_TOKEN_STORED')
    t.equal(await command('EXISTS', added[0] as string), 0)
    t.equal(short.opened.length + long.opened.length, 1)
  })
}

/** The key the store keeps a browser's tokens under, read from its secure-session cookie. */
function keyOf (instance: Instance, cookie: string): string {
  const value = decodeURIComponent(cookie.slice(cookie.indexOf('=') + 1))
  return `ws-guard:{${String(instance.app.decodeSecureSession(value)?.get('websocket_token'))}}`
}

function record (): { hash: string, expiresAt: number, path: null } {
  return { hash: hashToken(generateToken()), expiresAt: Date.now() + 60_000, path: null }
}

/**
 * MONITOR on every current primary; `during(key, fn)`: the store's commands on `key` (and
 * every WAIT) that each primary ran while `fn` ran, by port.
 */
async function watchPrimaries (t: Test, cluster: RedisCluster): Promise<{ during (key: string, fn: () => Promise<unknown>): Promise<Map<number, Array<{ addr: string, command: string }>>> }> {
  const primaries: RedisServer[] = []
  for (const node of cluster.nodes) if ((await info(node.port, 'replication')).role === 'master') primaries.push(node)
  const monitors = await Promise.all(primaries.map((p) => monitor(t, p.port)))
  return {
    async during (key, fn) {
      await Promise.all(monitors.map((m) => m.settle()))
      const from = monitors.map((m) => m.seen.length)
      await fn()
      await Promise.all(monitors.map((m) => m.settle()))
      const out = new Map<number, Array<{ addr: string, command: string }>>()
      primaries.forEach((p, i) => {
        const seen = monitors[i]?.seen.slice(from[i]) ?? []
        // a script names its key after the SHA1 and the key count, DEL and PTTL first; WAIT none
        const ours = seen.filter((c) => c.addr !== 'lua' && (c.args.includes(key) || /^WAIT$/i.test(c.args[0] as string)))
        out.set(p.port, ours.map((c) => ({ addr: c.addr, command: (c.args[0] as string).toUpperCase() })))
      })
      return out
    }
  }
}

t.test('a real Redis Cluster of 3 primaries and 3 replicas', { skip: redisSkip(t, { cli: true }) }, async (t) => {
  // One cluster per client library, started together: the primaries of a shard refuse to vote
  // the same way twice within twice the node timeout, so failovers of one library's test
  // must not follow another's on the same shard.
  const clusters = await Promise.all(CLIENT_KINDS.map(() => startCluster(t)))

  for (const [k, kind] of CLIENT_KINDS.entries()) {
    const cluster = clusters[k] as RedisCluster
    const slotOf = async (key: string): Promise<number> => Number(await command(cluster.nodes[0]?.port as number, ['CLUSTER', 'KEYSLOT', key]))
    t.test(`through ${kind}`, async (t) => {
      const instances: Instance[] = []
      for (let i = 0; i < 2; i++) {
        // each instance has its own cluster client, as separate processes would
        const { client } = await clusterClient(t, kind, cluster)
        instances.push(await buildInstance(t, { sessions: 'secure-session', store: redisTokenStore({ client }), guard: { storeTimeout: 3000 } }))
      }
      const [a, b] = instances as [Instance, Instance]
      const user = new Client(a.base, APP_ORIGIN)
      await user.token()
      const key = keyOf(a, user.cookie)
      const slot = await slotOf(key)
      const on = (instance: Instance): Client => Object.assign(new Client(instance.base, APP_ORIGIN), { cookie: user.cookie })

      t.test('each call is one command (two with durability) in one round trip, on the primary of the session\'s slot and on no other node', async (t) => {
        const { primary } = await cluster.shard(slot)
        const { client, roundTrips } = await proxiedClusterClient(t, kind, cluster)
        const store = redisTokenStore({ client })
        const durable = redisTokenStore({ client, durability: { replicas: 1, timeout: 5000 } })
        const id = key.slice('ws-guard:{'.length, -1)
        const one = record()
        const two = record()
        // scripts loaded first: a node that lacks one answers NOSCRIPT, then runs the EVAL
        await store.issue(id, record(), 8)
        await durable.consume(id, one.hash, '/chat', Date.now())
        const steps: Array<[string, () => Promise<unknown>, string[]]> = [
          ['issue', () => store.issue(id, one, 8), ['EVALSHA']],
          ['consume', () => store.consume(id, one.hash, '/chat', Date.now()), ['EVALSHA']],
          ['issue', () => store.issue(id, two, 8), ['EVALSHA']],
          ['durable consume', () => durable.consume(id, two.hash, '/chat', Date.now()), ['EVALSHA', 'WAIT']],
          ['revoke', () => store.revoke(id), ['DEL']],
          ['durable revoke', () => durable.revoke(id), ['DEL', 'WAIT']]
        ]
        const primaries = await watchPrimaries(t, cluster)
        for (const [what, fn, commands] of steps) {
          const trips = roundTrips()
          const seen = await primaries.during(key, async () => {
            await fn()
            t.equal(roundTrips() - trips, 1, `${what}: one round trip`)
          })
          for (const [port, ours] of seen) {
            if (port !== primary.port) {
              t.same(ours, [], `${what}: nothing on the primary ${port}, which does not serve slot ${slot}`)
              continue
            }
            t.same(ours.map((c) => c.command), commands, `${what}: ${commands.join(', ')} on the slot's primary`)
            t.equal(new Set(ours.map((c) => c.addr)).size, 1, `${what}: on one connection`)
          }
        }
      })

      t.test('one token on 16 simultaneous upgrades over both instances opens exactly one, in each of 10 rounds, through a CLUSTER FAILOVER', async (t) => {
        for (let round = 0; round < 10; round++) {
          await on(round % 2 === 0 ? b : a).token()
          const token = await on(round % 2 === 0 ? a : b).token()
          const before = a.opened.length + b.opened.length
          // rounds 3 and 6: the session's replica takes over from its primary, and back
          const failingOver = round === 3 || round === 6
          // the upgrades start as the replica begins to take over
          const sides = failingOver ? await Promise.all(cluster.nodes.map((n) => monitor(t, n.port))) : []
          const failover = failingOver ? await cluster.failover(slot) : null
          const results: ConnectResult[] = await Promise.all(Array.from({ length: 16 }, (_, i) =>
            on(i % 2 === 0 ? a : b).connect('/chat?token=' + token)))
          if (failover !== null) {
            // where the consumes ran (a redirected one is not shown where it was refused)
            await Promise.all(sides.map((m) => m.settle()))
            const ran = (i: number): number => (sides[i]?.seen ?? []).filter((c) => /^EVAL/i.test(c.args[0] as string) && c.args.includes(key)).length
            const port = (n: RedisServer): number => ran(cluster.nodes.indexOf(n))
            t.comment(`round ${round}: consumes run by the old primary ${port(failover.from)}, by the promoted replica ${port(failover.to)}`)
          }
          t.equal(results.filter((r) => r.opened).length, 1, `round ${round}: one upgrade opened`)
          t.equal(a.opened.length + b.opened.length - before, 1, `round ${round}: one handler ran`)
          const refusals = new Set(results.filter((r) => !r.opened).map((r) => `${String(r.status)} ${String(r.body?.code)}`))
          // while the slot moves, an upgrade whose command was cut off fails closed
          const allowed = failingOver ? ['403 WS_GUARD_TOKEN_MISMATCH', '503 WS_GUARD_STORE_UNAVAILABLE'] : ['403 WS_GUARD_TOKEN_MISMATCH']
          t.ok([...refusals].every((r) => allowed.includes(r)), `round ${round}: refused with ${[...refusals].join(', ')}`)
          await Promise.all(results.map(close))
          if (failover !== null) {
            await failover.done
            t.equal((await info(failover.to.port, 'replication')).role, 'master', `round ${round}: the replica was promoted`)
          }
        }
      })

      t.test('while a slot migrates, a durable consume of a key already moved fails closed', async (t) => {
        // ASK would need the pipeline sent to the importing node after ASKING: not done, so
        // such a consume is refused (503) until the migration ends; a plain one follows ASK
        const { client } = await clusterClient(t, kind, cluster)
        const store = redisTokenStore({ client })
        const durable = redisTokenStore({ client, durability: { replicas: 1, timeout: 5000 } })
        const id = 'migrating'
        const migrating = await slotOf(`ws-guard:{${id}}`)
        const { primary: source } = await cluster.shard(migrating)
        const target = (await cluster.shard((migrating + 5461) % 16384)).primary
        const idOf = async (node: RedisServer): Promise<string> => String(await command(node.port, ['CLUSTER', 'MYID']))
        await command(target.port, ['CLUSTER', 'SETSLOT', String(migrating), 'IMPORTING', await idOf(source)])
        await command(source.port, ['CLUSTER', 'SETSLOT', String(migrating), 'MIGRATING', await idOf(target)])
        t.teardown(async () => {
          for (const node of [source, target]) await command(node.port, ['CLUSTER', 'SETSLOT', String(migrating), 'STABLE'])
        })
        t.equal(await store.consume(id, record().hash, '/chat', Date.now()), 'none-stored', 'a plain consume follows ASK')
        await t.rejects(durable.consume(id, record().hash, '/chat', Date.now()), /^ASK /)
        await t.rejects(durable.revoke(id), /^ASK /)
      })

      t.test('a durable consume whose client has not seen the failover follows the slot to its new primary', async (t) => {
        // ioredis would also refresh its slot map every 5 s by itself; this one waits for a MOVED
        const { client } = await clusterClient(t, kind, cluster, { slotsRefreshInterval: 600_000 })
        const durable = redisTokenStore({ client, durability: { replicas: 1, timeout: 5000 } })
        // an id on another shard than the session's, which has just failed over twice: its
        // primaries would not vote the same way again so soon
        const { primary: sessionPrimary } = await cluster.shard(slot)
        let id = ''
        let idSlot = 0
        for (let i = 0; id === ''; i++) {
          idSlot = await slotOf(`ws-guard:{durable-${i}}`)
          if ((await cluster.shard(idSlot)).primary !== sessionPrimary) id = `durable-${i}`
        }
        const one = record()
        await durable.issue(id, one, 8)
        const { from: before, to: promoted, done } = await cluster.failover(idSlot)
        await done
        const seen = await (await watchPrimaries(t, cluster)).during(`ws-guard:{${id}}`, async () => {
          t.equal(await durable.consume(id, one.hash, '/chat', Date.now()), 'consumed')
        })
        const ours = seen.get(promoted.port)?.map((c) => c.command) ?? []
        // MOVED from the old primary (MONITOR shows no redirected command), then the read that
        // teaches the client the slot's new node, then the pipeline there (with the script's
        // body if that node lacked it)
        t.match(ours.join(' '), /^PTTL EVALSHA WAIT( EVAL WAIT)?$/, `on the new primary: ${ours.join(', ')}`)
        t.notOk(seen.has(before.port), 'the old primary is a replica now')
      })
    })
  }
})
