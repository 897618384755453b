/**
 * The guard on real upgrades: a real server, real `ws` clients, real sessions. Each test
 * proves one rule of API.md over the wire.
 */
import t, { type Test } from 'tap'
import { randomBytes } from 'node:crypto'
import Fastify from 'fastify'
import cookie from '@fastify/cookie'
import session from '@fastify/session'
import websocket from '@fastify/websocket'
import { buildApp, Client, close, connect, rawRequest, SECRET, type ConnectResult } from './helpers/app'
import { fakeToken, refused, sleep } from './helpers/util'
import websocketGuard, {
  NoWebsocketTokenPresented,
  WebsocketOriginNotAllowed,
  WebsocketSecurityError,
  WebsocketTokenMismatch
} from '../lib/index'

async function opens (t: Test, r: ConnectResult): Promise<void> {
  t.equal(r.opened, true, 'socket opens')
  if (r.opened) {
    // the handler really runs: it greets
    const messages = r.messages as string[]
    if (messages.length === 0) await new Promise((resolve) => r.socket?.once('message', resolve))
    t.equal(messages[0], 'hello')
  }
  await close(r)
}

t.test('transports', async (t) => {
  t.test('query transport opens; the socket has no protocol', async (t) => {
    const { base, opened } = await buildApp(t)
    const client = new Client(base)
    const token = await client.token()
    const r = await client.connect('/chat?token=' + token)
    t.equal(r.protocol, '')
    await opens(t, r)
    t.same(opened, [{ websocketGuard: { origin: base, token }, protocol: '' }])
  })

  t.test('query transport among other parameters', async (t) => {
    const { base, opened } = await buildApp(t)
    const client = new Client(base)
    const token = await client.token()
    await opens(t, await client.connect(`/chat?room=1&token=${token}&x=y`))
    t.equal(opened.length, 1)
  })

  t.test("subprotocol transport ['websocket-guard', 'websocket-guard.<t>'] selects 'websocket-guard'", async (t) => {
    const { base, opened } = await buildApp(t)
    const client = new Client(base)
    const token = await client.token()
    const r = await client.connect('/chat', { protocols: ['websocket-guard', 'websocket-guard.' + token] })
    t.equal(r.protocol, 'websocket-guard')
    await opens(t, r)
    t.same(opened, [{ websocketGuard: { origin: base, token }, protocol: 'websocket-guard' }])
  })

  t.test("['chat', 'websocket-guard.<t>'] selects 'chat'; the token entry is never echoed", async (t) => {
    const { base, opened } = await buildApp(t)
    const client = new Client(base)
    const token = await client.token()
    const r = await client.connect('/chat', { protocols: ['chat', 'websocket-guard.' + token] })
    t.equal(r.protocol, 'chat')
    await opens(t, r)
    t.equal(opened[0]?.protocol, 'chat')
    // token entry first
    const token2 = await client.token()
    const r2 = await client.connect('/chat', { protocols: ['websocket-guard.' + token2, 'chat', 'websocket-guard'] })
    t.equal(r2.protocol, 'chat')
    await opens(t, r2)
  })

  t.test('custom protocol and queryParam names', async (t) => {
    const { base } = await buildApp(t, { guard: { protocol: 'x-guard', queryParam: 'wst' } })
    const client = new Client(base)
    const token = await client.token()
    const r = await client.connect('/chat', { protocols: ['x-guard', 'x-guard.' + token] })
    t.equal(r.protocol, 'x-guard')
    await opens(t, r)
    await opens(t, await client.connect('/chat?wst=' + await client.token()))
    // the default names mean nothing now
    const token3 = await client.token()
    refused(t, await client.connect('/chat?token=' + token3), 'WS_GUARD_NO_TOKEN_PRESENTED', { secrets: [token3] })
    refused(t, await client.connect('/chat', { protocols: ['websocket-guard', 'websocket-guard.' + token3] }), 'WS_GUARD_NO_TOKEN_PRESENTED', { secrets: [token3] })
    await opens(t, await client.connect('/chat?wst=' + token3))
  })

  t.test('only the token entry offered: refused before anything is consumed, saying to offer the bare protocol', async (t) => {
    const { base, opened } = await buildApp(t)
    const client = new Client(base)
    const token = await client.token()
    const alone = await client.connect('/chat', { protocols: ['websocket-guard.' + token] })
    refused(t, alone, 'WS_GUARD_NO_TOKEN_PRESENTED', { secrets: [token] })
    t.match(alone.body.message, /offered alone: offer the bare protocol too/)
    t.equal(opened.length, 0, 'nothing upgraded')
    await opens(t, await client.connect('/chat?token=' + token))
  })
})

