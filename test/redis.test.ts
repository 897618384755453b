// redisTokenStore on a real redis-server, with both client libraries: the rules of findToken,
// maxTokens, expiry of every key, one round trip per call, and atomicity across connections.
import t from 'tap'
import { redisTokenStore, type StoredToken, type TokenStore } from '../lib/index'
import { hashToken, generateToken } from '../lib/tokens'
import { CLIENT_KINDS, redisClient, redisSkip, startProxy, startRedis, tracedClient, waitFor, replicasOnline } from './helpers/redis'
import { eventually } from './helpers/util'

function record (expiresIn: number, path: string | null = null): { token: string, record: StoredToken } {
  const token = generateToken()
  return { token, record: { hash: hashToken(token), expiresAt: Date.now() + expiresIn, path } }
}

t.test('options are checked when the store is made', async (t) => {
  const coded = (message: RegExp) => ({ name: 'TypeError', code: 'WS_GUARD_INVALID_OPTION', message })
  t.throws(() => redisTokenStore(undefined as any), coded(/options must be an object/))
  t.throws(() => redisTokenStore(null as any), coded(/options must be an object/))
  const clientMessage = /client must be a node-redis \(4\+\) client, cluster or sentinel, or an ioredis or iovalkey client or cluster/
  t.throws(() => redisTokenStore({} as any), coded(clientMessage))
  t.throws(() => redisTokenStore({ client: 'redis://127.0.0.1' } as any), coded(clientMessage))
  // eval alone, or ioredis' evalsha without the rest of ioredis, is neither client
  t.throws(() => redisTokenStore({ client: { eval () {} } } as any), coded(clientMessage))
  t.throws(() => redisTokenStore({ client: { eval () {}, evalsha () {} } } as any), coded(clientMessage))
  t.throws(() => redisTokenStore({ client: { eval () {}, evalsha () {}, pipeline () {} } } as any), coded(clientMessage))
  t.throws(() => redisTokenStore({ client: { evalSha () {} } } as any), coded(clientMessage))
  t.throws(() => redisTokenStore({ client: { eval () {}, evalSha () {} } } as any), coded(clientMessage))

  // the shape of a node-redis client is enough to reach the other checks; nothing is sent
  const client = { eval () {}, evalSha () {}, multi () {} } as any
  t.throws(() => redisTokenStore({ client, prefx: 'a:' } as any), coded(/unknown option prefx \(known: client, prefix, durability\)/))
  t.throws(() => redisTokenStore({ client, prefix: 1 as any }), coded(/prefix must be a string/))
  t.throws(() => redisTokenStore({ client, prefix: 'app{1}:' }), coded(/prefix must not contain \{ or \}/))
  t.throws(() => redisTokenStore({ client, prefix: 'app}' }), coded(/prefix must not contain \{ or \}/))
  for (const durability of [null, true, 1, 'replicas']) {
    t.throws(() => redisTokenStore({ client, durability } as any), coded(/durability must be an object \{ replicas, timeout\? \}/), `durability: ${String(durability)}`)
  }
  for (const replicas of [undefined, 0, -1, 1.5, '1', Number.NaN, Number.POSITIVE_INFINITY, 2 ** 53]) {
    t.throws(() => redisTokenStore({ client, durability: { replicas } } as any), coded(/durability.replicas must be a positive integer/), `replicas: ${String(replicas)}`)
  }
  for (const timeout of [0, -5, Number.NaN, Number.POSITIVE_INFINITY, '100', 2 ** 31]) {
    t.throws(() => redisTokenStore({ client, durability: { replicas: 1, timeout } } as any), coded(/durability.timeout must be a positive number of milliseconds, at most 2147483647/), `timeout: ${String(timeout)}`)
  }
  t.throws(() => redisTokenStore({ client, durability: { replicas: 1, timeOut: 5 } } as any), coded(/unknown option durability.timeOut \(known: replicas, timeout\)/))
  t.ok(redisTokenStore({ client, durability: { replicas: 2 } }), 'timeout has a default')
  t.ok(redisTokenStore({ client, durability: { replicas: 1, timeout: 0.5 } }), 'a fraction of a millisecond waits 1 ms')
  t.ok(redisTokenStore({ client, durability: undefined }), 'durability off')
  t.equal(typeof redisTokenStore({ client }).revoke, 'function')
  t.equal(redisTokenStore({ client }).close, undefined, 'the client is yours: nothing to close')
})

