// The diagnostics channels (API.md "Diagnostics channels"): whole flows with a subscriber on
// every channel (tokens issued by the route and by issueToken, accepts on each transport,
// every refusal code with its status, a replay), each message checked against what the client
// got, and every message searched for every token, fake token and session cookie involved;
// with nobody subscribed, nothing is built and nothing is published.
import t, { type Test } from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import cookie from '@fastify/cookie'
import session from '@fastify/session'
import websocket from '@fastify/websocket'
import { channel, subscribe, unsubscribe } from 'node:diagnostics_channel'
import { connect as netConnect } from 'node:net'
import websocketGuard, { memoryTokenStore, type FastifyWebsocketGuardOptions, type TokenStore } from '../lib/index'
import { publishClose } from '../lib/diagnostics'
import { buildApp, Client, close, connect, SECRET, type ConnectResult } from './helpers/app'
import { checkMessages, CHANNELS, FIELDS, KINDS, recordDiagnostics, type ChannelKind, type Messages } from './helpers/diagnostics'
import { fakeToken, sleep } from './helpers/util'

const ID = 'x-request-id'
let ids = 0
/** A fresh request id, sent as the `x-request-id` header that the apps here take as `request.id`. */
const nextId = (): string => `req-${++ids}`

/** The one message a flow published, on `kind`, and none on the other channels. */
function only (t: Test, got: Messages, kind: ChannelKind, what: string): any {
  for (const other of KINDS) {
    t.equal(got[other].length, other === kind ? 1 : 0, `${what}: ${other === kind ? 'one message' : 'nothing'} on :${other}`)
  }
  return got[kind][0]
}

/** The session cookie's value, a secret like the tokens. */
const cookieValue = (client: Client): string => client.cookie.split('=').slice(1).join('=')

