// redisTokenStore on a real redis-server, with both client libraries: the rules of findToken,
// maxTokens, expiry of every key, one round trip per call, and atomicity across connections.
import t from 'tap'
import { redisTokenStore, type StoredToken, type TokenStore } from '../lib/index'
import { hashToken, generateToken } from '../lib/tokens'
import { CLIENT_KINDS, monitor, redisClient, redisSkip, startRedis } from './helpers/redis'
import { eventually } from './helpers/util'

function record (expiresIn: number, path: string | null = null): { token: string, record: StoredToken } {
  const token = generateToken()
  return { token, record: { hash: hashToken(token), expiresAt: Date.now() + expiresIn, path } }
}

t.test('options are checked when the store is made', async (t) => {
  t.throws(() => redisTokenStore(undefined as any), /options must be an object/)
  t.throws(() => redisTokenStore(null as any), /options must be an object/)
  t.throws(() => redisTokenStore({} as any), /client must be a redis \(node-redis 4\+\) or ioredis client/)
  t.throws(() => redisTokenStore({ client: 'redis://127.0.0.1' } as any), /client must be/)
  // eval alone, or ioredis' evalsha without the rest of ioredis, is neither client
  t.throws(() => redisTokenStore({ client: { eval () {} } } as any), /client must be/)
  t.throws(() => redisTokenStore({ client: { eval () {}, evalsha () {} } } as any), /client must be/)
  t.throws(() => redisTokenStore({ client: { evalSha () {} } } as any), /client must be/)
})

for (const kind of CLIENT_KINDS) {
  t.test(kind, { skip: redisSkip(t) }, async (t) => {
    const redis = await startRedis(t)
    const { client, command } = await redisClient(t, kind, redis.url)
    const store = redisTokenStore({ client })

    t.test('prefix must be a string', async (t) => {
      t.throws(() => redisTokenStore({ client, prefix: 1 as any }), /prefix must be a string/)
    })

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
      t.equal(await command('EXISTS', 'ws-guard:' + id), 1)
      t.equal(await store.consume(id, any.record.hash, '/anywhere', Date.now()), 'consumed')
      // the last token gone, the key goes too (with its issue counter)
      t.equal(await command('EXISTS', 'ws-guard:' + id), 0)
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
      t.equal(await command('HLEN', 'ws-guard:' + id), 2)
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
      t.same((await command('HKEYS', 'ws-guard:' + id) as string[]).sort(), ['#seq', fresh.record.hash].sort())
    })

    t.test('a token issued twice is stored once', async (t) => {
      const id = 'twice-' + kind
      const once = record(60_000)
      await store.issue(id, once.record, 8)
      await store.issue(id, { ...once.record, path: '/chat' }, 8)
      t.equal(await command('HLEN', 'ws-guard:' + id), 2)
      t.equal(await store.consume(id, once.record.hash, '/other', Date.now()), 'wrong-path')
    })

    t.test('the key expires with its latest token', async (t) => {
      const id = 'ttl-' + kind
      const key = 'ws-guard:' + id
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
      t.ok(Number(await command('PTTL', 'ws-guard:past-' + kind)) <= 1, 'gone, or going within 1 ms')
    })

    t.test('the prefix is used for every key', async (t) => {
      const prefixed = redisTokenStore({ client, prefix: 'app-one:' })
      const one = record(60_000)
      await prefixed.issue('p', one.record, 8)
      t.equal(await command('EXISTS', 'app-one:p'), 1)
      t.equal(await command('EXISTS', 'ws-guard:p'), 0)
      t.equal(await store.consume('p', one.record.hash, '/chat', Date.now()), 'none-stored')
      t.equal(await prefixed.consume('p', one.record.hash, '/chat', Date.now()), 'consumed')
    })

    t.test('arguments that cannot be stored faithfully are refused', async (t) => {
      const one = record(60_000)
      await t.rejects(store.issue('bad', { ...one.record, expiresAt: Number.POSITIVE_INFINITY }, 8), /expiresAt must be a finite number/)
      await t.rejects(store.issue('bad', { ...one.record, path: '' }, 8), /path must be null or a non-empty path/)
      await t.rejects(store.issue('bad', one.record, 0), /maxTokens must be a positive integer/)
      await t.rejects(store.issue('bad', one.record, 1.5), /maxTokens must be a positive integer/)
      t.equal(await command('EXISTS', 'ws-guard:bad'), 0)
    })

    t.test('a Redis error other than NOSCRIPT is passed on', async (t) => {
      await command('SET', 'ws-guard:wrongtype', 'x')
      await t.rejects(store.issue('wrongtype', record(60_000).record, 8), /WRONGTYPE/)
      await t.rejects(store.consume('wrongtype', hashToken('x'), '/chat', Date.now()), /WRONGTYPE/)
    })

    t.test('one round trip per issue and per consume; EVAL only when Redis lost the script', async (t) => {
      const info = String(await command('CLIENT', 'INFO'))
      const addr = /addr=(\S+)/.exec(info)?.[1] as string
      const mon = await monitor(t, redis.port)
      const mine = async (fn: () => Promise<unknown>): Promise<string[]> => {
        await mon.settle()
        const from = mon.seen.length
        await fn()
        await mon.settle()
        return mon.seen.slice(from).filter((c) => c.addr === addr).map((c) => (c.args[0] as string).toUpperCase())
      }
      const one = record(60_000)
      const two = record(60_000)
      t.same(await mine(() => store.issue('rt', one.record, 8)), ['EVALSHA'], 'issue')
      t.same(await mine(() => store.issue('rt', two.record, 8)), ['EVALSHA'], 'issue')
      t.same(await mine(() => store.consume('rt', one.record.hash, '/chat', Date.now())), ['EVALSHA'], 'consume')
      t.same(await mine(() => store.consume('rt', one.record.hash, '/chat', Date.now())), ['EVALSHA'], 'refused consume')
      await command('SCRIPT', 'FLUSH')
      const three = record(60_000)
      t.same(await mine(() => store.issue('rt', three.record, 8)), ['EVALSHA', 'EVAL'], 'issue after SCRIPT FLUSH')
      t.same(await mine(() => store.consume('rt', two.record.hash, '/chat', Date.now())), ['EVALSHA', 'EVAL'], 'consume after SCRIPT FLUSH')
      t.same(await mine(() => store.consume('rt', three.record.hash, '/chat', Date.now())), ['EVALSHA'], 'consume once loaded')
      // nothing in the hot path scans keys
      t.notOk(mon.seen.some((c) => /^(KEYS|SCAN)$/i.test(c.args[0] as string)))
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
        if (key === 'ws-guard:wrongtype') continue
        // -1 is a key without expiry; -2 one that expired in between
        t.not(Number(await command('PTTL', key)), -1, `${key} expires`)
      }
    })
  })
}
