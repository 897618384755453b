// consumeWebsocketToken (API.md "Functions"): a success removes exactly the token presented,
// every failure leaves the session as it was, seed-style token strings, sessionKey, the
// arguments it refuses, and a real @fastify/session session across requests.
import t from 'tap'
import Fastify from 'fastify'
import cookie from '@fastify/cookie'
import session from '@fastify/session'
import { consumeWebsocketToken, issueWebsocketToken } from '../lib/backends/session'
import type { SessionLike } from '../lib/session'
import { generateToken, MAX_PRESENTED_LENGTH } from '../lib/tokens'
import type { StoredToken } from '../lib/stores/types'
import {
  NoWebsocketTokenPresented,
  NoWebsocketTokenStored,
  WebsocketSecurityError,
  WebsocketTokenExpired,
  WebsocketTokenMismatch
} from '../lib/errors'
import { GetSetSession, kinds } from './helpers/session-like'
import { sleep } from './helpers/util'

for (const kind of kinds()) {
  t.test(`a success removes exactly that token, ${kind.name}`, async (t) => {
    const s = kind.make()
    const tokens = [issueWebsocketToken(s), issueWebsocketToken(s), issueWebsocketToken(s)]
    const before = structuredClone(kind.read(s).websocket_token) as StoredToken[]
    t.equal(consumeWebsocketToken('/x?a=1&token=' + tokens[1] + '&b=2', s), tokens[1])
    t.same(kind.read(s).websocket_token, [before[0], before[2]])
    t.equal(consumeWebsocketToken('/x?token=' + tokens[2], s), tokens[2])
    t.same(kind.read(s).websocket_token, [before[0]])
    t.throws(() => consumeWebsocketToken('/x?token=' + tokens[1], s), WebsocketTokenMismatch, 'a consumed one among others: mismatch')
    t.equal(consumeWebsocketToken('/x?token=' + tokens[0], s), tokens[0])
    t.equal(kind.read(s).websocket_token, undefined)
  })

  t.test(`every error leaves the session unchanged, ${kind.name}`, async (t) => {
    const s = kind.make()
    const other = kind.make()
    const token = issueWebsocketToken(s, { path: '/chat' })
    const foreign = issueWebsocketToken(other)
    const expiring = issueWebsocketToken(s, { tokenTTL: 1 })
    await sleep(5)
    const before = structuredClone(kind.read(s))
    const writes = s instanceof GetSetSession ? s.sets : 0
    const failures: Array<[string, new () => WebsocketSecurityError]> = [
      ['/chat', NoWebsocketTokenPresented],
      ['/chat?token=', NoWebsocketTokenPresented],
      ['/chat?token', NoWebsocketTokenPresented],
      [`/chat?token=${token}&token=${token}`, NoWebsocketTokenPresented],
      [`/chat?xtoken=${token}`, NoWebsocketTokenPresented],
      [`/chat?token=${foreign}`, WebsocketTokenMismatch],
      [`/chat?token=${token}x`, WebsocketTokenMismatch],
      [`/chat?token=${'a'.repeat(MAX_PRESENTED_LENGTH + 1)}`, WebsocketTokenMismatch],
      [`/other?token=${token}`, WebsocketTokenMismatch],
      [`/chat/?token=${token}`, WebsocketTokenMismatch],
      [`/chat?token=${expiring}`, WebsocketTokenExpired]
    ]
    for (const [path, Class] of failures) {
      t.throws(() => consumeWebsocketToken(path, s), Class, path.replace(/=[^&]+/g, '=…'))
      t.same(kind.read(s), before, 'session unchanged')
    }
    t.equal(s instanceof GetSetSession ? s.sets : 0, writes, 'no writes at all on failure')
    t.throws(() => consumeWebsocketToken(`/chat?token=${token}`, kind.make()), NoWebsocketTokenStored, 'empty session')
    // the token bound to /chat survived all of it
    t.equal(consumeWebsocketToken(`/chat?token=${token}`, s), token)
  })

  t.test(`a seed-style token string, ${kind.name}`, async (t) => {
    const s = kind.make()
    const token = 'seed-token-' + generateToken()
    const write = (value: unknown): void => {
      if (s instanceof GetSetSession) s.set('websocket_token', value)
      else (s as Record<string, unknown>).websocket_token = value
    }
    write(token)
    t.throws(() => consumeWebsocketToken('/ws?token=nope', s), WebsocketTokenMismatch)
    t.throws(() => consumeWebsocketToken('/ws', s), NoWebsocketTokenPresented)
    t.equal(kind.read(s).websocket_token, token, 'unchanged after failures')
    t.equal(consumeWebsocketToken('/ws?token=' + token, s), token, 'any path: a seed token is bound to none')
    t.equal(kind.read(s).websocket_token, undefined)

    // issuing next to a seed token keeps it, also through a JSON session store
    write(token)
    const issued = issueWebsocketToken(s)
    const roundTripped = JSON.parse(JSON.stringify(kind.read(s).websocket_token))
    write(roundTripped)
    t.equal(consumeWebsocketToken('/ws?token=' + token, s), token, 'seed token survives serialisation')
    t.equal(consumeWebsocketToken('/ws?token=' + issued, s), issued)

    for (const value of ['', 'x'.repeat(MAX_PRESENTED_LENGTH + 1), 42, null, { hash: 'h' }, ['not a record']]) {
      write(value)
      t.throws(() => consumeWebsocketToken('/ws?token=' + token, s), NoWebsocketTokenStored, `stored ${JSON.stringify(value).slice(0, 20)}`)
    }
  })
}