for (const kind of CLIENT_KINDS) {
  t.test(kind, { skip: redisSkip(t) }, async (t) => {
    const redis = await startRedis(t)
    const { client, command } = await redisClient(t, kind, redis.url)
    const store = redisTokenStore({ client })

    t.test('consume follows findToken: only a match, unexpired, on its path, is removed', async (t) => {
      const id = 'rules-' + kind
      t.equal(await store.consume(id, hashToken('nothing'), '/chat', Date.now()), 'none-stored')
      const any = record(60_000)
      const bound = record(60_000, '/chat')
      await store.issue(id, any.record, 8)
      await store.issue(id, bound.record, 8)
      t.equal(await store.consume(id, hashToken(generateToken()), '/chat', Date.now()), 'mismatch')
      t.equal(await store.consume(id, bound.record.hash, '/other', Date.now()), 'wrong-path')
      t.equal(await store.consume(id, any.record.hash, '/chat', any.record.expiresAt), 'expired')
      t.equal(await store.consume(id, any.record.hash, '/chat', any.record.expiresAt + 1), 'expired')
      // none of the refusals removed anything
      t.equal(await store.consume(id, bound.record.hash, '/chat', Date.now()), 'consumed')
      t.equal(await store.consume(id, bound.record.hash, '/chat', Date.now()), 'mismatch')
      t.equal(await command('EXISTS', 'ws-guard:{' + id + '}'), 1)
      t.equal(await store.consume(id, any.record.hash, '/anywhere', Date.now()), 'consumed')
      // the last token gone, the key goes too (with its issue counter)
      t.equal(await command('EXISTS', 'ws-guard:{' + id + '}'), 0)
      t.equal(await store.consume(id, any.record.hash, '/anywhere', Date.now()), 'none-stored')
    })

    t.test('a bound path is compared exactly, and may contain a colon', async (t) => {
      const id = 'paths-' + kind
      const colon = record(60_000, '/rooms/a:b')
      await store.issue(id, colon.record, 8)
      t.equal(await store.consume(id, colon.record.hash, '/rooms/a', Date.now()), 'wrong-path')
      t.equal(await store.consume(id, colon.record.hash, '/rooms/a:b/', Date.now()), 'wrong-path')
      t.equal(await store.consume(id, colon.record.hash, '/rooms/a:b', Date.now()), 'consumed')
    })

    t.test('the issue counter is never taken for a token', async (t) => {
      const id = 'seq-' + kind
      await store.issue(id, record(60_000).record, 8)
      t.equal(await store.consume(id, '#seq', '/chat', Date.now()), 'mismatch')
      t.equal(await command('HLEN', 'ws-guard:{' + id + '}'), 2)
    })

    t.test('maxTokens evicts the oldest issued, not the soonest to expire', async (t) => {
      const id = 'max-' + kind
      const first = record(60_000)
      const second = record(50_000)
      const third = record(40_000)
      await store.issue(id, first.record, 2)
      await store.issue(id, second.record, 2)
      await store.issue(id, third.record, 2)
      t.equal(await store.consume(id, first.record.hash, '/chat', Date.now()), 'mismatch')
      // a lower maxTokens later trims further
      const fourth = record(30_000)
      await store.issue(id, fourth.record, 1)
      t.equal(await store.consume(id, second.record.hash, '/chat', Date.now()), 'mismatch')
      t.equal(await store.consume(id, third.record.hash, '/chat', Date.now()), 'mismatch')
      t.equal(await store.consume(id, fourth.record.hash, '/chat', Date.now()), 'consumed')
    })

    t.test('issuing drops expired tokens', async (t) => {
      const id = 'expired-' + kind
      const short = record(50)
      await store.issue(id, short.record, 8)
      await eventually(t, 'the short token expired', () => Date.now() > short.record.expiresAt)
      const fresh = record(60_000)
      await store.issue(id, fresh.record, 8)
      t.same((await command('HKEYS', 'ws-guard:{' + id + '}') as string[]).sort(), ['#seq', fresh.record.hash].sort())
    })

    t.test('a token issued twice is stored once', async (t) => {
      const id = 'twice-' + kind
      const once = record(60_000)
      await store.issue(id, once.record, 8)
      await store.issue(id, { ...once.record, path: '/chat' }, 8)
      t.equal(await command('HLEN', 'ws-guard:{' + id + '}'), 2)
      t.equal(await store.consume(id, once.record.hash, '/other', Date.now()), 'wrong-path')
    })

    t.test('the key expires with its latest token', async (t) => {
      const id = 'ttl-' + kind
      const key = 'ws-guard:{' + id + '}'
      await store.issue(id, record(60_000).record, 8)
      await store.issue(id, record(5_000).record, 8)
      const both = Number(await command('PTTL', key))
      t.ok(both > 5_000 && both <= 60_000, `PTTL ${both} follows the later token`)
      // evicting the later token shortens it
      await store.issue(id, record(5_000).record, 1)
      const one = Number(await command('PTTL', key))
      t.ok(one > 0 && one <= 5_000, `PTTL ${one} follows the only token left`)
      // an already expired token still gets a key that expires at once
      await store.issue('past-' + kind, record(-1_000).record, 8)
      t.ok(Number(await command('PTTL', 'ws-guard:{past-' + kind + '}')) <= 1, 'gone, or going within 1 ms')
    })

    t.test('the prefix is used for every key', async (t) => {
      const prefixed = redisTokenStore({ client, prefix: 'app-one:' })
      const one = record(60_000)
      await prefixed.issue('p', one.record, 8)
      t.equal(await command('EXISTS', 'app-one:{p}'), 1)
      t.equal(await command('EXISTS', 'ws-guard:{p}'), 0)
      t.equal(await store.consume('p', one.record.hash, '/chat', Date.now()), 'none-stored')
      t.equal(await prefixed.consume('p', one.record.hash, '/chat', Date.now()), 'consumed')
    })

    t.test('arguments that cannot be stored faithfully are refused', async (t) => {
      const one = record(60_000)
      await t.rejects(store.issue('bad', { ...one.record, expiresAt: Number.POSITIVE_INFINITY }, 8), /expiresAt must be a finite number/)
      await t.rejects(store.issue('bad', { ...one.record, path: '' }, 8), /path must be null or a non-empty path/)
      await t.rejects(store.issue('bad', one.record, 0), /maxTokens must be a positive integer/)
      await t.rejects(store.issue('bad', one.record, 1.5), /maxTokens must be a positive integer/)
      t.equal(await command('EXISTS', 'ws-guard:{bad}'), 0)
    })

    t.test('a Redis error other than NOSCRIPT is passed on', async (t) => {
      await command('SET', 'ws-guard:{wrongtype}', 'x')
      await t.rejects(store.issue('wrongtype', record(60_000).record, 8), /WRONGTYPE/)
      await t.rejects(store.consume('wrongtype', hashToken('x'), '/chat', Date.now()), /WRONGTYPE/)
    })

    t.test('one round trip per issue and per consume; EVAL only when Redis lost the script', async (t) => {
      const traced = await tracedClient(t, kind, redis)
      const tracedStore = redisTokenStore({ client: traced.client })
      const one = record(60_000)
      const two = record(60_000)
      const three = record(60_000)
      const steps: Array<[string, () => Promise<unknown>, string[], number]> = [
        ['issue', () => tracedStore.issue('rt', one.record, 8), ['EVALSHA'], 1],
        ['issue', () => tracedStore.issue('rt', two.record, 8), ['EVALSHA'], 1],
        ['consume', () => tracedStore.consume('rt', one.record.hash, '/chat', Date.now()), ['EVALSHA'], 1],
        ['refused consume', () => tracedStore.consume('rt', one.record.hash, '/chat', Date.now()), ['EVALSHA'], 1],
        ['SCRIPT FLUSH', () => command('SCRIPT', 'FLUSH'), [], 0],
        ['issue after SCRIPT FLUSH', () => tracedStore.issue('rt', three.record, 8), ['EVALSHA', 'EVAL'], 2],
        ['consume after SCRIPT FLUSH', () => tracedStore.consume('rt', two.record.hash, '/chat', Date.now()), ['EVALSHA', 'EVAL'], 2],
        ['consume once loaded', () => tracedStore.consume('rt', three.record.hash, '/chat', Date.now()), ['EVALSHA'], 1],
        ['revoke', () => tracedStore.revoke('rt'), ['DEL'], 1]
      ]
      for (const [what, fn, commands, roundTrips] of steps) {
        const seen = await traced.trace(fn)
        t.equal(seen.error, undefined, `${what}: no error`)
        t.same(seen.commands, commands, `${what}: ${commands.join(', ') || 'nothing'}`)
        t.equal(seen.roundTrips, roundTrips, `${what}: ${roundTrips} round trip(s)`)
      }
    })

    t.test('revoke drops every outstanding token of an id, and only of that id', async (t) => {
      const id = 'revoke-' + kind
      const tokens = [record(60_000), record(60_000, '/chat')]
      const other = record(60_000)
      for (const one of tokens) await store.issue(id, one.record, 8)
      await store.issue(id + '-other', other.record, 8)
      await store.revoke(id)
      t.equal(await command('EXISTS', 'ws-guard:{' + id + '}'), 0)
      for (const one of tokens) t.equal(await store.consume(id, one.record.hash, '/chat', Date.now()), 'none-stored')
      // a token issued after the revocation works
      const after = record(60_000)
      await store.issue(id, after.record, 8)
      t.equal(await store.consume(id, after.record.hash, '/chat', Date.now()), 'consumed')
      t.equal(await store.consume(id + '-other', other.record.hash, '/chat', Date.now()), 'consumed')
      // nothing to revoke is no error
      await store.revoke('never-issued-' + kind)
    })

    t.test('a token consumed at once through several connections is consumed once', async (t) => {
      const stores: TokenStore[] = [store]
      for (let i = 0; i < 3; i++) stores.push(redisTokenStore({ client: (await redisClient(t, kind, redis.url)).client }))
      for (let round = 0; round < 5; round++) {
        const id = `race-${kind}-${round}`
        const target = record(60_000)
        await store.issue(id, record(60_000).record, 8)
        await store.issue(id, target.record, 8)
        const outcomes = await Promise.all(Array.from({ length: 32 }, (_, i) =>
          (stores[i % stores.length] as TokenStore).consume(id, target.record.hash, '/chat', Date.now())))
        t.equal(outcomes.filter((o) => o === 'consumed').length, 1, `round ${round}: one consume wins`)
        t.equal(outcomes.filter((o) => o === 'mismatch').length, 31, `round ${round}: the rest find nothing`)
      }
    })

    t.test('every key written carries an expiry', async (t) => {
      const keys = await command('KEYS', 'ws-guard:*') as string[]
      t.ok(keys.length > 3, `${keys.length} keys`)
      for (const key of keys) {
        if (key === 'ws-guard:{wrongtype}') continue
        // -1 is a key without expiry; -2 one that expired in between
        t.not(Number(await command('PTTL', key)), -1, `${key} expires`)
      }
    })
  })
}