t.test('issue, accept on each transport, replay and every 403: each message says what happened, none carries a token', async (t) => {
  const { app, base } = await buildApp(t, {
    fastify: { requestIdHeader: ID },
    setup (app) {
      app.get('/room/:id', { websocket: true }, (socket) => { socket.send('room') })
      app.get('/open', { websocket: true, guard: { token: false } }, (socket) => { socket.send('open') })
      app.get('/bare', { websocket: true, guard: { allowMissingOrigin: true } }, (socket) => { socket.send('bare') })
      app.get('/page', async (request) => await app.websocketGuard.issueToken(request, { path: '/chat' }))
      // a single-page app's fallback, which has no route pattern
      app.setNotFoundHandler(async (request) => await app.websocketGuard.issueToken(request))
    }
  })
  const rec = recordDiagnostics(t)
  const secrets: string[] = []
  const user = new Client(base)
  const sockets: ConnectResult[] = []
  t.teardown(async () => { await Promise.all(sockets.map(close)) })

  /** Issues a token through the token route, checking its :token message. */
  async function issue (query: string, path: string | null): Promise<string> {
    const id = nextId()
    let res: any
    const got = await rec.during(async () => { res = await user.getToken(query, { [ID]: id }) })
    t.equal(res.status, 200)
    secrets.push(res.body.token)
    t.same(only(t, got, 'token', `issue${query}`), { requestId: id, route: '/websocket-token', path, expiresAt: res.body.expiresAt }, `issue${query}: the message`)
    return res.body.token
  }

  /** An upgrade that opens, checking its :accept message. */
  async function accepted (path: string, route: string, transport: 'query' | 'protocol' | null, options: { protocols?: string[], origin?: string | undefined } = {}): Promise<void> {
    const id = nextId()
    let r = null as unknown as ConnectResult
    const got = await rec.during(async () => { r = await user.connect(path, { ...options, headers: { [ID]: id } }) })
    sockets.push(r)
    t.equal(r.opened, true, `${route} ${String(transport)}: opens`)
    const origin = 'origin' in options ? options.origin ?? null : base
    t.same(only(t, got, 'accept', `${route} ${String(transport)}`), { requestId: id, route, origin, transport }, `${route} ${String(transport)}: the message`)
  }

  /** A refused upgrade (or token request), checking its :reject message against the answer. */
  async function rejected (what: string, code: string, route: string, run: (headers: Record<string, string>) => Promise<{ status: number | null, body: any }>, origin: string | null = base): Promise<void> {
    const id = nextId()
    let r = null as unknown as { status: number | null, body: any }
    const got = await rec.during(async () => { r = await run({ [ID]: id }) })
    t.equal(r.body?.code, code, `${what}: answered ${code}`)
    t.same(only(t, got, 'reject', what), { requestId: id, route, origin, code, statusCode: r.status }, `${what}: the message`)
  }

  // tokens: unbound, bound, and from the app's own route through issueToken
  const first = await issue('', null)
  const bound = await issue('?path=/room/7', '/room/7')
  const id = nextId()
  let page: any
  const fromPage = await rec.during(async () => {
    const res = await fetch(base + '/page', { headers: { cookie: user.cookie, [ID]: id } })
    page = await res.json()
  })
  secrets.push(page.token)
  t.same(only(t, fromPage, 'token', 'issueToken'), { requestId: id, route: '/page', path: '/chat', expiresAt: page.expiresAt }, 'issueToken: the route it was called from')
  const fallbackId = nextId()
  let fallback: any
  const fromFallback = await rec.during(async () => {
    const res = await fetch(base + '/app/anything', { headers: { cookie: user.cookie, [ID]: fallbackId } })
    fallback = await res.json()
  })
  secrets.push(fallback.token)
  t.same(only(t, fromFallback, 'token', 'issueToken outside any route'), { requestId: fallbackId, route: null, path: null, expiresAt: fallback.expiresAt }, 'issueToken outside any route: route null')
  secrets.push(cookieValue(user))

  // accepts: each transport, a route pattern, a route without a token, a request without Origin
  await accepted('/chat?token=' + first, '/chat', 'query')
  await accepted('/room/7', '/room/:id', 'protocol', { protocols: ['websocket-guard', 'websocket-guard.' + bound] })
  await accepted('/chat', '/chat', 'protocol', { protocols: ['chat.v1', 'websocket-guard.' + page.token] })
  await accepted('/open', '/open', null)
  await accepted('/bare?token=' + await issue('', null), '/bare', 'query', { origin: undefined })

  // replay, on each transport (the session holds another token, so it is a mismatch)
  const live = await issue('', null)
  await rejected('replay in the query', 'WS_GUARD_TOKEN_MISMATCH', '/chat', async (headers) => await user.connect('/chat?token=' + first, { headers }))
  await rejected('replay as a subprotocol', 'WS_GUARD_TOKEN_MISMATCH', '/room/:id', async (headers) => await user.connect('/room/7', { headers, protocols: ['websocket-guard', 'websocket-guard.' + bound] }))

  // origins: refused at the upgrade (the live token in it stays unspent) and at the token route
  await rejected('foreign origin', 'WS_GUARD_ORIGIN_NOT_ALLOWED', '/chat', async (headers) => await user.connect('/chat?token=' + live, { headers, origin: 'https://evil.example' }), 'https://evil.example')
  const long = 'https://' + 'a'.repeat(300) + '.example'
  await rejected('an overlong origin, cut at 256', 'WS_GUARD_ORIGIN_NOT_ALLOWED', '/chat', async (headers) => await user.connect('/chat?token=' + live, { headers, origin: long }), long.slice(0, 256))
  await rejected('no Origin', 'WS_GUARD_ORIGIN_NOT_ALLOWED', '/chat', async (headers) => await user.connect('/chat?token=' + live, { headers, origin: undefined }), null)
  await rejected('token route, foreign origin', 'WS_GUARD_ORIGIN_NOT_ALLOWED', '/websocket-token', async (headers) => await user.getToken('', { ...headers, origin: 'https://evil.example' }), 'https://evil.example')
  await rejected('token route, cross-site fetch', 'WS_GUARD_ORIGIN_NOT_ALLOWED', '/websocket-token', async (headers) => await user.getToken('', { ...headers, 'sec-fetch-site': 'cross-site' }), null)

  // the token presented wrongly
  const fake = fakeToken()
  secrets.push(fake)
  await rejected('no token', 'WS_GUARD_NO_TOKEN_PRESENTED', '/chat', async (headers) => await user.connect('/chat', { headers }))
  await rejected('two tokens', 'WS_GUARD_NO_TOKEN_PRESENTED', '/chat', async (headers) => await user.connect('/chat?token=' + live, { headers, protocols: ['websocket-guard', 'websocket-guard.' + fake] }))
  await rejected('the token entry alone', 'WS_GUARD_NO_TOKEN_PRESENTED', '/chat', async (headers) => await user.connect('/chat', { headers, protocols: ['websocket-guard.' + live] }))
  await rejected('no session cookie', 'WS_GUARD_NO_TOKEN_STORED', '/chat', async (headers) => await user.connect('/chat?token=' + live, { headers, cookie: false }))
  await rejected('a fake token', 'WS_GUARD_TOKEN_MISMATCH', '/chat', async (headers) => await user.connect('/chat?token=' + fake, { headers }))
  await rejected('a fake token as a subprotocol', 'WS_GUARD_TOKEN_MISMATCH', '/room/:id', async (headers) => await user.connect('/room/8', { headers, protocols: ['websocket-guard', 'websocket-guard.' + fake] }))
  const elsewhere = await issue('?path=/room/9', '/room/9')
  await rejected('a token bound to another path', 'WS_GUARD_TOKEN_MISMATCH', '/chat', async (headers) => await user.connect('/chat?token=' + elsewhere, { headers }))
  const overlong = fake + 'x'.repeat(300)
  await rejected('an overlong token', 'WS_GUARD_TOKEN_MISMATCH', '/chat', async (headers) => await user.connect('/chat?token=' + overlong, { headers }))
  // a new session has none stored
  const stranger = new Client(base)
  await stranger.getToken()
  secrets.push(cookieValue(stranger))
  await rejected('a session without tokens', 'WS_GUARD_NO_TOKEN_STORED', '/chat', async (headers) => {
    stranger.cookie = ''
    return await stranger.connect('/chat?token=' + fake, { headers, cookie: true })
  })
  // what was refused consumed nothing: the live token still opens, once
  await accepted('/chat?token=' + live, '/chat', 'query')

  const count = checkMessages(t, rec.messages, secrets)
  t.equal(count, rec.messages.token.length + rec.messages.accept.length + rec.messages.reject.length, 'no guard close here')
  t.same(rec.messages.close, [])
  await app.close()
})

