// The seed's functions (API.md "Functions"), the error classes ("Result and errors"), and the
// two pieces of bookkeeping under the session backend: SpentTokens and memoryTokenStore.
import t from 'tap'
import Fastify from 'fastify'
import cookie from '@fastify/cookie'
import session from '@fastify/session'
import { consumeWebsocketToken, issueWebsocketToken, consumeInSession, sessionTokens, SpentTokens } from '../lib/backends/session'
import type { SessionLike } from '../lib/session'
import { memoryTokenStore } from '../lib/stores/memory'
import { generateToken, hashToken, MAX_PRESENTED_LENGTH } from '../lib/tokens'
import type { StoredToken } from '../lib/stores/types'
import {
  NoWebsocketTokenPresented,
  NoWebsocketTokenStored,
  WebsocketGuardBadRequest,
  WebsocketGuardStoreUnavailable,
  WebsocketOriginNotAllowed,
  WebsocketSecurityError,
  WebsocketTokenExpired,
  WebsocketTokenMismatch
} from '../lib/errors'

/** Like a @fastify/session or @fastify/secure-session session: data behind get/set only. */
class GetSetSession {
  readonly data: Record<string, unknown> = {}
  sets = 0
  get (key: string): unknown { return this.data[key] }
  set (key: string, value: unknown): void { this.sets++; this.data[key] = value }
}

function kinds (): Array<{ name: string, make: () => SessionLike, read: (s: SessionLike) => Record<string, unknown> }> {
  return [
    { name: 'plain object', make: () => ({}), read: (s) => s as Record<string, unknown> },
    { name: 'get/set session', make: () => new GetSetSession(), read: (s) => (s as GetSetSession).data }
  ]
}

function clone (value: unknown): unknown {
  return structuredClone(value)
}

t.test('error classes: hierarchy, codes, status, names', async (t) => {
  const cases: Array<[new (message?: string) => WebsocketSecurityError, string, string]> = [
    [WebsocketOriginNotAllowed, 'WebsocketOriginNotAllowed', 'WS_GUARD_ORIGIN_NOT_ALLOWED'],
    [NoWebsocketTokenPresented, 'NoWebsocketTokenPresented', 'WS_GUARD_NO_TOKEN_PRESENTED'],
    [NoWebsocketTokenStored, 'NoWebsocketTokenStored', 'WS_GUARD_NO_TOKEN_STORED'],
    [WebsocketTokenMismatch, 'WebsocketTokenMismatch', 'WS_GUARD_TOKEN_MISMATCH'],
    [WebsocketTokenExpired, 'WebsocketTokenExpired', 'WS_GUARD_TOKEN_EXPIRED']
  ]
  const codes = new Set<string>()
  for (const [Class, name, code] of cases) {
    const error = new Class()
    t.ok(error instanceof Class, name)
    t.ok(error instanceof WebsocketSecurityError, `${name} extends WebsocketSecurityError`)
    t.ok(error instanceof Error)
    t.equal(error.name, name)
    t.equal(error.code, code)
    t.equal(error.statusCode, 403)
    t.type(error.message, 'string')
    t.not(error.message, '')
    t.match(String(error), new RegExp(`^${name}: `))
    t.equal(new Class('custom').message, 'custom')
    codes.add(code)
    for (const [Other] of cases) if (Other !== Class) t.notOk(error instanceof Other, `${name} is not a ${Other.name}`)
  }
  t.equal(codes.size, 5)
  const base = new WebsocketSecurityError()
  t.equal(base.name, 'WebsocketSecurityError')
  t.equal(base.statusCode, 403)
  t.equal(base.code, 'WS_GUARD_SECURITY_ERROR')
  t.ok(base instanceof Error)
  t.equal(new WebsocketSecurityError('why').message, 'why')

  // not security verdicts: neither is a WebsocketSecurityError
  const cause = new Error('ECONNREFUSED')
  const down = new WebsocketGuardStoreUnavailable(undefined, { cause })
  t.equal(down.statusCode, 503)
  t.equal(down.code, 'WS_GUARD_STORE_UNAVAILABLE')
  t.equal(down.name, 'WebsocketGuardStoreUnavailable')
  t.equal(down.cause, cause)
  t.not(down.message, '')
  t.notOk(down instanceof WebsocketSecurityError)
  t.equal(new WebsocketGuardStoreUnavailable('slow').message, 'slow')
  const bad = new WebsocketGuardBadRequest('bad path')
  t.equal(bad.statusCode, 400)
  t.equal(bad.code, 'WS_GUARD_BAD_REQUEST')
  t.equal(bad.name, 'WebsocketGuardBadRequest')
  t.equal(bad.message, 'bad path')
  t.notOk(bad instanceof WebsocketSecurityError)
})

