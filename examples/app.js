'use strict'
/*
 * The demo that `npm start` runs (after `npm run build`): two servers in one process.
 *
 * - the chat, http://127.0.0.1:3000/ : a Fastify app with in-memory sessions whose WebSocket
 *   route `/chat` is protected by fastify-websocket-guard; its page connects through
 *   `GuardedWebSocket` from `fastify-websocket-guard/client` (dist/client.mjs, served to the
 *   page as /client.js). "Log out" destroys the session, and the guard closes every socket of
 *   that session (every tab) with 4401; "Log in again" starts a fresh session.
 * - the attacker, http://127.0.0.1:3001/ : another origin (same host, another port, so the
 *   browser sends it the chat's session cookie, as it would to a sibling subdomain) whose page
 *   tries to hijack the chat's socket and shows each attempt refused, with the guard's code.
 *
 * A page is never told why its upgrade failed (a refused WebSocket is just code 1006, a
 * refused cross-origin fetch a TypeError), so the demo narrates: the chat's `onReject` hands
 * each refusal of an attacker's attempt (code, route, origin; never a URL or a token) to an
 * event stream that the attacker's own server serves to its page. That channel exists only in
 * this demo; a real attacker learns nothing from a refusal.
 *
 * `startDemo()` is what test/browser.test.ts drives, on ports chosen by the system.
 * Environment: PORT (default 3000), ATTACKER_PORT (default PORT + 1), SESSION_SECRET.
 */
const { randomBytes } = require('node:crypto')
const { readFile } = require('node:fs/promises')
const { join } = require('node:path')
const Fastify = require('fastify')
const cookie = require('@fastify/cookie')
const session = require('@fastify/session')
const websocket = require('@fastify/websocket')
const { WebSocket } = require('ws')

const HOST = '127.0.0.1'
const MAX_MESSAGE_LENGTH = 500
/** the attacker page tags each attempt's URL with `?attempt=<id>`, to match the guard's report */
const ATTEMPT_ID = /^[A-Za-z0-9_-]{1,40}$/
const TOKEN_SHAPE = /^[A-Za-z0-9_-]{43}$/
/** open event streams at once: the demo has one attacker page, maybe a few tabs of it */
const MAX_STREAMS = 16
const REPLAY_TIMEOUT = 5000

/** A GET route that answers one file of the demo. */
function serveFile (app, url, path, type) {
  app.get(url, async (_request, reply) => {
    reply.type(type).header('cache-control', 'no-store')
    return readFile(path)
  })
}

function listenUrl (app) {
  const { port } = app.server.address()
  return `http://${HOST}:${port}`
}

/** The `attempt` tag of a URL that the guard has already redacted (`onReject`'s `details.url`). */
function attemptOf (url) {
  const query = url.indexOf('?')
  if (query === -1) return null
  const attempt = new URLSearchParams(url.slice(query + 1)).get('attempt')
  return attempt !== null && ATTEMPT_ID.test(attempt) ? attempt : null
}

/**
 * What the attacker's page is told, over its event stream: each refusal of one of its
 * attempts, and the state of the leaked token (whether there is one, whether the victim has
 * used it), never the token itself.
 */
function createFeed () {
  const streams = new Set()
  const loot = { token: null, used: false, version: 0 }

  function publish (event, data) {
    const frame = `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`
    for (const stream of streams) stream.write(frame)
  }
  function lootState () {
    return { leaked: loot.token !== null, used: loot.used, version: loot.version }
  }

  return {
    streams,
    loot,
    lootState,
    /** the chat's `onReject`: only attempts the attacker page tagged, from `details.url` (redacted), never `request.url` */
    refusal (error, request, details) {
      const attempt = attemptOf(details.url)
      if (attempt === null) return
      const origin = request.headers.origin
      publish('refusal', {
        attempt,
        route: request.routeOptions.url ?? null,
        statusCode: error.statusCode,
        code: error.code,
        origin: typeof origin === 'string' ? origin.slice(0, 100) : null
      })
    },
    leaked (token) {
      loot.token = token
      loot.used = false
      loot.version++
      publish('loot', lootState())
    },
    used () {
      if (loot.token === null || loot.used) return
      loot.used = true
      loot.version++
      publish('loot', lootState())
    }
  }
}

/** Only the chat's own pages may log in or out (a cross-site form could otherwise do it). */
async function sameOriginOnly (request, reply) {
  if (request.headers.origin !== `${request.protocol}://${request.host}`) {
    return reply.code(403).send({ statusCode: 403, code: 'DEMO_CROSS_ORIGIN', error: 'Forbidden', message: 'only the chat\'s own pages may do this' })
  }
}