/** A TokenStore that is a memory store while `down` is false, and fails while it is true. */
function switchableStore (): TokenStore & { down: boolean } {
  const inner = memoryTokenStore()
  const store = {
    down: false,
    async issue (...args: Parameters<TokenStore['issue']>) {
      if (store.down) throw new Error('store down')
      return await inner.issue(...args)
    },
    async consume (...args: Parameters<TokenStore['consume']>) {
      if (store.down) throw new Error('store down')
      return await inner.consume(...args)
    },
    close () { inner.close() }
  }
  return store
}

t.test('an expired token and a store that fails (503): published with their codes, no token in them', async (t) => {
  const store = switchableStore()
  const { base } = await buildApp(t, { fastify: { requestIdHeader: ID }, guard: { tokenTTL: 100, store } })
  const rec = recordDiagnostics(t)
  const user = new Client(base)
  const expiring = await user.getToken()
  const next = await user.token()
  await sleep(Math.max(0, expiring.body.expiresAt - Date.now()) + 30)
  let id = nextId()
  const expired = await rec.during(async () => {
    const r = await user.connect('/chat?token=' + String(expiring.body.token), { headers: { [ID]: id } })
    t.equal(r.body.code, 'WS_GUARD_TOKEN_EXPIRED')
  })
  t.same(only(t, expired, 'reject', 'expired'), { requestId: id, route: '/chat', origin: base, code: 'WS_GUARD_TOKEN_EXPIRED', statusCode: 403 })

  store.down = true
  id = nextId()
  const atUpgrade = await rec.during(async () => {
    const r = await user.connect('/chat', { headers: { [ID]: id }, protocols: ['websocket-guard', 'websocket-guard.' + next] })
    t.equal(r.status, 503)
  })
  t.same(only(t, atUpgrade, 'reject', 'store down at the upgrade'), { requestId: id, route: '/chat', origin: base, code: 'WS_GUARD_STORE_UNAVAILABLE', statusCode: 503 })
  id = nextId()
  const atIssue = await rec.during(async () => {
    const r = await user.getToken('', { [ID]: id })
    t.equal(r.status, 503)
  })
  t.same(only(t, atIssue, 'reject', 'store down at the token route'), { requestId: id, route: '/websocket-token', origin: null, code: 'WS_GUARD_STORE_UNAVAILABLE', statusCode: 503 })
  checkMessages(t, rec.messages, [expiring.body.token, next, cookieValue(user)])
})

