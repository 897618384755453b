'use strict'
// The memory figures, in a child run with --expose-gc; heap figures are taken after two
// full collections.
//  a. bytes per outstanding token in a session (what the session backend adds to it);
//  b. bytes per token in the in-memory TokenStore (the default with @fastify/secure-session):
//     its id and entry, since the cookie session itself costs the server nothing;
//  c. one session flooded with 50,000 token requests (the guard's app, @fastify/session,
//     injected requests) keeps at most maxTokens;
//  d. 100,000 sessions with tokens in the in-memory store, then expiry: memory returns.
const { createHash, randomBytes } = require('node:crypto')
const { setTimeout: sleep } = require('node:timers/promises')
const Fastify = require('fastify')
const cookie = require('@fastify/cookie')
const session = require('@fastify/session')
const { MemoryStore } = require('@fastify/session')
const websocket = require('@fastify/websocket')
const { dirname, join } = require('node:path')
const { loadPackage, packageEntry, serve } = require('./common')

const SECRET = 'a-bench-secret-with-at-least-32-characters'
const SESSION_KEY = 'websocket_token'

// after the last requests' deferred work has let go of them (that takes a few hundred ms
// for injected requests): collect until two readings agree
async function heap () {
  let last = Infinity
  for (let i = 0; i < 12; i++) {
    await sleep(250)
    global.gc()
    global.gc()
    const used = process.memoryUsage().heapUsed
    if (Math.abs(used - last) < 64 * 1024) return used
    last = used
  }
  return last
}

async function sessionApp (plugin, sessions) {
  const app = Fastify({ logger: false })
  await app.register(cookie)
  await app.register(session, { secret: SECRET, cookie: { secure: false }, store: new MemoryStore(sessions) })
  await app.register(websocket)
  await app.register(plugin, { origins: 'http://bench.example' })
  // same path length as /websocket-token: a stored session keeps its last request alive
  app.get('/websocket-touch', async (request) => {
    request.session.set('seen', 1)
    return 'ok'
  })
  await app.ready()
  return app
}

function cookieOf (res) {
  const header = res.headers['set-cookie']
  return (Array.isArray(header) ? header : [header]).map((c) => c.split(';')[0]).join('; ')
}

async function get (app, url, cookieHeader) {
  const res = await app.inject({ method: 'GET', url, headers: cookieHeader === undefined ? {} : { cookie: cookieHeader } })
  if (res.statusCode !== 200) throw new Error(`GET ${url} answered ${res.statusCode}: ${res.body}`)
  return res
}

// A session as @fastify/session keeps its data: own properties. The slot for the guard's key
// is the session's own cost (any value kept there needs it); the token is what it holds.
class Session {
  constructor () {
    this.user = 1
    this[SESSION_KEY] = undefined
  }
}

/**
 * a. tokens in the session: what the guard's session backend adds to a session, through the
 * function it issues with (issueWebsocketToken), on `n` sessions at once.
 */
async function inSession (mod, n) {
  const first = []
  for (let i = 0; i < n; i++) first.push(new Session())
  const h0 = await heap()
  for (let i = 0; i < n; i++) mod.issueWebsocketToken(first[i])
  const h1 = await heap()
  const next = []
  for (let i = 0; i < n; i++) {
    next.push(new Session())
    mod.issueWebsocketToken(next[i])
  }
  const h2 = await heap()
  for (let i = 0; i < n; i++) mod.issueWebsocketToken(next[i])
  const h3 = await heap()
  // used after the last reading, so that none of them can be collected before it
  const stored = first[0][SESSION_KEY]
  if (stored.length !== 1 || next[n - 1][SESSION_KEY].length !== 2) throw new Error('unexpected session contents')
  const serialised = JSON.stringify(stored).length / stored.length
  return { first: (h1 - h0) / n, next: (h3 - h2) / n, serialised }
}