/** The token route's authentication (`tokenRouteOptions.preHandler`): no user, no token. */
async function loggedInOnly (request, reply) {
  if (request.session.get('name') === undefined) {
    return reply.code(401).send({ statusCode: 401, code: 'DEMO_LOGGED_OUT', error: 'Unauthorized', message: 'log in first' })
  }
}

/** The chat: sessions, log in and out, the guard, a guarded chat room, and an unguarded one to compare. */
async function startChat (options, config, feed) {
  const app = Fastify({ logger: options.logger })
  await app.register(cookie)
  await app.register(session, {
    secret: options.sessionSecret,
    // plain http for the demo; in production keep @fastify/session's default (secure)
    cookie: { secure: false }
  })
  await app.register(websocket)
  await app.register(options.plugin, {
    // no `origins`: same-origin, so only pages of http://127.0.0.1:PORT may connect
    tokenRouteOptions: { preHandler: loggedInOnly },
    ...options.guard,
    onReject (error, request, details) {
      feed.refusal(error, request, details)
      return options.onReject?.(error, request, details)
    }
  })
  if (options.onRequest !== undefined) {
    const observe = options.onRequest
    app.addHook('onRequest', async (request) => { observe(request) })
  }

  app.post('/login', { preHandler: sameOriginOnly }, async (request) => {
    if (request.session.get('name') === undefined) {
      // a new session id at each login, never one chosen before it
      await request.session.regenerate()
      request.session.set('name', 'guest-' + randomBytes(2).toString('hex'))
    }
    return { name: request.session.get('name') }
  })
  app.post('/logout', { preHandler: sameOriginOnly }, async (request, reply) => {
    // the guard closes every socket of this session, in every tab, with 4401 'session ended'
    await request.session.destroy()
    reply.clearCookie('sessionId', { path: '/' })
    return { ok: true }
  })

  const members = new Set()
  function broadcast (message) {
    const data = JSON.stringify(message)
    for (const member of members) member.send(data)
  }

  app.get('/chat', { websocket: true, guard: true }, (socket, request) => {
    const name = request.session.get('name')
    members.add(socket)
    options.onConnect?.({ url: request.url, protocol: socket.protocol, websocketGuard: request.websocketGuard, name, socket })
    socket.send(JSON.stringify({ type: 'welcome', name }))
    broadcast({ type: 'joined', name })
    socket.on('message', (data) => {
      const text = data.toString().slice(0, MAX_MESSAGE_LENGTH)
      broadcast({ type: 'message', name, text })
    })
    socket.on('close', () => { members.delete(socket) })
  })

  // What the attacker would get without the guard: the session cookie rides along, so this
  // socket opens as the victim. Only here to show that the guard, not the browser, stops it.
  app.get('/unguarded', { websocket: true, guard: false }, (socket, request) => {
    socket.send(JSON.stringify({ type: 'welcome', name: request.session.get('name') ?? null }))
    socket.close()
  })

  serveFile(app, '/', join(__dirname, 'public', 'index.html'), 'text/html; charset=utf-8')
  serveFile(app, '/chat.js', join(__dirname, 'public', 'chat.js'), 'text/javascript; charset=utf-8')
  serveFile(app, '/client.js', options.clientFile, 'text/javascript; charset=utf-8')
  app.get('/demo.json', async () => ({ attacker: config.attacker }))

  await app.listen({ port: options.port, host: HOST })
  return app
}

/**
 * A replay from the attacker's server: a non-browser client, so it sets any `Origin` it likes
 * (the chat's own) and the origin check passes; only the token can stop it. It sends no
 * cookie: the browser hands this server the chat's cookie only because the demo puts both on
 * one host, which a real attacker's site would not share.
 */
function replay (victim, token, attempt) {
  const url = `ws://${new URL(victim).host}/chat?attempt=${attempt}`
  return new Promise((resolve) => {
    const socket = new WebSocket(url, ['websocket-guard', 'websocket-guard.' + token], { origin: victim, handshakeTimeout: REPLAY_TIMEOUT })
    socket.on('unexpected-response', (_request, response) => {
      response.resume()
      socket.terminate()
      resolve({ outcome: 'refused', detail: `HTTP ${response.statusCode}: no socket` })
    })
    socket.on('open', () => {
      socket.close()
      resolve({ outcome: 'opened', detail: 'the replayed token opened a socket' })
    })
    socket.on('error', (err) => { resolve({ outcome: 'refused', detail: err.message }) })
  })
}