for (const kind of CLIENT_KINDS) {
  t.test(`durability through ${kind}: WAIT pipelined on the consume's connection`, { skip: redisSkip(t) }, async (t) => {
    const primary = await startRedis(t)
    // the replication link runs through a proxy the test can hold
    const link = await startProxy(t, primary.port)
    const replica = await startRedis(t, ['--replicaof', '127.0.0.1', String(link.port)])
    await replicasOnline(primary.port)
    const traced = await tracedClient(t, kind, primary)
    // generous where the replica acknowledges (a loaded machine is slow), short where it cannot
    const store = redisTokenStore({ client: traced.client, durability: { replicas: 1, timeout: 5000 } })
    const held = redisTokenStore({ client: traced.client, durability: { replicas: 1, timeout: 100 } })
    const onReplica = (id: string, one: { record: StoredToken }): Promise<number> => replica.command('HEXISTS', `ws-guard:{${id}}`, one.record.hash)

    t.test('a consume counts once the replica holds it: EVALSHA then WAIT, one round trip', async (t) => {
      const id = 'durable-' + kind
      const one = record(60_000)
      const two = record(60_000)
      const three = record(60_000)
      // a new server has neither script yet
      await store.issue(id, three.record, 8)
      await store.consume(id, three.record.hash, '/chat', Date.now())
      const steps: Array<[string, () => Promise<unknown>, unknown, string[], number]> = [
        // issuing waits for nobody: a token a failover loses is refused, never accepted twice
        ['issue', () => store.issue(id, one.record, 8), undefined, ['EVALSHA'], 1],
        ['issue', () => store.issue(id, two.record, 8), undefined, ['EVALSHA'], 1],
        ['consume', () => store.consume(id, one.record.hash, '/chat', Date.now()), 'consumed', ['EVALSHA', 'WAIT'], 1],
        ['refused consume', () => store.consume(id, one.record.hash, '/chat', Date.now()), 'mismatch', ['EVALSHA', 'WAIT'], 1],
        ['SCRIPT FLUSH', () => primary.command('SCRIPT', 'FLUSH'), 'OK', [], 0],
        ['consume after SCRIPT FLUSH', () => store.consume(id, two.record.hash, '/chat', Date.now()), 'consumed', ['EVALSHA', 'WAIT', 'EVAL', 'WAIT'], 2],
        ['issue', () => store.issue(id, three.record, 8), undefined, ['EVALSHA', 'EVAL'], 2],
        ['revoke', () => store.revoke(id), undefined, ['DEL', 'WAIT'], 1]
      ]
      for (const [what, fn, value, commands, roundTrips] of steps) {
        const seen = await traced.trace(fn)
        t.equal(seen.error, undefined, `${what}: no error`)
        t.equal(seen.value, value, `${what}: ${String(value)}`)
        t.same(seen.commands, commands, `${what}: ${commands.join(', ') || 'nothing'}`)
        t.equal(seen.roundTrips, roundTrips, `${what}: ${roundTrips} round trip(s)`)
      }
      // acknowledged means applied on the replica: nothing there to bring back
      t.equal(await onReplica(id, one), 0)
      t.equal(await onReplica(id, two), 0)
      t.equal(await onReplica(id, three), 0, 'the revocation too')
    })

    t.test('too few acknowledgements within the timeout: an error, and the token stays spent', async (t) => {
      const id = 'held-' + kind
      const one = record(60_000)
      const two = record(60_000)
      await store.issue(id, one.record, 8)
      await store.issue(id, two.record, 8)
      await waitFor('tokens on the replica', async () => await onReplica(id, two) === 1)
      link.pause()
      try {
        await t.rejects(held.consume(id, one.record.hash, '/chat', Date.now()), /^redisTokenStore: 0 of 1 replicas acknowledged the consume within 100 ms$/)
        // spent on the primary: never accepted again, though its consume failed
        t.equal(await held.consume(id, one.record.hash, '/chat', Date.now()), 'mismatch')
        t.equal(await held.consume(id, hashToken(generateToken()), '/chat', Date.now()), 'mismatch', 'a refusal needs no acknowledgement')
        await t.rejects(held.revoke(id), /^redisTokenStore: 0 of 1 replicas acknowledged the revocation within 100 ms$/)
        t.equal(await onReplica(id, one), 1, 'the replica still holds the token: this is what a failover would bring back')
      } finally {
        link.resume()
      }
      // the held writes arrive; the link works again
      await waitFor('revocation on the replica', async () => await onReplica(id, two) === 0)
      const three = record(60_000)
      await store.issue(id, three.record, 8)
      t.equal(await store.consume(id, three.record.hash, '/chat', Date.now()), 'consumed')
    })

    t.test('a Redis error other than NOSCRIPT is passed on', async (t) => {
      await primary.command('SET', 'ws-guard:{durable-wrongtype}', 'x')
      await t.rejects(store.consume('durable-wrongtype', hashToken('x'), '/chat', Date.now()), /WRONGTYPE/)
      await primary.command('DEL', 'ws-guard:{durable-wrongtype}')
    })

    t.test('more replicas asked for than there are: an error', async (t) => {
      const greedy = redisTokenStore({ client: traced.client, durability: { replicas: 2, timeout: 50 } })
      const one = record(60_000)
      await greedy.issue('greedy-' + kind, one.record, 8)
      await t.rejects(greedy.consume('greedy-' + kind, one.record.hash, '/chat', Date.now()), /^redisTokenStore: 1 of 2 replicas acknowledged the consume within 50 ms$/)
    })
  })
}
