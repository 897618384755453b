// Two app instances behind an imaginary load balancer, sessions in Redis through connect-redis,
// tokens in redisTokenStore on the same Redis: exactly once across instances, with both clients.
import t from 'tap'
import { redisTokenStore } from '../lib/index'
import { Client, close, type ConnectResult } from './helpers/app'
import { APP_ORIGIN, CLIENT_KINDS, buildInstance, redisClient, redisSkip, startRedis, type Instance } from './helpers/redis'
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