t.test('request.websocketGuard', async (t) => {
  const seen: Record<string, unknown[]> = { open: [], off: [], originOnly: [] }
  const { base, opened } = await buildApp(t, {
    setup (app) {
      app.get('/open', { websocket: true }, (socket, request) => { seen.open?.push(request.websocketGuard); socket.close() })
      app.get('/off', { websocket: true, guard: false }, (socket, request) => { seen.off?.push(request.websocketGuard); socket.close() })
      app.get('/origin-only', { websocket: true, guard: { token: false } }, (socket, request) => { seen.originOnly?.push(request.websocketGuard); socket.close() })
      app.get('/http', async (request) => ({ websocketGuard: request.websocketGuard }))
    }
  })
  const client = new Client(base)
  const token = await client.token()
  await opens(t, await client.connect('/chat?token=' + token))
  t.same(opened[0]?.websocketGuard, { origin: base, token }, 'guarded: normalised origin and consumed token')

  const open = await client.connect('/open', { origin: 'https://evil.example' })
  t.equal(open.body?.code, 'WS_GUARD_ORIGIN_NOT_ALLOWED', 'a websocket route without guard is guarded (guardAll)')
  const off = await client.connect('/off', { origin: 'https://evil.example' })
  t.equal(off.opened, true, 'guard: false checks nothing')
  await close(off)
  const originOnly = await client.connect('/origin-only')
  t.equal(originOnly.opened, true, 'token: false needs no token')
  await close(originOnly)
  const http = await rawRequest(base + '/http')
  t.same(http.body, { websocketGuard: null })
  t.same(seen, { open: [], off: [null], originOnly: [{ origin: base, token: null }] })

  refused(t, await client.connect('/origin-only', { origin: 'https://evil.example' }), 'WS_GUARD_ORIGIN_NOT_ALLOWED')
  // a token presented on a token: false route is ignored, not consumed
  const kept = await client.token()
  const r = await client.connect('/origin-only?token=' + kept)
  t.equal(r.opened, true)
  await close(r)
  await opens(t, await client.connect('/chat?token=' + kept))
})

t.test('every error code over the wire, with Fastify body shape, never showing the token', async (t) => {
  const { base, rejections } = await buildApp(t)
  const client = new Client(base)
  const token = await client.token()

  refused(t, await client.connect('/chat?token=' + token, { origin: 'https://evil.example' }), 'WS_GUARD_ORIGIN_NOT_ALLOWED', { secrets: [token] })
  refused(t, await client.connect('/chat?token=' + token, { origin: undefined }), 'WS_GUARD_ORIGIN_NOT_ALLOWED', { secrets: [token] })
  refused(t, await client.connect('/chat'), 'WS_GUARD_NO_TOKEN_PRESENTED')
  refused(t, await client.connect('/chat?token='), 'WS_GUARD_NO_TOKEN_PRESENTED')
  refused(t, await client.connect('/chat?token'), 'WS_GUARD_NO_TOKEN_PRESENTED')
  refused(t, await client.connect('/chat', { protocols: ['websocket-guard', 'websocket-guard.'] }), 'WS_GUARD_NO_TOKEN_PRESENTED')
  refused(t, await client.connect(`/chat?token=${token}&token=${token}`), 'WS_GUARD_NO_TOKEN_PRESENTED', { secrets: [token] })
  refused(t, await client.connect('/chat?token=' + token, { protocols: ['websocket-guard', 'websocket-guard.' + token] }), 'WS_GUARD_NO_TOKEN_PRESENTED', { secrets: [token] })
  refused(t, await client.connect('/chat', { headers: { 'sec-websocket-protocol': `websocket-guard.${token}, websocket-guard.${token}` } }), 'WS_GUARD_NO_TOKEN_PRESENTED', { secrets: [token] })
  const wrong = fakeToken()
  refused(t, await client.connect('/chat?token=' + wrong), 'WS_GUARD_TOKEN_MISMATCH', { secrets: [wrong] })
  const long = 'a'.repeat(10_000)
  refused(t, await client.connect('/chat?token=' + long), 'WS_GUARD_TOKEN_MISMATCH', { secrets: [long.slice(0, 300)] })
  refused(t, await client.connect('/chat?token=' + token, { cookie: false }), 'WS_GUARD_NO_TOKEN_STORED', { secrets: [token] })
  t.same(rejections.map((r) => r.statusCode), Array(rejections.length).fill(403))
  t.equal(rejections.length, 12, 'onReject saw each refusal')

  // none of that consumed the token
  await opens(t, await client.connect('/chat?token=' + token))
  refused(t, await client.connect('/chat?token=' + token), 'WS_GUARD_NO_TOKEN_STORED', { secrets: [token] })

  const other = await client.token()
  const another = await client.token()
  // one of two outstanding tokens used: the other presented twice is a mismatch, never a pass
  await opens(t, await client.connect('/chat?token=' + other))
  refused(t, await client.connect('/chat?token=' + other), 'WS_GUARD_TOKEN_MISMATCH', { secrets: [other] })
  await opens(t, await client.connect('/chat?token=' + another))
})

t.test('expired token: WS_GUARD_TOKEN_EXPIRED, and it stays refused', async (t) => {
  const { base } = await buildApp(t, { guard: { tokenTTL: 100 } })
  const client = new Client(base)
  const { body } = await client.getToken()
  const { body: { token: live, expiresAt: lastExpiry } } = await client.getToken('?path=/chat')
  t.ok(body.expiresAt > Date.now() - 1000)
  // wait until both have expired, whatever the machine's load
  await sleep(Math.max(0, lastExpiry - Date.now()) + 30)
  refused(t, await client.connect('/chat?token=' + body.token), 'WS_GUARD_TOKEN_EXPIRED', { secrets: [body.token] })
  refused(t, await client.connect('/chat', { protocols: ['websocket-guard', 'websocket-guard.' + body.token] }), 'WS_GUARD_TOKEN_EXPIRED', { secrets: [body.token] })
  refused(t, await client.connect('/chat?token=' + live), 'WS_GUARD_TOKEN_EXPIRED', { secrets: [live] })
  // a fresh token still works
  await opens(t, await client.connect('/chat?token=' + await client.token()))
})