t.test('custom sessionKey', async (t) => {
  const s: Record<string, unknown> = { websocket_token: 'untouched' }
  const token = issueWebsocketToken(s, { sessionKey: 'ws' })
  t.equal(s.websocket_token, 'untouched')
  t.equal((s.ws as StoredToken[]).length, 1)
  t.throws(() => consumeWebsocketToken('/chat?token=' + token, s), WebsocketTokenMismatch, 'the default key holds another token')
  t.throws(() => consumeWebsocketToken('/chat?token=' + token, s, 'other'), NoWebsocketTokenStored)
  t.equal(consumeWebsocketToken('/chat?token=' + token, s, 'ws'), token)
  t.same(s, { websocket_token: 'untouched' })
})

t.test('consumeWebsocketToken: bad arguments are TypeErrors', async (t) => {
  const s: Record<string, unknown> = {}
  for (const session of [null, undefined, 'session', 42]) {
    t.throws(() => consumeWebsocketToken('/?token=a', session as unknown as SessionLike), { name: 'TypeError', message: /session/ })
  }
  for (const path of [undefined, null, 42, ['/?token=a']]) {
    t.throws(() => consumeWebsocketToken(path as unknown as string, s), { name: 'TypeError', message: /path/ })
  }
  for (const key of ['', 42, null]) {
    t.throws(() => consumeWebsocketToken('/?token=a', s, key as unknown as string), { name: 'TypeError', message: /sessionKey/ })
  }
})

t.test('works on a real @fastify/session session, across requests', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(cookie)
  await app.register(session, { secret: 'a-secret-with-at-least-32-characters-for-tests', cookie: { secure: false } })
  app.get('/issue', async (request) => ({ token: issueWebsocketToken(request.session, { path: '/ws' }) }))
  app.get('/ws', async (request, reply) => {
    try {
      return { token: consumeWebsocketToken(request.url, request.session) }
    } catch (err) {
      return reply.code(403).send({ code: (err as WebsocketSecurityError).code })
    }
  })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as { port: number }
  const base = `http://127.0.0.1:${port}`
  const first = await fetch(`${base}/issue`)
  const jar = (first.headers.getSetCookie()[0] as string).split(';')[0] as string
  const { token } = await first.json() as { token: string }
  const get = async (path: string): Promise<{ status: number, body: any }> => {
    const res = await fetch(base + path, { headers: { cookie: jar } })
    return { status: res.status, body: await res.json() }
  }
  t.same(await get('/ws?token=wrong'), { status: 403, body: { code: 'WS_GUARD_TOKEN_MISMATCH' } })
  t.same(await get('/ws'), { status: 403, body: { code: 'WS_GUARD_NO_TOKEN_PRESENTED' } })
  t.same(await get('/ws?token=' + token), { status: 200, body: { token } }, 'still valid after the failures')
  t.same(await get('/ws?token=' + token), { status: 403, body: { code: 'WS_GUARD_NO_TOKEN_STORED' } }, 'gone from the saved session')
  const noCookie = await fetch(`${base}/ws?token=${token}`)
  t.equal(noCookie.status, 403)
})