interface Wired { app: FastifyInstance, base: string }

/**
 * The guard in a child context: its routes, one declared before it (a missing `await`), and a
 * sibling context it cannot see, whose upgrades are refused before Fastify makes a request.
 */
async function wiredApp (t: Test, cookiePath: string, options: FastifyWebsocketGuardOptions = {}, setup?: (app: FastifyInstance) => void): Promise<Wired> {
  const app = Fastify({ requestIdHeader: ID })
  t.teardown(() => app.close())
  setup?.(app)
  await app.register(cookie)
  await app.register(session, { secret: SECRET, cookie: { secure: false, path: cookiePath } })
  await app.register(websocket)
  await app.register(async (guarded) => {
    guarded.register(websocketGuard, options) // no await: /early is declared before it
    guarded.get('/early', { websocket: true, guard: true }, (socket) => { socket.send('early') })
    await guarded.after()
    guarded.get('/chat', { websocket: true }, (socket) => { socket.send('chat') })
  })
  await app.register(async (sibling) => {
    sibling.get('/sibling/:room', { websocket: true }, (socket) => { socket.send('sibling') })
  })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as { port: number }
  return { app, base: `http://127.0.0.1:${port}` }
}

/** Writes one raw request and resolves with the whole answer. */
function rawExchange (port: number, request: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = netConnect(port, '127.0.0.1', () => { socket.write(request) })
    let data = ''
    socket.on('data', (chunk) => { data += chunk.toString() })
    socket.on('end', () => resolve(data))
    socket.on('error', reject)
  })
}

