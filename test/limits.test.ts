/**
 * Bounds on what an attacker controls: the length of a presented token, how many query
 * parameters and subprotocol entries are looked at, header sizes, and the memory the token
 * route can be made to hold. Memory is shown flat by structure (sizes that stay put), never
 * by timing or heap thresholds; the heap figures are printed as comments for the record.
 */
import t, { type Test } from 'tap'
import { randomBytes } from 'node:crypto'
import { Agent, get as httpGet } from 'node:http'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import Fastify from 'fastify'
import cookie from '@fastify/cookie'
import session from '@fastify/session'
import secureSession from '@fastify/secure-session'
import websocket from '@fastify/websocket'
import { buildApp, Client, close, connect, rawRequest } from './helpers/app'
import { eventually, refused } from './helpers/util'
import websocketGuard, { memoryTokenStore, type MemoryTokenStore, type TokenStore } from '../lib/index'
import { MAX_PRESENTED_LENGTH, MAX_PROTOCOL_ENTRIES, MAX_QUERY_PARAMS } from '../lib/tokens'
import { isLocalId, localTokenCount } from '../lib/backends/session'
import { MAX_ORIGIN_LENGTH } from '../lib/origin'

/** A memory store that counts how often the guard asks it about a presented token. */
function countingStore (): TokenStore & { consumed: number, inner: MemoryTokenStore } {
  const inner = memoryTokenStore()
  const store = {
    consumed: 0,
    inner,
    issue: inner.issue.bind(inner),
    async consume (...args: Parameters<TokenStore['consume']>) {
      store.consumed++
      return inner.consume(...args)
    },
    close: () => inner.close()
  }
  return store
}

t.test('presented tokens: overlong ones are refused before any lookup', async (t) => {
  const store = countingStore()
  const { base } = await buildApp(t, { guard: { store } })
  const client = new Client(base)
  const token = await client.token()

  for (const length of [MAX_PRESENTED_LENGTH + 1, 8 * 1024]) {
    const before = store.consumed
    const r = await client.connect('/chat?token=' + 'A'.repeat(length))
    t.equal(r.body?.code, 'WS_GUARD_TOKEN_MISMATCH', `${length} characters`)
    t.equal(r.body?.message, 'Presented websocket token is too long')
    t.equal(store.consumed, before, 'the store was not asked')
  }
  const viaProtocol = await client.connect('/chat', { protocols: ['websocket-guard', 'websocket-guard.' + 'A'.repeat(MAX_PRESENTED_LENGTH + 1)] })
  t.equal(viaProtocol.body?.code, 'WS_GUARD_TOKEN_MISMATCH', 'the same bound on the subprotocol transport')
  const atBound = await client.connect('/chat?token=' + 'A'.repeat(MAX_PRESENTED_LENGTH))
  t.equal(atBound.body?.message, 'Presented websocket token does not match a stored token', 'at the bound: looked up')
  t.equal(store.consumed, 1)

  const r = await client.connect('/chat?token=' + token)
  t.equal(r.opened, true, 'none of it consumed the real token')
  await close(r)
})

t.test(`query parameters: at most ${MAX_QUERY_PARAMS} are looked at`, async (t) => {
  const store = countingStore()
  const { base } = await buildApp(t, { guard: { store } })
  const client = new Client(base)
  const token = await client.token()
  const params = (n: number): string => Array.from({ length: n }, (_, i) => `p${i}=1`).join('&')

  const tooMany = await client.connect(`/chat?token=${token}&${params(MAX_QUERY_PARAMS)}`)
  t.equal(tooMany.body?.code, 'WS_GUARD_NO_TOKEN_PRESENTED')
  t.equal(tooMany.body?.message, 'Too many query parameters')
  t.equal(store.consumed, 0)
  const r = await client.connect(`/chat?${params(MAX_QUERY_PARAMS - 1)}&token=${token}`)
  t.equal(r.opened, true, `${MAX_QUERY_PARAMS} parameters, the token last`)
  await close(r)
})

t.test(`subprotocol entries: at most ${MAX_PROTOCOL_ENTRIES} are looked at`, async (t) => {
  const store = countingStore()
  const { base } = await buildApp(t, { guard: { store } })
  const client = new Client(base)
  const token = await client.token()
  const others = (n: number): string[] => Array.from({ length: n }, (_, i) => `p${i}`)

  const tooMany = await client.connect('/chat', { protocols: [...others(MAX_PROTOCOL_ENTRIES), 'websocket-guard.' + token] })
  t.equal(tooMany.body?.code, 'WS_GUARD_NO_TOKEN_PRESENTED')
  t.equal(tooMany.body?.message, 'Too many subprotocol entries')
  t.equal(store.consumed, 0)
  const r = await client.connect('/chat', { protocols: [...others(MAX_PROTOCOL_ENTRIES - 1), 'websocket-guard.' + token] })
  t.equal(r.opened, true, `${MAX_PROTOCOL_ENTRIES} entries`)
  t.equal(r.protocol, 'p0')
  await close(r)
})