t.test('order: origin first, a refused origin consumes nothing', async (t) => {
  const { base, rejections } = await buildApp(t)
  const client = new Client(base)
  const token = await client.token()
  refused(t, await client.connect('/chat?token=' + token, { origin: 'https://evil.example' }), 'WS_GUARD_ORIGIN_NOT_ALLOWED', { secrets: [token] })
  refused(t, await client.connect('/chat', { origin: 'null', protocols: ['websocket-guard', 'websocket-guard.' + token] }), 'WS_GUARD_ORIGIN_NOT_ALLOWED', { secrets: [token] })
  // bad origin and no token at all: still the origin error
  refused(t, await client.connect('/chat', { origin: 'https://evil.example' }), 'WS_GUARD_ORIGIN_NOT_ALLOWED')
  t.equal(rejections.length, 3)
  await opens(t, await client.connect('/chat?token=' + token))
})

t.test('a wrong token consumes nothing', async (t) => {
  const { base } = await buildApp(t)
  const client = new Client(base)
  const token = await client.token()
  for (let i = 0; i < 3; i++) refused(t, await client.connect('/chat?token=' + fakeToken()), 'WS_GUARD_TOKEN_MISMATCH')
  // another session's token is a wrong token here
  const stranger = new Client(base)
  const theirs = await stranger.token()
  refused(t, await client.connect('/chat?token=' + theirs), 'WS_GUARD_TOKEN_MISMATCH', { secrets: [theirs] })
  await opens(t, await client.connect('/chat?token=' + token))
  await opens(t, await stranger.connect('/chat?token=' + theirs))
})

t.test('path binding: refused on another route, still valid on its own', async (t) => {
  const { base, opened } = await buildApp(t, {
    setup (app) {
      app.get('/other', { websocket: true, guard: true }, (socket, request) => {
        opened.push({ websocketGuard: request.websocketGuard, protocol: socket.protocol })
        socket.send('hello')
      })
    }
  })
  const client = new Client(base)
  const bound = await client.token('?path=/chat')
  refused(t, await client.connect('/other?token=' + bound), 'WS_GUARD_TOKEN_MISMATCH', { secrets: [bound] })
  refused(t, await client.connect('/other', { protocols: ['websocket-guard', 'websocket-guard.' + bound] }), 'WS_GUARD_TOKEN_MISMATCH', { secrets: [bound] })
  await opens(t, await client.connect('/chat?token=' + bound))
  refused(t, await client.connect('/chat?token=' + bound), 'WS_GUARD_NO_TOKEN_STORED', { secrets: [bound] })

  // an unbound token works on either route
  const free = await client.token()
  await opens(t, await client.connect('/other?token=' + free))
  const boundOther = await client.token('?path=/other')
  refused(t, await client.connect('/chat?token=' + boundOther), 'WS_GUARD_TOKEN_MISMATCH', { secrets: [boundOther] })
  await opens(t, await client.connect('/other?token=' + boundOther))
})

t.test('replay refused, on both transports', async (t) => {
  const { base, opened } = await buildApp(t)
  const client = new Client(base)
  const token = await client.token()
  await opens(t, await client.connect('/chat', { protocols: ['websocket-guard', 'websocket-guard.' + token] }))
  refused(t, await client.connect('/chat', { protocols: ['websocket-guard', 'websocket-guard.' + token] }), 'WS_GUARD_NO_TOKEN_STORED', { secrets: [token] })
  refused(t, await client.connect('/chat?token=' + token), 'WS_GUARD_NO_TOKEN_STORED', { secrets: [token] })
  // and after new tokens were issued, it is a mismatch, never a pass
  const fresh = await client.token()
  refused(t, await client.connect('/chat?token=' + token), 'WS_GUARD_TOKEN_MISMATCH', { secrets: [token] })
  await opens(t, await client.connect('/chat?token=' + fresh))
  t.equal(opened.length, 2)
})

t.test('multi-tab: several outstanding tokens, each opens once, in any order', async (t) => {
  const { base, opened } = await buildApp(t)
  const client = new Client(base)
  const tokens: string[] = []
  for (let i = 0; i < 5; i++) tokens.push(await client.token())
  t.equal(new Set(tokens).size, 5)
  for (const i of [3, 0, 4, 1, 2]) {
    const via = i % 2 === 0 ? { protocols: ['websocket-guard', 'websocket-guard.' + tokens[i]] } : {}
    const path = i % 2 === 0 ? '/chat' : '/chat?token=' + tokens[i]
    await opens(t, await client.connect(path, via))
  }
  for (const token of tokens) {
    const r = await client.connect('/chat?token=' + token)
    t.equal(r.opened, false)
    t.equal(r.status, 403)
  }
  t.same(opened.map((o) => (o.websocketGuard as { token: string }).token), [3, 0, 4, 1, 2].map((i) => tokens[i]))
})