/** The attacker's site: its page, where a leaked token ends up, and the demo's event stream. */
async function startAttacker (options, config, feed) {
  const app = Fastify({ logger: options.logger })

  serveFile(app, '/', join(__dirname, 'attacker', 'index.html'), 'text/html; charset=utf-8')
  serveFile(app, '/attacker.js', join(__dirname, 'attacker', 'attacker.js'), 'text/javascript; charset=utf-8')
  app.get('/demo.json', async () => ({ victim: config.victim }))
  // the chat page's "leak a token" button posts here (a cross-origin no-cors POST)
  app.post('/leak', { bodyLimit: 1024 }, async (request, reply) => {
    feed.leaked(typeof request.body === 'string' && TOKEN_SHAPE.test(request.body) ? request.body : null)
    reply.code(204)
  })
  // and its "use the leaked token myself" button says here that it did
  app.post('/leak/used', { bodyLimit: 1024 }, async (_request, reply) => {
    feed.used()
    reply.code(204)
  })
  app.get('/loot', async (_request, reply) => {
    reply.header('cache-control', 'no-store')
    return { token: feed.loot.token }
  })
  let replaying = false
  app.post('/replay', { bodyLimit: 1024 }, async (request, reply) => {
    const attempt = request.body?.attempt
    if (typeof attempt !== 'string' || !ATTEMPT_ID.test(attempt)) {
      reply.code(400)
      return { outcome: 'skipped', detail: 'bad attempt id' }
    }
    if (feed.loot.token === null) return { outcome: 'skipped', detail: 'no leaked token yet' }
    // one at a time: whoever calls this route makes this server open a connection
    if (replaying) {
      reply.code(409)
      return { outcome: 'skipped', detail: 'a replay is under way' }
    }
    replaying = true
    try {
      return await replay(config.victim, feed.loot.token, attempt)
    } finally {
      replaying = false
    }
  })

  app.get('/events', (request, reply) => {
    if (feed.streams.size >= MAX_STREAMS) {
      reply.code(503).send({ statusCode: 503, code: 'DEMO_TOO_MANY_STREAMS', error: 'Service Unavailable', message: 'too many event streams' })
      return
    }
    reply.hijack()
    const stream = reply.raw
    stream.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', 'x-content-type-options': 'nosniff' })
    stream.write(`event: loot\ndata: ${JSON.stringify(feed.lootState())}\n\n`)
    feed.streams.add(stream)
    request.raw.once('close', () => { feed.streams.delete(stream) })
  })
  // an open stream would hold app.close() until the page goes away
  app.addHook('preClose', async () => {
    for (const stream of feed.streams) stream.end()
    feed.streams.clear()
  })

  await app.listen({ port: options.attackerPort, host: HOST })
  return app
}

/**
 * Starts the chat and the attacker's site. Options: `port` and `attackerPort` (0 picks free
 * ones), `plugin` (default: this package, built), `clientFile` (default: dist/client.mjs),
 * `sessionSecret`, `logger`, `guard` (more plugin options), `onReject` (the plugin's),
 * `onConnect({ url, protocol, websocketGuard, name, socket })` (each opened chat socket),
 * `onRequest(request)` (each request the chat receives, upgrades included, from its
 * `onRequest` hook).
 */
async function startDemo (options = {}) {
  const resolved = {
    port: 0,
    attackerPort: 0,
    plugin: options.plugin ?? require('..'),
    clientFile: join(__dirname, '..', 'dist', 'client.mjs'),
    sessionSecret: randomBytes(32).toString('base64url'),
    logger: false,
    ...options
  }
  const config = { victim: null, attacker: null }
  const feed = createFeed()
  const chat = await startChat(resolved, config, feed)
  let attacker
  try {
    attacker = await startAttacker(resolved, config, feed)
  } catch (err) {
    await chat.close()
    throw err
  }
  config.victim = listenUrl(chat)
  config.attacker = listenUrl(attacker)
  return {
    chat,
    attacker,
    chatUrl: config.victim,
    attackerUrl: config.attacker,
    async close () {
      await Promise.all([chat.close(), attacker.close()])
    }
  }
}

module.exports = { startDemo }

if (require.main === module) {
  const port = Number(process.env.PORT ?? 3000)
  const attackerPort = Number(process.env.ATTACKER_PORT ?? (port === 0 ? 0 : port + 1))
  startDemo({
    port,
    attackerPort,
    sessionSecret: process.env.SESSION_SECRET ?? randomBytes(32).toString('base64url'),
    // the guard logs each refusal at 'warn': watch them here while the attacker page runs
    logger: { level: 'warn' }
  }).then((demo) => {
    console.log(`chat (the victim):  ${demo.chatUrl}/`)
    console.log(`attacker:           ${demo.attackerUrl}/`)
    console.log('open the chat (in two tabs, to see "Log out" close both), then the attacker page, in the same browser; Ctrl-C stops both')
    for (const signal of ['SIGINT', 'SIGTERM']) {
      process.once(signal, () => { demo.close().catch((err) => { console.error(err); process.exitCode = 1 }) })
    }
  }, (err) => {
    console.error(err)
    process.exitCode = 1
  })
}