t.test('the 500s: no usable session, a route declared before the guard, an upgrade no request stands for', async (t) => {
  // the session cookie covers /app only: the token route and /chat have no usable session
  const { base } = await wiredApp(t, '/app')
  const rec = recordDiagnostics(t)
  const client = new Client(base)
  const fake = fakeToken()

  let id = nextId()
  const tokenRoute = await rec.during(async () => { t.equal((await client.getToken('', { [ID]: id })).status, 500) })
  t.same(only(t, tokenRoute, 'reject', 'token route without a session'), { requestId: id, route: '/websocket-token', origin: null, code: 'WS_GUARD_NO_SESSION', statusCode: 500 })

  id = nextId()
  const upgrade = await rec.during(async () => {
    const r = await client.connect('/chat?token=' + fake, { headers: { [ID]: id } })
    t.equal(r.body.code, 'WS_GUARD_NO_SESSION')
  })
  t.same(only(t, upgrade, 'reject', 'upgrade without a session'), { requestId: id, route: '/chat', origin: base, code: 'WS_GUARD_NO_SESSION', statusCode: 500 })

  id = nextId()
  const early = await rec.during(async () => {
    const r = await client.connect('/early?token=' + fake, { headers: { [ID]: id } })
    t.equal(r.body.code, 'WS_GUARD_ROUTE_NOT_GUARDED')
  })
  t.same(only(t, early, 'reject', 'route declared before the guard'), { requestId: id, route: '/early', origin: base, code: 'WS_GUARD_ROUTE_NOT_GUARDED', statusCode: 500 })

  // refused at handleUpgrade: no request id, the path for a route, and never the query
  const sibling = await rec.during(async () => {
    const r = await client.connect('/sibling/5?token=' + fake, { headers: { [ID]: nextId() } })
    t.equal(r.status, 500)
    t.equal(r.body.code, 'WS_GUARD_ROUTE_NOT_GUARDED')
  })
  t.same(only(t, sibling, 'reject', 'sibling context'), { requestId: null, route: '/sibling/5', origin: base, code: 'WS_GUARD_ROUTE_NOT_GUARDED', statusCode: 500 })
  const { port } = new URL(base)
  const hidden = fakeToken()
  const semicolon = await rec.during(async () => {
    const answer = await rawExchange(Number(port), `GET /sibling/6;token=${hidden} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`)
    t.match(answer, /^HTTP\/1\.1 500/)
  })
  t.same(only(t, semicolon, 'reject', 'a token after ;'), { requestId: null, route: '/sibling/6', origin: null, code: 'WS_GUARD_ROUTE_NOT_GUARDED', statusCode: 500 })
  checkMessages(t, rec.messages, [fake, hidden])
})

t.test('publishClose: the message API.md lists, for the socket-lifecycle code to call', async (t) => {
  const rec = recordDiagnostics(t)
  const openedAt = Date.now() - 1500
  publishClose('/room/:id', 4401, 'session-ended', openedAt)
  publishClose('/chat', 4408, 'lifetime', Date.now())
  publishClose('/chat', 4401, 'revalidation', Date.now() + 60_000)
  t.equal(rec.messages.close.length, 3)
  const [ended, lifetime, revalidated] = rec.messages.close
  t.same(Object.keys(ended).sort(), FIELDS.close)
  t.match(ended, { route: '/room/:id', code: 4401, reason: 'session-ended' })
  t.ok(ended.durationMs >= 1500 && ended.durationMs < 60_000, `durationMs counts from openedAt (${String(ended.durationMs)})`)
  t.match(lifetime, { route: '/chat', code: 4408, reason: 'lifetime' })
  t.same(revalidated, { route: '/chat', code: 4401, reason: 'revalidation', durationMs: 0 }, 'a clock stepped back gives 0, never a negative duration')
  checkMessages(t, rec.messages, [])
  rec.stop()
  publishClose('/chat', 4401, 'session-ended', openedAt)
  t.equal(rec.messages.close.length, 3, 'nothing once unsubscribed')
})