t.test('eviction at maxTokens: the oldest is refused, newer ones open', async (t) => {
  const { base } = await buildApp(t, { guard: { maxTokens: 3 } })
  const client = new Client(base)
  const tokens: string[] = []
  for (let i = 0; i < 5; i++) tokens.push(await client.token())
  refused(t, await client.connect('/chat?token=' + tokens[0]), 'WS_GUARD_TOKEN_MISMATCH', { secrets: [tokens[0] as string] })
  refused(t, await client.connect('/chat?token=' + tokens[1]), 'WS_GUARD_TOKEN_MISMATCH', { secrets: [tokens[1] as string] })
  for (const token of tokens.slice(2).reverse()) await opens(t, await client.connect('/chat?token=' + token))
})

t.test('allowMissingOrigin', async (t) => {
  t.test('refused by default', async (t) => {
    const { base, rejections } = await buildApp(t)
    const client = new Client(base, null)
    const token = await client.token()
    const r = await client.connect('/chat?token=' + token)
    refused(t, r, 'WS_GUARD_ORIGIN_NOT_ALLOWED', { secrets: [token] })
    t.match(r.body.message, /missing/)
    t.same(rejections.map((r) => r.code), ['WS_GUARD_ORIGIN_NOT_ALLOWED'])
    await opens(t, await client.connect('/chat?token=' + token, { origin: base }))
  })

  t.test('accepted with the option, the token still required', async (t) => {
    const { base, opened } = await buildApp(t, { guard: { allowMissingOrigin: true } })
    const client = new Client(base, null)
    refused(t, await client.connect('/chat'), 'WS_GUARD_NO_TOKEN_PRESENTED')
    refused(t, await client.connect('/chat?token=' + fakeToken()), 'WS_GUARD_NO_TOKEN_STORED')
    const token = await client.token()
    refused(t, await client.connect('/chat?token=' + fakeToken()), 'WS_GUARD_TOKEN_MISMATCH')
    await opens(t, await client.connect('/chat?token=' + token))
    t.same(opened[0]?.websocketGuard, { origin: null, token })
    // a present origin is still checked
    refused(t, await client.connect('/chat?token=' + await client.token(), { origin: 'https://evil.example' }), 'WS_GUARD_ORIGIN_NOT_ALLOWED')
    // an empty Origin header is not a missing one
    refused(t, await client.connect('/chat?token=' + await client.token(), { headers: { origin: '' } }), 'WS_GUARD_ORIGIN_NOT_ALLOWED')
  })
})

t.test('per-route overrides', async (t) => {
  t.test('origins', async (t) => {
    const { base } = await buildApp(t, {
      setup (app) {
        app.get('/partner', { websocket: true, guard: { origins: ['https://partner.example'] } }, (socket) => { socket.send('hello') })
        app.get('/partner-fn', { websocket: true, guard: { origins: (origin) => origin === 'https://fn.example' } }, (socket) => { socket.send('hello') })
      }
    })
    const client = new Client(base)
    const token = await client.token()
    refused(t, await client.connect('/partner?token=' + token), 'WS_GUARD_ORIGIN_NOT_ALLOWED', { secrets: [token] })
    refused(t, await client.connect('/chat?token=' + token, { origin: 'https://partner.example' }), 'WS_GUARD_ORIGIN_NOT_ALLOWED', { secrets: [token] })
    await opens(t, await client.connect('/partner?token=' + token, { origin: 'https://partner.example' }))
    const token2 = await client.token()
    refused(t, await client.connect('/partner-fn?token=' + token2), 'WS_GUARD_ORIGIN_NOT_ALLOWED')
    await opens(t, await client.connect('/partner-fn?token=' + token2, { origin: 'https://fn.example' }))
  })

  t.test('allowMissingOrigin, both ways', async (t) => {
    const { base } = await buildApp(t, {
      setup (app) {
        app.get('/cli', { websocket: true, guard: { allowMissingOrigin: true } }, (socket) => { socket.send('hello') })
      }
    })
    const client = new Client(base, null)
    const token = await client.token()
    refused(t, await client.connect('/chat?token=' + token), 'WS_GUARD_ORIGIN_NOT_ALLOWED', { secrets: [token] })
    refused(t, await client.connect('/cli'), 'WS_GUARD_NO_TOKEN_PRESENTED')
    await opens(t, await client.connect('/cli?token=' + token))

    const strict = await buildApp(t, {
      guard: { allowMissingOrigin: true },
      route: { allowMissingOrigin: false }
    })
    const c2 = new Client(strict.base, null)
    const token2 = await c2.token()
    refused(t, await c2.connect('/chat?token=' + token2), 'WS_GUARD_ORIGIN_NOT_ALLOWED', { secrets: [token2] })
    await opens(t, await c2.connect('/chat?token=' + token2, { origin: strict.base }))
  })

  t.test('token: false checks the origin only', async (t) => {
    const { base, opened } = await buildApp(t, { route: { token: false } })
    const client = new Client(base)
    const r = await client.connect('/chat', { cookie: false })
    await opens(t, r)
    t.same(opened[0]?.websocketGuard, { origin: base, token: null })
    refused(t, await client.connect('/chat', { origin: 'https://evil.example' }), 'WS_GUARD_ORIGIN_NOT_ALLOWED')
    refused(t, await client.connect('/chat', { origin: undefined }), 'WS_GUARD_ORIGIN_NOT_ALLOWED')
    // the subprotocol header is left alone on such a route
    const p = await client.connect('/chat', { protocols: ['chat'] })
    t.equal(p.protocol, 'chat')
    await opens(t, p)
  })
})

