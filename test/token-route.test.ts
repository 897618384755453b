/**
 * The token-issuing route over real HTTP: its answer, path binding, and what it refuses.
 */
import t, { type Test } from 'tap'
import { buildApp, Client, close, rawRequest } from './helpers/app'
import { refused } from './helpers/util'
import { issueWebsocketToken } from '../lib/index'

/** The token `token` still opens exactly once: proof that a refused request changed nothing. */
async function stillWorks (t: Test, client: Client, token: string, path = '/chat'): Promise<void> {
  const r = await client.connect(`${path}?token=${token}`)
  t.equal(r.opened, true, 'the earlier token still opens')
  await close(r)
}

t.test('200 { token, expiresAt }, Cache-Control: no-store, expiresAt = now + TTL', async (t) => {
  const { base } = await buildApp(t, { guard: { tokenTTL: 30_000 } })
  const client = new Client(base)
  const before = Date.now()
  const res = await client.getToken()
  const after = Date.now()
  t.equal(res.status, 200)
  t.same(Object.keys(res.body).sort(), ['expiresAt', 'token'])
  t.match(res.body.token, /^[A-Za-z0-9_-]{43}$/)
  t.equal(res.headers.get('cache-control'), 'no-store')
  t.match(res.headers.get('content-type'), /^application\/json/)
  t.equal(res.headers.get('access-control-allow-origin'), null, 'no CORS')
  t.ok(res.body.expiresAt >= before + 30_000 && res.body.expiresAt <= after + 30_000, 'expiresAt is now + tokenTTL')
  t.ok(client.cookie.startsWith('sessionId='), 'the session cookie is set')
  // tokens differ every time
  const second = await client.getToken()
  t.not(second.body.token, res.body.token)
  await stillWorks(t, client, res.body.token)
  await stillWorks(t, client, second.body.token)
})

t.test('the default TTL is 60 s', async (t) => {
  const { base } = await buildApp(t)
  const before = Date.now()
  const res = await new Client(base).getToken()
  t.ok(res.body.expiresAt >= before + 60_000 && res.body.expiresAt <= Date.now() + 60_000)
})

t.test('?path= binds the token to that path', async (t) => {
  const { base } = await buildApp(t, {
    setup (app) {
      app.get('/rooms/:id', { websocket: true, guard: true }, (socket) => { socket.close() })
    }
  })
  const client = new Client(base)
  const res = await client.getToken('?path=/rooms/42')
  t.equal(res.status, 200)
  const other = await client.connect('/rooms/43?token=' + res.body.token)
  refused(t, other, 'WS_GUARD_TOKEN_MISMATCH')
  await stillWorks(t, client, res.body.token, '/rooms/42')
  // percent-encoded in the query, it binds the decoded path
  const encoded = await client.getToken('?path=%2Frooms%2F7')
  t.equal(encoded.status, 200)
  await stillWorks(t, client, encoded.body.token, '/rooms/7')
  // path may come with other parameters
  const mixed = await client.getToken('?x=1&path=/chat')
  t.equal(mixed.status, 200)
  await stillWorks(t, client, mixed.body.token)
})

t.test('invalid path values: 400 WS_GUARD_BAD_REQUEST and nothing issued', async (t) => {
  // with maxTokens 1, anything issued would evict the outstanding token
  const { base, rejections } = await buildApp(t, { guard: { maxTokens: 1 } })
  const client = new Client(base)
  const token = await client.token()
  const bad = [
    ['no leading /', '?path=chat'],
    ['empty', '?path='],
    ['bare parameter', '?path'],
    ['query characters', '?path=' + encodeURIComponent('/chat?token=x')],
    ['fragment', '?path=' + encodeURIComponent('/chat#x')],
    ['whitespace', '?path=' + encodeURIComponent('/chat room')],
    ['newline', '?path=' + encodeURIComponent('/chat\n')],
    ['too long', '?path=/' + 'a'.repeat(1024)],
    ['repeated', '?path=/chat&path=/other'],
    ['repeated, same value', '?path=/chat&path=/chat']
  ]
  for (const [what, query] of bad) {
    const res = await client.getToken(query)
    refused(t, res, 'WS_GUARD_BAD_REQUEST', { statusCode: 400, what: String(what) })
  }
  t.equal(rejections.length, 0, 'a malformed request is no security refusal')
  // the longest allowed path is fine
  const longest = '/' + 'a'.repeat(1023)
  const ok = await client.getToken('?path=' + longest)
  t.equal(ok.status, 200)
  // ...and, maxTokens being 1, it evicted the first token: proof that issuing is observable here
  const evicted = await client.connect('/chat?token=' + token)
  t.equal(evicted.body.code, 'WS_GUARD_TOKEN_MISMATCH')
})