/** c. one real session flooded through the token route, for at most `seconds`. */
async function flooded (plugin, flood, seconds) {
  const sessions = new Map()
  const app = await sessionApp(plugin, sessions)
  try {
    const one = cookieOf(await get(app, '/websocket-touch'))
    // beside the default MemoryStore the session holds only the id of its tokens
    const { isLocalId, localTokenCount } = require(join(dirname(packageEntry()), 'lib', 'backends', 'session.js'))
    const stored = () => {
      const value = [...sessions.values()][0].get(SESSION_KEY)
      return isLocalId(value) ? { length: localTokenCount(value) } : value
    }
    const f0 = await heap()
    const deadline = Date.now() + seconds * 1000
    let kept = 0
    let sent = 0
    while (sent < flood && Date.now() < deadline) {
      for (let i = 0; i < 1000 && sent < flood; i++, sent++) await get(app, '/websocket-token', one)
      kept = Math.max(kept, stored().length)
    }
    if (sessions.size !== 1) throw new Error(`the flood made ${sessions.size} sessions, expected 1`)
    const f1 = await heap()
    return { sent, kept, growth: f1 - f0 }
  } finally {
    await app.close()
  }
}

function fakeRecord (i, expiresAt) {
  return { hash: createHash('sha256').update(String(i)).digest('base64url'), expiresAt, path: null }
}

/** b. and d.: the in-memory store, `n` ids with two tokens each, then their expiry. */
async function inMemoryStore (memoryTokenStore, n, flood) {
  // the tokens must outlive their own issuing, however slow the machine is today
  const probe = memoryTokenStore()
  const t = Date.now()
  for (let i = 0; i < 2000; i++) await probe.issue(randomBytes(16).toString('base64url'), fakeRecord(i, t + 60_000), 8)
  probe.close()
  const ttl = Math.ceil((Date.now() - t) / 2000 * 2 * n * 2) + 4000
  const store = memoryTokenStore({ sweepInterval: 250 })
  try {
    // ids as the guard makes them (22 characters), made first: they are the sessions' handles
    const ids = []
    for (let i = 0; i < n; i++) ids.push('')
    const hIds = await heap()
    for (let i = 0; i < n; i++) ids[i] = randomBytes(16).toString('base64url')
    const h0 = await heap()
    const idBytes = (h0 - hIds) / n
    const expiresAt = Date.now() + ttl
    for (let i = 0; i < n; i++) await store.issue(ids[i], fakeRecord(i, expiresAt), 8)
    const h1 = await heap()
    for (let i = 0; i < n; i++) await store.issue(ids[i], fakeRecord(n + i, expiresAt), 8)
    const h2 = await heap()
    if (store.size !== n) throw new Error(`store holds ${store.size} ids, expected ${n}`)
    const issuedIn = Date.now() - (expiresAt - ttl)
    if (issuedIn >= ttl) throw new Error(`issuing took ${issuedIn} ms, longer than the TTL`)
    ids.fill(undefined)
    const deadline = expiresAt + 5000
    while (store.size > 0 && Date.now() < deadline) await sleep(100)
    const h3 = await heap()
    const held = h2 - h0 + n * idBytes
    const left = h3 - h0 + n * idBytes

    // c. one id, `flood` issues: only the newest maxTokens stay consumable
    const far = Date.now() + 600_000
    for (let i = 0; i < flood; i++) await store.issue('flooded', fakeRecord(`f${i}`, far), 8)
    let kept = 0
    for (let i = flood - 16; i < flood; i++) {
      if (await store.consume('flooded', fakeRecord(`f${i}`, far).hash, '/chat', Date.now()) === 'consumed') kept++
    }
    return { first: (h1 - h0) / n, next: (h2 - h1) / n, idBytes, held, left, emptied: store.size === 0, kept }
  } finally {
    store.close()
  }
}

// raw figures; bench/figures.js turns them into rows
serve({
  async run ({ quick }) {
    const { plugin, mod } = loadPackage()
    const flood = quick ? 2_000 : 50_000
    const many = quick ? 10_000 : 100_000
    const session = await inSession(mod, 20_000)
    const floodedSession = await flooded(plugin, flood, quick ? 10 : 30)
    const store = await inMemoryStore(mod.memoryTokenStore, many, flood)
    return { flood, many, session, floodedSession, store }
  }
})