t.test('with nobody subscribed, no message is built and nothing is published', async (t) => {
  // every message that has a Fastify request reads request.id: count the reads
  let idReads = 0
  const { base } = await wiredApp(t, '/', {}, (app) => {
    app.addHook('onRequest', async (request) => {
      const id = request.id
      Object.defineProperty(request, 'id', { get () { idReads++; return id }, configurable: true })
    })
  })
  // every publish call, on each channel the plugin publishes on (the same objects: a channel
  // is one object per name)
  const published: Record<ChannelKind, number> = { token: 0, accept: 0, reject: 0, close: 0 }
  for (const kind of KINDS) {
    const ch = channel(CHANNELS[kind]) as unknown as { publish: (m: unknown) => void }
    const publish = ch.publish
    ch.publish = function (message) { published[kind]++; publish.call(this, message) }
    t.teardown(() => { delete (ch as { publish?: unknown }).publish })
  }

  /** Tokens, accepts (query and subprotocol), refusals (origin, route before the guard), an upgrade refused at handleUpgrade, a guard close. */
  async function flows (): Promise<void> {
    const user = new Client(base)
    const r1 = await user.connect('/chat?token=' + await user.token())
    const r2 = await user.connect('/chat', { protocols: ['websocket-guard', 'websocket-guard.' + await user.token()] })
    t.equal(r1.opened && r2.opened, true, 'opened')
    await Promise.all([close(r1), close(r2)])
    t.equal((await user.connect('/chat?token=' + fakeToken(), { origin: 'https://evil.example' })).status, 403)
    t.equal((await user.connect('/early')).status, 500)
    t.equal((await user.connect('/sibling/1')).status, 500)
    publishClose('/chat', 4401, 'session-ended', Date.now())
  }
  const none = { token: 0, accept: 0, reject: 0, close: 0 }

  await flows()
  t.same(published, none, 'nobody subscribed: nothing published')
  t.equal(idReads, 0, 'nobody subscribed: no message built')

  // the control: with a subscriber on each channel the same flows publish, so the counts can fail
  const listener = (): void => {}
  for (const kind of KINDS) subscribe(CHANNELS[kind], listener)
  await flows()
  for (const kind of KINDS) unsubscribe(CHANNELS[kind], listener)
  const each = { token: 2, accept: 2, reject: 3, close: 1 }
  t.same(published, each, 'subscribed: every flow published')
  t.equal(idReads, 6, 'subscribed: each message with a request read its id')

  await flows()
  t.same(published, each, 'unsubscribed again: nothing more published')
  t.equal(idReads, 6, 'unsubscribed again: no message built')
})

t.test('guard closes: session end, closeSession, lifetime; none for a client close or shutdown; no token in any', async (t) => {
  const recorder = recordDiagnostics(t)
  const { app, base } = await buildApp(t, {
    guard: { maxSocketLifetime: 300 },
    setup (app) {
      app.post('/logout', async (request) => { await request.session.destroy(); return { ok: true } })
      app.post('/close-mine', async (request) => { await app.websocketGuard.closeSession(request); return { ok: true } })
    }
  })
  const client = new Client(base)
  const tokens: string[] = []
  const open = async (): Promise<ConnectResult> => {
    const token = await client.token()
    tokens.push(token)
    const r = await client.connect('/chat?token=' + token)
    t.equal(r.opened, true)
    return r
  }
  const closed = (r: ConnectResult): Promise<number> => new Promise((resolve) => { r.socket?.once('close', (code) => resolve(code)) })

  // closeSession: 4401, reason session-ended
  const a = await open()
  const aClosed = closed(a)
  await fetch(base + '/close-mine', { method: 'POST', headers: { cookie: client.cookie, origin: base } })
  t.equal(await aClosed, 4401)
  // lifetime: 4408
  const b = await open()
  t.equal(await closed(b), 4408)
  // a client close publishes nothing
  const c = await open()
  await close(c)
  // logout: 4401
  const d = await open()
  const dClosed = closed(d)
  await fetch(base + '/logout', { method: 'POST', headers: { cookie: client.cookie, origin: base } })
  t.equal(await dClosed, 4401)
  // shutdown publishes nothing
  const client2 = new Client(base)
  const e = await client2.connect('/chat?token=' + await client2.token())
  t.equal(e.opened, true)
  await sleep(50)
  const before = recorder.messages.close.length
  await app.close()
  await sleep(50)
  t.equal(recorder.messages.close.length, before, 'shutdown publishes no close')

  const closes = recorder.messages.close
  t.same(closes.map((m) => [m.route, m.code, m.reason]), [
    ['/chat', 4401, 'session-ended'],
    ['/chat', 4408, 'lifetime'],
    ['/chat', 4401, 'session-ended']
  ], 'one message per guard close, with its code and reason')
  for (const m of closes) t.ok(m.durationMs >= 0 && m.durationMs < 60_000, 'durationMs counts from the opening')
  t.ok(closes[1].durationMs >= 250, 'the lifetime close came after maxSocketLifetime')
  checkMessages(t, recorder.messages, [...tokens, client.cookie])
})