t.test('header sizes: Node bounds them; a long Origin is refused and logged cut short', async (t) => {
  const lines: any[] = []
  const { base } = await buildApp(t, {
    fastify: { logger: { level: 'warn', stream: { write (line: string) { lines.push(JSON.parse(line)) } } } }
  })
  const client = new Client(base)
  const token = await client.token()

  const long = 'https://' + 'a'.repeat(MAX_ORIGIN_LENGTH)
  const r = await client.connect('/chat?token=' + token, { origin: long })
  t.equal(r.body?.code, 'WS_GUARD_ORIGIN_NOT_ALLOWED')
  const refusal = lines.find((l) => l.code === 'WS_GUARD_ORIGIN_NOT_ALLOWED')
  t.equal(refusal?.origin, long.slice(0, 256), 'the logged origin is cut at 256 characters')

  // beyond Node's maxHeaderSize (16 KiB) the request never reaches Fastify
  const huge = await rawRequest(`${base}/websocket-token`, { headers: { cookie: client.cookie, 'x-pad': 'a'.repeat(17 * 1024) } })
  t.equal(huge.status, 431)
  const hugeProtocols = await client.connect('/chat', { protocols: Array.from({ length: 2000 }, (_, i) => `protocol-${i}`) })
  t.equal(hugeProtocols.status, 431, 'a 25 KB Sec-WebSocket-Protocol header: 431')

  const ok = await client.connect('/chat?token=' + token)
  t.equal(ok.opened, true, 'none of it consumed the token')
  await close(ok)
})

t.test('the token route: a bound path, at most 1024 characters', async (t) => {
  const { base } = await buildApp(t)
  const client = new Client(base)
  t.equal((await client.getToken('?path=/' + 'a'.repeat(1023))).status, 200)
  const long = await client.getToken('?path=/' + 'a'.repeat(1024))
  refused(t, long, 'WS_GUARD_BAD_REQUEST', { statusCode: 400 })
})

// ---------------------------------------------------------------------------------------
// Memory: a flood of token requests from one session, over real HTTP (app.inject itself
// retains about 9 KB per call, which would drown any figure).

// FLOOD=20000 for a longer run; the secure-session flood is a quarter (a decryption each)
const FLOOD = Number(process.env.FLOOD ?? 10_000)
const CONCURRENCY = 8
const MAX_TOKENS = 8

/** `gc()` without --expose-gc on the command line, so that heap figures mean something. */
function collector (): () => void {
  setFlagsFromString('--expose-gc')
  return runInNewContext('gc') as () => void
}

function heapMiB (gc: () => void): number {
  gc()
  return Math.round(process.memoryUsage().heapUsed / 1024 / 10.24) / 100
}

/** GET with one keep-alive agent and a fixed cookie; resolves with the status and body. */
function getter (base: string, agent: Agent): (path: string, cookieHeader: string) => Promise<{ status: number, body: any, cookie: string | undefined }> {
  return (path, cookieHeader) => new Promise((resolve, reject) => {
    httpGet(`${base}${path}`, { agent, headers: cookieHeader === '' ? {} : { cookie: cookieHeader } }, (res) => {
      let data = ''
      res.setEncoding('utf8')
      res.on('data', (chunk) => { data += chunk })
      res.on('end', () => resolve({
        status: res.statusCode ?? 0,
        body: data === '' ? null : JSON.parse(data),
        cookie: res.headers['set-cookie']?.map((c) => c.split(';')[0]).join('; ')
      }))
    }).on('error', reject)
  })
}

/**
 * FLOOD token requests with one session's cookie, CONCURRENCY at a time, checking `sizes()`
 * every 1000; then MAX_TOKENS + 1 more, one by one: the first of these must be evicted.
 */
async function flood (t: Test, base: string, requests: number, sizes: () => Record<string, number>, expected: Record<string, number>): Promise<void> {
  const gc = collector()
  const agent = new Agent({ keepAlive: true, maxSockets: CONCURRENCY })
  t.teardown(() => agent.destroy())
  const get = getter(base, agent)
  const first = await get('/websocket-token', '')
  const cookieHeader = first.cookie as string
  const heap: number[] = [heapMiB(gc)]
  const samples: string[] = []
  let sent = 1
  const worker = async (): Promise<void> => {
    while (sent < requests) {
      const n = ++sent
      const res = await get('/websocket-token', cookieHeader)
      if (res.status !== 200) throw new Error(`token route answered ${res.status}`)
      if (n % 1000 === 0) samples.push(JSON.stringify(sizes()))
      if (n % (requests / 4) === 0) heap.push(heapMiB(gc))
    }
  }
  await Promise.all(Array.from({ length: CONCURRENCY }, worker))
  t.equal(samples.length, Math.floor(requests / 1000), 'sampled every 1000 requests')
  t.same(new Set(samples), new Set([JSON.stringify(expected)]), `every 1000 requests of ${requests}: ${JSON.stringify(expected)}`)
  t.comment(`heapUsed after gc, MiB, at 0/25/50/75/100 % of ${requests} requests: ${heap.join(' / ')}`)

  const last: string[] = []
  for (let i = 0; i <= MAX_TOKENS; i++) last.push((await get('/websocket-token', cookieHeader)).body.token)
  const ws = base.replace('http', 'ws')
  const oldest = await connect(`${ws}/chat?token=${last[0] as string}`, { origin: base, headers: { cookie: cookieHeader } })
  t.equal(oldest.body?.code, 'WS_GUARD_TOKEN_MISMATCH', `of the last ${MAX_TOKENS + 1} tokens issued, the first was evicted`)
  const newest = await connect(`${ws}/chat?token=${last[MAX_TOKENS] as string}`, { origin: base, headers: { cookie: cookieHeader } })
  t.equal(newest.opened, true, 'the newest opens')
  await close(newest)
}