t.test('same-origin default honours trustProxy', async (t) => {
  t.test('trustProxy: X-Forwarded-Proto/Host set the expected origin', async (t) => {
    const { base } = await buildApp(t, { fastify: { trustProxy: true } })
    const forwarded = { 'x-forwarded-proto': 'https', 'x-forwarded-host': 'app.example.com' }
    const client = new Client(base, 'https://app.example.com')
    const res = await client.getToken('', { ...forwarded, origin: 'https://app.example.com' })
    t.equal(res.status, 200, 'the token route applies the same rule')
    const token = res.body.token
    refused(t, await client.connect('/chat?token=' + token, { headers: forwarded, origin: base }), 'WS_GUARD_ORIGIN_NOT_ALLOWED', { secrets: [token] })
    refused(t, await client.connect('/chat?token=' + token, { headers: { 'x-forwarded-proto': 'http', 'x-forwarded-host': 'app.example.com' } }), 'WS_GUARD_ORIGIN_NOT_ALLOWED', { secrets: [token] })
    const r = await client.connect('/chat?token=' + token, { headers: forwarded })
    await opens(t, r)
    // default port folded: https://app.example.com:443 is the same origin
    const token2 = await client.token()
    await opens(t, await client.connect('/chat?token=' + token2, { headers: forwarded, origin: 'https://APP.example.com:443' }))
  })

  t.test('without trustProxy the forwarded headers are ignored', async (t) => {
    const { base } = await buildApp(t)
    const forwarded = { 'x-forwarded-proto': 'https', 'x-forwarded-host': 'app.example.com' }
    const client = new Client(base)
    const res = await client.getToken('', { ...forwarded, origin: 'https://app.example.com' })
    t.equal(res.status, 403)
    const token = await client.token()
    refused(t, await client.connect('/chat?token=' + token, { headers: forwarded, origin: 'https://app.example.com' }), 'WS_GUARD_ORIGIN_NOT_ALLOWED', { secrets: [token] })
    await opens(t, await client.connect('/chat?token=' + token, { headers: forwarded }))
  })

  t.test('the Host header decides, not a look-alike origin', async (t) => {
    const { base } = await buildApp(t)
    const client = new Client(base)
    const token = await client.token()
    const port = new URL(base).port
    refused(t, await client.connect('/chat?token=' + token, { origin: `http://localhost:${port}` }), 'WS_GUARD_ORIGIN_NOT_ALLOWED', { secrets: [token] })
    refused(t, await client.connect('/chat?token=' + token, { origin: `https://127.0.0.1:${port}` }), 'WS_GUARD_ORIGIN_NOT_ALLOWED', { secrets: [token] })
    refused(t, await client.connect('/chat?token=' + token, { origin: base + '/' }), 'WS_GUARD_ORIGIN_NOT_ALLOWED', { secrets: [token] })
    await opens(t, await client.connect('/chat?token=' + token, { origin: base.toUpperCase().replace('HTTP', 'http') }))
  })
})

t.test('origins as a list', async (t) => {
  const { base, opened } = await buildApp(t, { guard: { origins: ['https://app.example.com', 'https://*.example.org', /^https:\/\/[a-z]+\.example\.net$/] } })
  const client = new Client(base)
  const token = await client.token()
  refused(t, await client.connect('/chat?token=' + token), 'WS_GUARD_ORIGIN_NOT_ALLOWED', { secrets: [token] })
  refused(t, await client.connect('/chat?token=' + token, { origin: 'https://example.org' }), 'WS_GUARD_ORIGIN_NOT_ALLOWED', { secrets: [token] })
  refused(t, await client.connect('/chat?token=' + token, { origin: 'https://app.example.com.evil.io' }), 'WS_GUARD_ORIGIN_NOT_ALLOWED', { secrets: [token] })
  await opens(t, await client.connect('/chat?token=' + token, { origin: 'HTTPS://App.Example.COM:443' }))
  await opens(t, await client.connect('/chat?token=' + await client.token(), { origin: 'https://a.b.example.org' }))
  await opens(t, await client.connect('/chat?token=' + await client.token(), { origin: 'https://ws.example.net' }))
  t.same(opened.map((o) => (o.websocketGuard as { origin: string }).origin), ['https://app.example.com', 'https://a.b.example.org', 'https://ws.example.net'])
})