for (const kind of kinds()) {
  t.test(`issue then consume, ${kind.name}`, async (t) => {
    const s = kind.make()
    const token = issueWebsocketToken(s)
    t.match(token, /^[A-Za-z0-9_-]{43}$/)
    const stored = kind.read(s).websocket_token as StoredToken[]
    t.equal(stored.length, 1)
    t.equal(stored[0]?.hash, hashToken(token), 'only the hash is stored')
    t.equal(stored[0]?.path, null)
    t.notOk(JSON.stringify(kind.read(s)).includes(token), 'the token itself is nowhere in the session')
    t.equal(consumeWebsocketToken('/chat?token=' + token, s), token)
    t.notOk('websocket_token' in kind.read(s) && kind.read(s).websocket_token !== undefined, 'key gone when no token is left')
    t.throws(() => consumeWebsocketToken('/chat?token=' + token, s), NoWebsocketTokenStored, 'never twice')
  })

  t.test(`a success removes exactly that token, ${kind.name}`, async (t) => {
    const s = kind.make()
    const tokens = [issueWebsocketToken(s), issueWebsocketToken(s), issueWebsocketToken(s)]
    const before = clone(kind.read(s).websocket_token) as StoredToken[]
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
    await new Promise((resolve) => setTimeout(resolve, 5))
    const before = clone(kind.read(s))
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

t.test('path binding, TTL and maxTokens', async (t) => {
  const s: Record<string, unknown> = {}
  const before = Date.now()
  const bound = issueWebsocketToken(s, { path: '/chat', tokenTTL: 5000 })
  const records = s.websocket_token as StoredToken[]
  t.equal(records[0]?.path, '/chat')
  t.ok((records[0] as StoredToken).expiresAt >= before + 5000 && (records[0] as StoredToken).expiresAt <= Date.now() + 5000, 'expiresAt = now + tokenTTL')
  t.throws(() => consumeWebsocketToken('/admin?token=' + bound, s), WebsocketTokenMismatch)
  t.equal(consumeWebsocketToken('/chat?token=' + bound, s), bound)

  const defaultTTL = issueWebsocketToken(s)
  const expiresAt = (s.websocket_token as StoredToken[])[0]?.expiresAt as number
  t.ok(expiresAt - Date.now() > 59_000 && expiresAt - Date.now() <= 60_000, 'default TTL 60 s')
  consumeWebsocketToken('/?token=' + defaultTTL, s)

  const tokens = Array.from({ length: 10 }, () => issueWebsocketToken(s))
  t.equal((s.websocket_token as StoredToken[]).length, 8, 'default maxTokens 8')
  t.throws(() => consumeWebsocketToken('/?token=' + tokens[0], s), WebsocketTokenMismatch, 'oldest evicted')
  t.throws(() => consumeWebsocketToken('/?token=' + tokens[1], s), WebsocketTokenMismatch)
  t.equal(consumeWebsocketToken('/?token=' + tokens[2], s), tokens[2])
  t.equal(consumeWebsocketToken('/?token=' + tokens[9], s), tokens[9])

  const few: Record<string, unknown> = {}
  const two = Array.from({ length: 3 }, () => issueWebsocketToken(few, { maxTokens: 2 }))
  t.equal((few.websocket_token as StoredToken[]).length, 2)
  t.throws(() => consumeWebsocketToken('/?token=' + two[0], few), WebsocketTokenMismatch)
  t.equal(consumeWebsocketToken('/?token=' + two[2], few), two[2])
})

t.test('bad arguments are TypeErrors', async (t) => {
  const s: Record<string, unknown> = {}
  for (const session of [null, undefined, 'session', 42]) {
    t.throws(() => issueWebsocketToken(session as unknown as SessionLike), { name: 'TypeError', message: /session/ })
    t.throws(() => consumeWebsocketToken('/?token=a', session as unknown as SessionLike), { name: 'TypeError', message: /session/ })
  }
  for (const path of [undefined, null, 42, ['/?token=a']]) {
    t.throws(() => consumeWebsocketToken(path as unknown as string, s), { name: 'TypeError', message: /path/ })
  }
  for (const key of ['', 42, null]) {
    t.throws(() => consumeWebsocketToken('/?token=a', s, key as unknown as string), { name: 'TypeError', message: /sessionKey/ })
    t.throws(() => issueWebsocketToken(s, { sessionKey: key as unknown as string }), { name: 'TypeError', message: /sessionKey/ })
  }
  t.throws(() => issueWebsocketToken(s, null as unknown as object), { name: 'TypeError', message: /options/ })
  t.throws(() => issueWebsocketToken(s, 'x' as unknown as object), { name: 'TypeError', message: /options/ })
  for (const tokenTTL of [0, -1, Number.NaN, Number.POSITIVE_INFINITY, '60000', null]) {
    t.throws(() => issueWebsocketToken(s, { tokenTTL: tokenTTL as number }), { name: 'TypeError', message: /tokenTTL/ }, `tokenTTL ${String(tokenTTL)}`)
  }
  for (const maxTokens of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, '8']) {
    t.throws(() => issueWebsocketToken(s, { maxTokens: maxTokens as number }), { name: 'TypeError', message: /maxTokens/ }, `maxTokens ${String(maxTokens)}`)
  }
  for (const path of ['chat', '', '/chat?x=1', '/chat#x', 42]) {
    t.throws(() => issueWebsocketToken(s, { path: path as string }), { name: 'TypeError', message: /path/ }, `path ${String(path)}`)
  }
  t.same(s, {}, 'nothing issued by any of them')
  t.doesNotThrow(() => issueWebsocketToken(s, { path: null, tokenTTL: 0.5, maxTokens: 1 }))
  t.doesNotThrow(() => issueWebsocketToken(s, { path: undefined }))
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

t.test('consumeInSession with SpentTokens: exactly once across session copies', async (t) => {
  const spent = new SpentTokens()
  const s: Record<string, unknown> = {}
  const a = issueWebsocketToken(s)
  const b = issueWebsocketToken(s)
  // two upgrades loaded the same session before either saved it
  const copy1 = clone(s) as Record<string, unknown>
  const copy2 = clone(s) as Record<string, unknown>
  consumeInSession(copy1, 'websocket_token', a, '/chat', spent)
  t.equal((copy1.websocket_token as StoredToken[]).length, 1)
  const before = clone(copy2)
  t.throws(() => consumeInSession(copy2, 'websocket_token', a, '/chat', spent), WebsocketTokenMismatch, 'other tokens left: mismatch')
  t.same(copy2, before, 'the losing copy is not changed')
  consumeInSession(copy2, 'websocket_token', b, '/chat', spent)
  const single: Record<string, unknown> = {}
  const c = issueWebsocketToken(single)
  const copy3 = clone(single) as Record<string, unknown>
  consumeInSession(single, 'websocket_token', c, '/chat', spent)
  t.throws(() => consumeInSession(copy3, 'websocket_token', c, '/chat', spent), NoWebsocketTokenStored, 'the only token: as if none stored')
  t.equal(spent.size, 3)
})

t.test('SpentTokens remembers a hash until it expires, at most an hour', async (t) => {
  const spent = new SpentTokens()
  const now = 1_000_000
  t.equal(spent.spend('h1', now + 100, now), true)
  t.equal(spent.spend('h1', now + 100, now), false)
  t.equal(spent.spend('h1', now + 100, now + 99), false)
  t.equal(spent.spend('h2', now + 100, now), true)
  t.equal(spent.size, 2)
  t.equal(spent.spend('h1', now + 200, now + 100), true, 'free again once expired (it can no longer pass findToken)')
  // a seed token never expires: remembered for an hour
  t.equal(spent.spend('seed', Number.MAX_SAFE_INTEGER, now), true)
  t.equal(spent.spend('seed', Number.MAX_SAFE_INTEGER, now + 3_599_999), false)
  t.equal(spent.spend('seed', Number.MAX_SAFE_INTEGER, now + 3_600_000), true)
  // sweeps drop what has expired, at most every 10 s
  const sweeping = new SpentTokens()
  t.equal(sweeping.spend('a', 50, 0), true)
  t.equal(sweeping.spend('b', 20_000, 1), true)
  t.equal(sweeping.spend('c', 100_000, 5_000), true)
  t.equal(sweeping.size, 3, 'no sweep before 10 s')
  t.equal(sweeping.spend('d', 100_000, 10_000), true)
  t.equal(sweeping.size, 3, 'a swept')
  t.equal(sweeping.spend('e', 100_000, 20_000), true)
  t.equal(sweeping.size, 3, 'b swept, e added')
  t.equal(sweeping.spend('c', 100_000, 20_000), false, 'live ones are kept through sweeps')
})

t.test('sessionTokens reads only well-formed records', async (t) => {
  const good: StoredToken = { hash: hashToken('x'), expiresAt: 10, path: null }
  const bound: StoredToken = { hash: hashToken('y'), expiresAt: 10, path: '/chat' }
  t.same(sessionTokens([good, bound]), [good, bound])
  t.same(sessionTokens([good, null, 'x', { hash: 1, expiresAt: 1, path: null }, { hash: 'h', expiresAt: Number.NaN, path: null },
    { hash: 'h', expiresAt: Number.POSITIVE_INFINITY, path: null }, { hash: 'h', expiresAt: '1', path: null }, { hash: 'h', expiresAt: 1, path: 5 },
    { hash: 'h', expiresAt: 1 }]), [good], 'a NaN or infinite expiry fails closed')
  t.same(sessionTokens(undefined), [])
  t.same(sessionTokens({}), [])
  t.same(sessionTokens('tok'), [{ hash: hashToken('tok'), expiresAt: Number.MAX_SAFE_INTEGER, path: null }])
})

t.test('memoryTokenStore: issue, consume, eviction', async (t) => {
  const store = memoryTokenStore()
  t.teardown(() => store.close())
  const now = Date.now()
  const rec = (token: string, path: string | null = null, expiresAt = now + 60_000): StoredToken => ({ hash: hashToken(token), expiresAt, path })
  t.equal(store.size, 0)
  t.equal(await store.consume('s1', hashToken('a'), '/chat', now), 'none-stored')
  await store.issue('s1', rec('a'), 8)
  await store.issue('s1', rec('b', '/chat'), 8)
  await store.issue('s2', rec('a'), 8)
  t.equal(store.size, 2)
  t.equal(await store.consume('s1', hashToken('zzz'), '/chat', now), 'mismatch')
  t.equal(await store.consume('s1', hashToken('b'), '/other', now), 'wrong-path')
  t.equal(await store.consume('s1', hashToken('b'), '/chat', now + 60_000), 'expired')
  t.equal(await store.consume('s1', hashToken('b'), '/chat', now), 'consumed')
  t.equal(await store.consume('s1', hashToken('b'), '/chat', now), 'mismatch', 'once only')
  t.equal(await store.consume('s1', hashToken('a'), '/any', now), 'consumed')
  t.equal(await store.consume('s1', hashToken('a'), '/any', now), 'none-stored', 'id forgotten when empty')
  t.equal(store.size, 1)
  t.equal(await store.consume('s2', hashToken('a'), '/any', now), 'consumed', 'ids are separate')
  t.equal(store.size, 0)

  for (const token of ['1', '2', '3', '4']) await store.issue('s3', rec(token), 3)
  t.equal(await store.consume('s3', hashToken('1'), '/', now), 'mismatch', 'oldest evicted beyond maxTokens')
  for (const token of ['2', '3', '4']) t.equal(await store.consume('s3', hashToken(token), '/', now), 'consumed')
  await store.issue('s4', rec('old', null, Date.now() - 1), 8)
  await store.issue('s4', rec('new'), 8)
  t.equal(await store.consume('s4', hashToken('old'), '/', now - 10), 'mismatch', 'expired records dropped on issue')
})

t.test('memoryTokenStore sweeps expired tokens of abandoned ids', async (t) => {
  const store = memoryTokenStore({ sweepInterval: 10 })
  t.teardown(() => store.close())
  const now = Date.now()
  await store.issue('gone', { hash: hashToken('a'), expiresAt: now + 20, path: null }, 8)
  await store.issue('half', { hash: hashToken('b'), expiresAt: now + 20, path: null }, 8)
  await store.issue('half', { hash: hashToken('c'), expiresAt: now + 600_000, path: null }, 8)
  await store.issue('kept', { hash: hashToken('d'), expiresAt: now + 600_000, path: null }, 8)
  t.equal(store.size, 3)
  // wait for a sweep to have run, however long the machine takes
  const deadline = Date.now() + 10_000
  while (store.size !== 2 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10))
  t.equal(store.size, 2, 'the id whose tokens all expired is dropped')
  // 'half' lost its expired record but kept the live one, even when asked about it before expiry
  t.equal(await store.consume('half', hashToken('b'), '/', now), 'mismatch')
  t.equal(await store.consume('half', hashToken('c'), '/', Date.now()), 'consumed')
  t.equal(await store.consume('kept', hashToken('d'), '/', Date.now()), 'consumed')
  t.equal(store.size, 0)
})

t.test('memoryTokenStore close and options', async (t) => {
  const store = memoryTokenStore({})
  await store.issue('x', { hash: hashToken('a'), expiresAt: Date.now() + 1000, path: null }, 8)
  t.equal(store.size, 1)
  store.close()
  t.equal(store.size, 0, 'close drops every token')
  store.close()
  for (const sweepInterval of [0, -1, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 31, '1000', null]) {
    t.throws(() => memoryTokenStore({ sweepInterval: sweepInterval as number }), { name: 'TypeError', message: /sweepInterval/ }, String(sweepInterval))
  }
  const max = memoryTokenStore({ sweepInterval: 2 ** 31 - 1 })
  max.close()
  t.pass('the longest timer delay is accepted')
})