t.test('nothing is issued by a refused request', async (t) => {
  const { base } = await buildApp(t, { guard: { maxTokens: 1 } })
  const client = new Client(base)
  const token = await client.token()
  refused(t, await client.getToken('?path=chat'), 'WS_GUARD_BAD_REQUEST', { statusCode: 400 })
  refused(t, await client.getToken('', { origin: 'https://evil.example' }), 'WS_GUARD_ORIGIN_NOT_ALLOWED')
  refused(t, await client.getToken('', { 'sec-fetch-site': 'cross-site' }), 'WS_GUARD_ORIGIN_NOT_ALLOWED')
  await stillWorks(t, client, token)
})

t.test('Origin present and not allowed: 403, no token, session unchanged', async (t) => {
  const { base, rejections } = await buildApp(t, { guard: { maxTokens: 1 } })
  const client = new Client(base)
  const token = await client.token()
  const cookie = client.cookie
  for (const origin of ['https://evil.example', 'null', '', base + '/', base.replace('127.0.0.1', 'localhost')]) {
    const res = await client.getToken('', { origin })
    refused(t, res, 'WS_GUARD_ORIGIN_NOT_ALLOWED', { what: `Origin ${JSON.stringify(origin)}` })
  }
  t.equal(client.cookie, cookie, 'the session cookie is the same')
  t.equal(rejections.length, 5, 'onReject saw each refusal')
  t.same(rejections.map((r) => r.url), Array(5).fill('/websocket-token'))
  await stillWorks(t, client, token)
  // an allowed Origin, or none, is served
  t.equal((await client.getToken('', { origin: base })).status, 200)
  t.equal((await client.getToken()).status, 200)
})

t.test('a fresh client refused for its Origin gets no token', async (t) => {
  const { base } = await buildApp(t)
  const client = new Client(base)
  refused(t, await client.getToken('', { origin: 'https://evil.example' }), 'WS_GUARD_ORIGIN_NOT_ALLOWED')
  // whatever session it got holds nothing
  const r = await client.connect('/chat?token=x')
  t.equal(r.body.code, 'WS_GUARD_NO_TOKEN_STORED')
})

t.test('the token route follows the origins option', async (t) => {
  const { base } = await buildApp(t, { guard: { origins: ['https://app.example.com'] } })
  const client = new Client(base, 'https://app.example.com')
  t.equal((await client.getToken('', { origin: 'https://app.example.com' })).status, 200)
  refused(t, await client.getToken('', { origin: base }), 'WS_GUARD_ORIGIN_NOT_ALLOWED')

  const fn = await buildApp(t, { guard: { origins: async (origin, request) => origin === 'https://fn.example' && request.url.startsWith('/websocket-token') } })
  const c2 = new Client(fn.base)
  t.equal((await c2.getToken('', { origin: 'https://fn.example' })).status, 200)
  refused(t, await c2.getToken('', { origin: 'https://other.example' }), 'WS_GUARD_ORIGIN_NOT_ALLOWED')
})