t.test('a flood of token requests from one session keeps memory flat', async (t) => {
  t.test(`@fastify/session, ${FLOOD} requests: one session, its token list at maxTokens`, async (t) => {
    const sessions = new Map<string, any>()
    const { base } = await buildApp(t, { session: { store: new (session.MemoryStore as any)(sessions) } })
    const sizes = (): Record<string, number> => {
      // beside the MemoryStore the session keeps only the id of its tokens
      const [stored] = [...sessions.values()]
      const id = stored?.websocket_token
      return { sessions: sessions.size, tokens: isLocalId(id) ? localTokenCount(id) : -1 }
    }
    await flood(t, base, FLOOD, sizes, { sessions: 1, tokens: MAX_TOKENS })
  })

  t.test(`@fastify/secure-session with the in-memory store, ${FLOOD / 4} requests: one id`, async (t) => {
    const store = memoryTokenStore()
    const app = Fastify()
    t.teardown(() => app.close())
    await app.register(cookie)
    await app.register(secureSession, { key: randomBytes(32), cookie: { path: '/', secure: false } })
    await app.register(websocket)
    await app.register(websocketGuard, { sessionPlugin: '@fastify/secure-session', store })
    app.get('/chat', { websocket: true, guard: true }, (socket) => { socket.send('hello') })
    await app.listen({ port: 0, host: '127.0.0.1' })
    await flood(t, `http://127.0.0.1:${(app.server.address() as { port: number }).port}`, FLOOD / 4, () => ({ ids: store.size }), { ids: 1 })
  })
})

t.test("abandoned sessions' tokens expire and are swept from the in-memory store", async (t) => {
  const store = memoryTokenStore({ sweepInterval: 50 })
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(cookie)
  await app.register(secureSession, { key: randomBytes(32), cookie: { path: '/', secure: false } })
  await app.register(websocket)
  await app.register(websocketGuard, { sessionPlugin: '@fastify/secure-session', store, tokenTTL: 200 })
  await app.ready()
  // every request without a cookie is a new session that never comes back
  const statuses = new Set<number>()
  for (let i = 0; i < 500; i++) statuses.add((await app.inject('/websocket-token')).statusCode)
  t.same([...statuses], [200])
  t.ok(store.size > 0, `${store.size} ids held right after`)
  await eventually(t, 'the flood swept', () => store.size === 0, 10_000)
  t.equal(store.size, 0, 'all swept once expired')
})

t.test('the in-memory store holds at most maxIds ids: a cookieless flood evicts the oldest, not memory', async (t) => {
  t.throws(() => memoryTokenStore({ maxIds: 0 }), /maxIds must be a positive integer/)
  t.throws(() => memoryTokenStore({ maxIds: 1.5 }), /maxIds must be a positive integer/)
  t.throws(() => memoryTokenStore({ maxIds: '10' as unknown as number }), /maxIds must be a positive integer/)
  const store = memoryTokenStore({ maxIds: 3 })
  t.teardown(() => store.close())
  const record = (hash: string) => ({ hash, expiresAt: Date.now() + 60_000, path: null })
  await store.issue('first', record('aGFzaDE'), 8)
  await store.issue('second', record('aGFzaDI'), 8)
  await store.issue('third', record('aGFzaDM'), 8)
  // another token for an id already held evicts nobody
  await store.issue('first', record('aGFzaDQ'), 8)
  t.equal(store.size, 3)
  await store.issue('fourth', record('aGFzaDU'), 8)
  t.equal(store.size, 3, 'still three ids')
  t.equal(await store.consume('first', 'aGFzaDE', '/chat', Date.now()), 'none-stored', 'the oldest id was dropped')
  t.equal(await store.consume('second', 'aGFzaDI', '/chat', Date.now()), 'consumed')
  t.equal(await store.consume('fourth', 'aGFzaDU', '/chat', Date.now()), 'consumed')
})

t.test('@fastify/session without a cookie: each request is a session of its own, each with one token', async (t) => {
  // The token route adds one token to a session that @fastify/session creates for any cookieless
  // request anyway: bounding the number of sessions is the session store's job (expiry) and the
  // rate limiter's (examples/rate-limit.js).
  const sessions = new Map<string, any>()
  const { app } = await buildApp(t, { session: { store: new (session.MemoryStore as any)(sessions) } })
  for (let i = 0; i < 100; i++) await app.inject('/websocket-token')
  t.equal(sessions.size, 100)
  t.ok([...sessions.values()].every((s) => isLocalId(s.websocket_token) && localTokenCount(s.websocket_token) === 1))
})

