// @fastify/secure-session (the whole session in an encrypted cookie, which cannot forget a
// token) on two instances, tokens in redisTokenStore: the cookie holds only a random id, so a
// replayed old cookie gets nothing back.
import t from 'tap'
import { redisTokenStore } from '../lib/index'
import { Client, close, type ConnectResult } from './helpers/app'
import { APP_ORIGIN, CLIENT_KINDS, buildInstance, redisClient, redisSkip, startRedis, type Instance } from './helpers/redis'
import { refused } from './helpers/util'

for (const kind of CLIENT_KINDS) {
  t.test(`secure-session on two instances, tokens in Redis through ${kind}`, { skip: redisSkip(t) }, async (t) => {
    const redis = await startRedis(t)
    const instances: Instance[] = []
    for (let i = 0; i < 2; i++) {
      const { client } = await redisClient(t, kind, redis.url)
      instances.push(await buildInstance(t, { sessions: 'secure-session', store: redisTokenStore({ client }) }))
    }
    const [a, b] = instances as [Instance, Instance]
    const { command } = await redisClient(t, kind, redis.url)
    const on = (instance: Instance, cookie: string): Client => Object.assign(new Client(instance.base, APP_ORIGIN), { cookie })

    t.test('issued on one instance, consumed on the other, once', async (t) => {
      const user = new Client(a.base, APP_ORIGIN)
      const token = await user.token()
      const opened = await on(b, user.cookie).connect('/chat?token=' + token)
      t.equal(opened.opened, true)
      await close(opened)
      const again = await on(a, user.cookie).connect('/chat?token=' + token)
      refused(t, again, 'WS_GUARD_NO_TOKEN_STORED')
    })

    t.test('the cookie holds a random id, never a token', async (t) => {
      const user = new Client(a.base, APP_ORIGIN)
      const token = await user.token()
      const value = decodeURIComponent(user.cookie.slice(user.cookie.indexOf('=') + 1))
      const decoded = a.app.decodeSecureSession(value)
      const id = decoded?.get('websocket_token')
      t.match(id, /^[A-Za-z0-9_-]{22}$/)
      t.notOk(value.includes(token))
      t.equal(await command('EXISTS', 'ws-guard:' + String(id)), 1)
    })

    t.test('replaying the cookie from before the consumption gets nothing', async (t) => {
      const user = new Client(a.base, APP_ORIGIN)
      const token = await user.token()
      const oldCookie = user.cookie
      const opened = await on(b, user.cookie).connect('/chat?token=' + token)
      t.equal(opened.opened, true)
      await close(opened)
      // the app may keep using the session meanwhile: another token is outstanding
      const next = await on(b, oldCookie).token()
      for (const instance of [a, b]) {
        const replay = await on(instance, oldCookie).connect('/chat?token=' + token)
        t.equal(replay.opened, false)
        t.equal(replay.body.code, 'WS_GUARD_TOKEN_MISMATCH')
      }
      const fresh = await on(a, oldCookie).connect('/chat?token=' + next)
      t.equal(fresh.opened, true)
      await close(fresh)
    })

    t.test('several tabs of one session each open once', async (t) => {
      const user = new Client(a.base, APP_ORIGIN)
      await user.token()
      // the tabs fetch their tokens at the same moment, through both instances
      const tabs = await Promise.all(Array.from({ length: 6 }, (_, i) => on(i % 2 === 0 ? a : b, user.cookie).token()))
      t.equal(new Set(tabs).size, 6)
      const opened = await Promise.all(tabs.map((token, i) => on(i % 2 === 0 ? b : a, user.cookie).connect('/chat?token=' + token)))
      t.same(opened.map((r) => r.opened), [true, true, true, true, true, true])
      await Promise.all(opened.map(close))
      const replays = await Promise.all(tabs.map((token) => on(a, user.cookie).connect('/chat?token=' + token)))
      t.same(replays.map((r) => r.status), [403, 403, 403, 403, 403, 403])
    })

    t.test('one token on 16 simultaneous upgrades over both instances opens exactly one', async (t) => {
      const user = new Client(a.base, APP_ORIGIN)
      await user.token()
      for (let round = 0; round < 4; round++) {
        const token = await on(round % 2 === 0 ? a : b, user.cookie).token()
        const results: ConnectResult[] = await Promise.all(Array.from({ length: 16 }, (_, i) =>
          on(i % 2 === 0 ? a : b, user.cookie).connect('/chat?token=' + token)))
        t.equal(results.filter((r) => r.opened).length, 1, `round ${round}: one opened`)
        await Promise.all(results.map(close))
      }
    })
  })
}