t.test('origins as a function', async (t) => {
  t.test('sync, receives the origin and the request', async (t) => {
    const calls: Array<{ origin: string, url: string, cookie: boolean }> = []
    const { base, opened } = await buildApp(t, {
      guard: {
        origins (origin, request) {
          calls.push({ origin, url: request.url.split('?')[0] as string, cookie: typeof request.headers.cookie === 'string' })
          return origin.toLowerCase().startsWith('https://fn.example')
        }
      }
    })
    const client = new Client(base, 'HTTPS://FN.example:443')
    const token = await client.token()
    refused(t, await client.connect('/chat?token=' + token, { origin: base }), 'WS_GUARD_ORIGIN_NOT_ALLOWED', { secrets: [token] })
    // an origin that does not parse never reaches the function
    refused(t, await client.connect('/chat?token=' + token, { origin: 'https://fn.example/path' }), 'WS_GUARD_ORIGIN_NOT_ALLOWED', { secrets: [token] })
    await opens(t, await client.connect('/chat?token=' + token))
    t.same(opened[0]?.websocketGuard, { origin: 'https://fn.example', token }, 'the result carries the normalised origin')
    t.same(calls, [
      { origin: base, url: '/chat', cookie: true },
      { origin: 'HTTPS://FN.example:443', url: '/chat', cookie: true }
    ], 'the function got the raw Origin header and the request')
  })

  t.test('async', async (t) => {
    const { base } = await buildApp(t, {
      guard: {
        async origins (origin) {
          await sleep(5)
          return origin === 'https://async.example'
        }
      }
    })
    const client = new Client(base, 'https://async.example')
    const token = await client.token()
    refused(t, await client.connect('/chat?token=' + token, { origin: 'https://other.example' }), 'WS_GUARD_ORIGIN_NOT_ALLOWED', { secrets: [token] })
    await opens(t, await client.connect('/chat?token=' + token))
  })

  t.test('only true allows', async (t) => {
    const { base } = await buildApp(t, { guard: { origins: (() => 'yes') as unknown as () => boolean } })
    const client = new Client(base, null)
    const token = await client.token()
    refused(t, await client.connect('/chat?token=' + token, { origin: 'https://any.example' }), 'WS_GUARD_ORIGIN_NOT_ALLOWED', { secrets: [token] })
  })

  for (const kind of ['throws', 'rejects']) {
    t.test(`a function that ${kind}: refused (403), no socket opens, nothing consumed`, async (t) => {
      let fail = true
      const { base, rejections, opened } = await buildApp(t, {
        guard: {
          origins: kind === 'throws'
            ? () => { if (fail) throw new Error('boom'); return true }
            : async () => { if (fail) throw new Error('boom'); return true }
        }
      })
      const client = new Client(base, null)
      const token = await client.token()
      const r = await client.connect('/chat?token=' + token, { origin: 'https://x.example' })
      t.equal(r.opened, false)
      t.equal(r.status, 403)
      t.equal(r.body.code, 'WS_GUARD_ORIGIN_NOT_ALLOWED')
      t.notOk(JSON.stringify(r.body).includes(token))
      t.notMatch(JSON.stringify(r.body), /boom/, 'the function\'s error stays out of the body')
      t.equal(opened.length, 0)
      t.equal(rejections.length, 1, 'a refusal like any other')
      fail = false
      await opens(t, await client.connect('/chat?token=' + token, { origin: 'https://x.example' }))
    })
  }
})

t.test('onReject is called with the error and the request for each refusal', async (t) => {
  const calls: Array<{ error: unknown, url: string, origin: unknown }> = []
  const { base } = await buildApp(t, {
    guard: {
      onReject (error, request) {
        calls.push({ error, url: request.url, origin: request.headers.origin })
      }
    }
  })
  const client = new Client(base)
  await client.token()
  await client.connect('/chat?token=x', { origin: 'https://evil.example' })
  await client.connect('/chat')
  await client.connect('/chat?token=' + fakeToken())
  t.equal(calls.length, 3)
  t.ok(calls[0]?.error instanceof WebsocketOriginNotAllowed)
  t.ok(calls[1]?.error instanceof NoWebsocketTokenPresented)
  t.ok(calls[2]?.error instanceof WebsocketTokenMismatch)
  for (const call of calls) t.ok(call.error instanceof WebsocketSecurityError)
  t.same(calls.map((c) => [c.url.split('?')[0], c.origin]), [['/chat', 'https://evil.example'], ['/chat', base], ['/chat', base]])
})

t.test('an onReject that throws changes nothing for the client', async (t) => {
  const lines: any[] = []
  const { base } = await buildApp(t, {
    fastify: { logger: { level: 'info', stream: { write: (s: string) => { lines.push(JSON.parse(s)) } } } },
    guard: { onReject () { throw new Error('audit down') } }
  })
  const client = new Client(base)
  const token = await client.token()
  refused(t, await client.connect('/chat', { origin: 'https://evil.example' }), 'WS_GUARD_ORIGIN_NOT_ALLOWED')
  t.ok(lines.some((l) => l.msg === 'websocket guard onReject threw' && l.err?.message === 'audit down'))
  await opens(t, await client.connect('/chat?token=' + token))
})