t.test('Sec-Fetch-Site: cross-site is refused; same-site needs an allowed Origin; same-origin and none are served', async (t) => {
  const { base, rejections } = await buildApp(t, { guard: { maxTokens: 1 } })
  const client = new Client(base)
  const token = await client.token()
  refused(t, await client.getToken('', { 'sec-fetch-site': 'cross-site' }), 'WS_GUARD_ORIGIN_NOT_ALLOWED')
  refused(t, await client.getToken('', { 'sec-fetch-site': 'cross-site', origin: base }), 'WS_GUARD_ORIGIN_NOT_ALLOWED')
  // duplicated headers arrive joined: still cross-site
  refused(t, await client.getToken('', { 'sec-fetch-site': 'cross-site, cross-site', origin: base }), 'WS_GUARD_ORIGIN_NOT_ALLOWED')
  // a sibling subdomain's <img> or no-cors fetch: same-site, no Origin; it must not evict the token
  refused(t, await client.getToken('', { 'sec-fetch-site': 'same-site' }), 'WS_GUARD_ORIGIN_NOT_ALLOWED')
  refused(t, await client.getToken('', { 'sec-fetch-site': 'same-site', origin: 'http://evil.127.0.0.1.nip.io' }), 'WS_GUARD_ORIGIN_NOT_ALLOWED')
  t.equal(rejections.length, 5)
  await stillWorks(t, client, token)
  t.equal((await client.getToken('', { 'sec-fetch-site': 'same-site', origin: base })).status, 200, 'same-site with an allowed Origin')
  for (const site of ['same-origin', 'none']) {
    t.equal((await client.getToken('', { 'sec-fetch-site': site })).status, 200, site)
  }
})

t.test('tokenRoute: a custom path', async (t) => {
  const { base } = await buildApp(t, { guard: { tokenRoute: '/auth/ws-token' } })
  const client = new Client(base)
  t.equal((await client.getToken()).status, 404, 'nothing at the default path')
  client.tokenPath = '/auth/ws-token'
  const token = await client.token()
  await stillWorks(t, client, token)
})

t.test('tokenRoute: false registers no route; tokens issued by the app still work', async (t) => {
  const { base } = await buildApp(t, {
    guard: { tokenRoute: false, tokenTTL: 5000 },
    setup (app) {
      app.get('/my-token', async (request) => ({ token: issueWebsocketToken(request.session as any, { path: '/chat' }) }))
    }
  })
  const client = new Client(base)
  t.equal((await client.getToken()).status, 404)
  client.tokenPath = '/my-token'
  const token = await client.token()
  await stillWorks(t, client, token)
  const again = await client.connect('/chat?token=' + token)
  t.equal(again.status, 403)
})

t.test('no HEAD route, and only GET', async (t) => {
  const { base } = await buildApp(t)
  const head = await rawRequest(base + '/websocket-token', { method: 'HEAD' })
  t.equal(head.status, 404)
  const post = await rawRequest(base + '/websocket-token', { method: 'POST' })
  t.equal(post.status, 404)
  const get = await rawRequest(base + '/websocket-token')
  t.equal(get.status, 200)
})

t.test('saveUninitialized: false still persists the session', async (t) => {
  const { base } = await buildApp(t, { session: { saveUninitialized: false } })
  // an untouched session is not saved: no cookie
  const none = await rawRequest(base + '/nothing')
  t.equal(none.headers['set-cookie'], undefined)
  const client = new Client(base)
  const token = await client.token()
  t.ok(client.cookie.startsWith('sessionId='), 'issuing a token sets the cookie')
  await stillWorks(t, client, token)
  const again = await client.connect('/chat?token=' + token)
  t.equal(again.body.code, 'WS_GUARD_NO_TOKEN_STORED')
})

t.test('a token request refused for its Origin still counts as a rejection in the log, never the token', async (t) => {
  const raw: string[] = []
  const { base } = await buildApp(t, { fastify: { logger: { level: 'trace', stream: { write: (s: string) => { raw.push(s) } } } } })
  const client = new Client(base)
  const token = await client.token()
  await client.getToken('', { origin: 'https://evil.example' })
  const lines = raw.map((s) => JSON.parse(s))
  const refusal = lines.find((l) => l.msg === 'websocket guard refused the request')
  t.same([refusal?.code, refusal?.route, refusal?.origin], ['WS_GUARD_ORIGIN_NOT_ALLOWED', '/websocket-token', 'https://evil.example'])
  t.notOk(raw.join('').includes(token), 'the issued token is never logged')
})