t.test('the rejection log line', async (t) => {
  t.test('at warn by default, with code, route and origin, never the token', async (t) => {
    const lines: any[] = []
    const raw: string[] = []
    const { base } = await buildApp(t, {
      fastify: { logger: { level: 'trace', stream: { write: (s: string) => { raw.push(s); lines.push(JSON.parse(s)) } } } }
    })
    const client = new Client(base)
    const token = await client.token()
    const token2 = await client.token()
    refused(t, await client.connect('/chat?token=' + token, { origin: 'https://evil.example' }), 'WS_GUARD_ORIGIN_NOT_ALLOWED', { secrets: [token] })
    refused(t, await client.connect('/chat', { origin: 'https://evil.example', protocols: ['websocket-guard', 'websocket-guard.' + token2] }), 'WS_GUARD_ORIGIN_NOT_ALLOWED', { secrets: [token2] })
    const wrong = fakeToken()
    refused(t, await client.connect('/chat?token=' + wrong), 'WS_GUARD_TOKEN_MISMATCH')
    await opens(t, await client.connect('/chat?token=' + token))
    await opens(t, await client.connect('/chat', { protocols: ['websocket-guard', 'websocket-guard.' + token2] }))
    refused(t, await client.connect('/chat?token=' + token), 'WS_GUARD_NO_TOKEN_STORED')

    const refusals = lines.filter((l) => l.msg === 'websocket guard refused the request')
    t.same(refusals.map((l) => [l.level, l.code, l.route, l.origin]), [
      [40, 'WS_GUARD_ORIGIN_NOT_ALLOWED', '/chat', 'https://evil.example'],
      [40, 'WS_GUARD_ORIGIN_NOT_ALLOWED', '/chat', 'https://evil.example'],
      [40, 'WS_GUARD_TOKEN_MISMATCH', '/chat', base],
      [40, 'WS_GUARD_NO_TOKEN_STORED', '/chat', base]
    ])
    t.ok(lines.some((l) => l.msg === 'incoming request'), 'the capture sees Fastify\'s own lines')
    const all = raw.join('')
    for (const secret of [token, token2, wrong]) t.notOk(all.includes(secret), 'no log line shows a token')
  })

  t.test('at logLevel', async (t) => {
    const lines: any[] = []
    const { base } = await buildApp(t, {
      fastify: { logger: { level: 'trace', stream: { write: (s: string) => { lines.push(JSON.parse(s)) } } } },
      guard: { logLevel: 'info' }
    })
    const client = new Client(base)
    refused(t, await client.connect('/chat', { origin: 'https://evil.example/' + 'x'.repeat(1000) }), 'WS_GUARD_ORIGIN_NOT_ALLOWED')
    const refusals = lines.filter((l) => l.msg === 'websocket guard refused the request')
    t.equal(refusals.length, 1)
    t.equal(refusals[0].level, 30)
    t.ok(refusals[0].origin.length <= 256, 'a hostile Origin is logged bounded')
  })

  t.test("logLevel 'silent' writes no line and still refuses", async (t) => {
    const lines: any[] = []
    const { base } = await buildApp(t, {
      fastify: { logger: { level: 'trace', stream: { write: (s: string) => { lines.push(JSON.parse(s)) } } } },
      guard: { logLevel: 'silent' }
    })
    const client = new Client(base)
    refused(t, await client.connect('/chat', { origin: 'https://evil.example' }), 'WS_GUARD_ORIGIN_NOT_ALLOWED')
    t.equal(lines.filter((l) => l.msg === 'websocket guard refused the request').length, 0)
    t.ok(lines.length > 0)
  })

  for (const logLevel of ['silent', 'trace'] as const) {
    t.test(`logLevel '${logLevel}' without a logger still refuses with 403`, async (t) => {
      const { base, rejections } = await buildApp(t, { guard: { logLevel } })
      const client = new Client(base)
      refused(t, await client.connect('/chat', { origin: 'https://evil.example' }), 'WS_GUARD_ORIGIN_NOT_ALLOWED')
      refused(t, await client.connect('/chat'), 'WS_GUARD_NO_TOKEN_PRESENTED')
      t.equal(rejections.length, 2)
    })
  }
})

t.test('a non-upgrade GET or HEAD to a guarded route is not checked, consumes nothing and never opens anything', async (t) => {
  const { base, opened, rejections } = await buildApp(t)
  const client = new Client(base)
  const token = await client.token()
  for (const method of ['GET', 'HEAD']) {
    for (const headers of [{ cookie: client.cookie }, { cookie: client.cookie, origin: 'https://evil.example' }, { cookie: client.cookie, origin: base }] as Array<Record<string, string>>) {
      const r = await rawRequest(base + '/chat?token=' + token, { method, headers })
      t.equal(r.status, 404, `${method} ${headers.origin ?? 'no origin'}: @fastify/websocket's 404 to plain HTTP`)
      t.notOk(JSON.stringify(r.body ?? '').includes(token))
    }
  }
  t.equal(opened.length, 0)
  t.equal(rejections.length, 0, 'nothing was refused: nothing was checked')
  await opens(t, await client.connect('/chat?token=' + token))
})

t.test('app.injectWS is guarded too', async (t) => {
  const { app, base, opened } = await buildApp(t, { guard: { origins: 'https://app.example.com' } })
  const client = new Client(base)
  const token = await client.token()
  await t.rejects(app.injectWS('/chat?token=' + token, { headers: { cookie: client.cookie } }), /403/)
  await t.rejects(app.injectWS('/chat?token=' + token, { headers: { cookie: client.cookie, origin: 'https://evil.example' } }), /403/)
  await t.rejects(app.injectWS('/chat', { headers: { cookie: client.cookie, origin: 'https://app.example.com' } }), /403/)
  const ws = await app.injectWS('/chat?token=' + token, { headers: { cookie: client.cookie, origin: 'https://app.example.com' } })
  t.same(opened, [{ websocketGuard: { origin: 'https://app.example.com', token }, protocol: '' }])
  ws.terminate()
  await t.rejects(app.injectWS('/chat?token=' + token, { headers: { cookie: client.cookie, origin: 'https://app.example.com' } }), /403/, 'replay refused')
  const token2 = await client.token()
  const ws2 = await app.injectWS('/chat', { headers: { cookie: client.cookie, origin: 'https://app.example.com', 'sec-websocket-protocol': 'websocket-guard, websocket-guard.' + token2 } })
  t.equal(opened[1]?.protocol, 'websocket-guard')
  ws2.terminate()
})

t.test('the guard runs before the route\'s own preValidation hooks', async (t) => {
  const seen: unknown[] = []
  const { base } = await buildApp(t, {
    setup (app) {
      app.get('/hooked', {
        websocket: true,
        guard: true,
        preValidation: async (request) => { seen.push(request.websocketGuard) }
      }, (socket) => { socket.send('hello') })
      app.get('/hooked-list', {
        websocket: true,
        guard: true,
        preValidation: [async (request) => { seen.push(request.websocketGuard) }]
      }, (socket) => { socket.send('hello') })
    }
  })
  const client = new Client(base)
  refused(t, await client.connect('/hooked', { origin: 'https://evil.example' }), 'WS_GUARD_ORIGIN_NOT_ALLOWED')
  refused(t, await client.connect('/hooked-list', { origin: 'https://evil.example' }), 'WS_GUARD_ORIGIN_NOT_ALLOWED')
  t.same(seen, [], 'route hooks never saw a refused upgrade')
  const token = await client.token()
  await opens(t, await client.connect('/hooked?token=' + token))
  const token2 = await client.token()
  await opens(t, await client.connect('/hooked-list?token=' + token2))
  t.same(seen, [{ origin: base, token }, { origin: base, token: token2 }])
})

t.test('a raw upgrade with two Origin headers is refused', async (t) => {
  const { base } = await buildApp(t, { guard: { origins: ['https://a.example', 'https://b.example'] } })
  const client = new Client(base)
  const token = await client.token()
  const { connect: netConnect } = await import('node:net')
  const url = new URL(base)
  const response = await new Promise<string>((resolve, reject) => {
    const socket = netConnect(Number(url.port), url.hostname, () => {
      socket.write([
        `GET /chat?token=${token} HTTP/1.1`,
        `Host: ${url.host}`,
        'Connection: Upgrade',
        'Upgrade: websocket',
        'Sec-WebSocket-Version: 13',
        'Sec-WebSocket-Key: ' + randomBytes(16).toString('base64'),
        'Origin: https://a.example',
        'Origin: https://b.example',
        `Cookie: ${client.cookie}`,
        '', ''
      ].join('\r\n'))
    })
    let data = ''
    socket.on('data', (chunk) => { data += chunk.toString() })
    socket.on('close', () => resolve(data))
    socket.on('error', reject)
  })
  t.match(response, /^HTTP\/1\.1 403/)
  t.match(response, /WS_GUARD_ORIGIN_NOT_ALLOWED/)
  await opens(t, await client.connect('/chat?token=' + token, { origin: 'https://b.example' }))
})

t.test('without a usable session on the request, a guarded route refuses with WS_GUARD_NO_SESSION', async (t) => {
  // @fastify/session only runs on its cookie path: elsewhere request.session is a plain {}
  const { base } = await buildApp(t, { session: { cookie: { secure: false, path: '/app' } } })
  const r = await connect(base.replace('http', 'ws') + '/chat?token=' + fakeToken(), { origin: base })
  refused(t, r, 'WS_GUARD_NO_SESSION', { statusCode: 500 })
  t.match(r.body.message, /cookie's path cover \/chat/)
})

t.test('a session plugin scoped away from the guarded route: refused, never opened', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(cookie)
  await app.register(session, { secret: SECRET, cookie: { secure: false } })
  await app.register(websocket)
  await app.register(websocketGuard)
  app.addHook('onRequest', async (request) => { (request as any).session = null })
  app.get('/chat', { websocket: true, guard: true }, (socket) => { socket.close() })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as { port: number }
  const r = await connect(`ws://127.0.0.1:${port}/chat?token=${fakeToken()}`, { origin: `http://127.0.0.1:${port}` })
  refused(t, r, 'WS_GUARD_NO_SESSION', { statusCode: 500 })
  const res = await rawRequest(`http://127.0.0.1:${port}/websocket-token`)
  t.equal(res.status, 500, 'the token route cannot issue without a session')
  t.equal(res.body.code, 'WS_GUARD_NO_SESSION')
  t.match(res.body.message, /no usable session/)
})
