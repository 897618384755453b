'use strict'
/*
 * The demo that `npm start` runs (after `npm run build`): two servers in one process.
 *
 * - the chat, http://127.0.0.1:3000/ : a Fastify app with in-memory sessions whose WebSocket
 *   route `/chat` is protected by fastify-websocket-guard; its page connects through
 *   `fastify-websocket-guard/client` (dist/client.mjs, served to the page as /client.js);
 * - the attacker, http://127.0.0.1:3001/ : another origin (same host, another port, so the
 *   browser sends it the chat's session cookie, as it would to a sibling subdomain) whose page
 *   tries to hijack the chat's socket and shows each attempt refused.
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

const HOST = '127.0.0.1'
const MAX_MESSAGE_LENGTH = 500

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

/** The chat: sessions, the guard, a guarded chat room, and an unguarded one to compare. */
async function startChat (options, config) {
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
    ...options.guard,
    onReject: options.onReject
  })

  app.addHook('onRequest', async (request) => {
    if (request.session.get('name') === undefined) {
      request.session.set('name', 'guest-' + randomBytes(2).toString('hex'))
    }
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
    socket.send(JSON.stringify({ type: 'welcome', name: request.session.get('name') }))
    socket.close()
  })

  serveFile(app, '/', join(__dirname, 'public', 'index.html'), 'text/html; charset=utf-8')
  serveFile(app, '/chat.js', join(__dirname, 'public', 'chat.js'), 'text/javascript; charset=utf-8')
  serveFile(app, '/client.js', options.clientFile, 'text/javascript; charset=utf-8')
  app.get('/demo.json', async () => ({ attacker: config.attacker }))

  await app.listen({ port: options.port, host: HOST })
  return app
}

/** The attacker's site: its page, and where a leaked token ends up. */
async function startAttacker (options, config) {
  const app = Fastify({ logger: options.logger })
  let loot = null

  serveFile(app, '/', join(__dirname, 'attacker', 'index.html'), 'text/html; charset=utf-8')
  serveFile(app, '/attacker.js', join(__dirname, 'attacker', 'attacker.js'), 'text/javascript; charset=utf-8')
  app.get('/demo.json', async () => ({ victim: config.victim }))
  // the chat page's "leak a token" button posts here (a cross-origin no-cors POST)
  app.post('/leak', { bodyLimit: 1024 }, async (request, reply) => {
    loot = typeof request.body === 'string' ? request.body : null
    reply.code(204)
  })
  app.get('/loot', async () => ({ token: loot }))

  await app.listen({ port: options.attackerPort, host: HOST })
  return app
}

/**
 * Starts the chat and the attacker's site. Options: `port` and `attackerPort` (0 picks free
 * ones), `plugin` (default: this package, built), `clientFile` (default: dist/client.mjs),
 * `sessionSecret`, `logger`, `guard` (more plugin options), `onReject` (the plugin's),
 * `onConnect({ url, protocol, websocketGuard, name, socket })` (each opened chat socket).
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
  const chat = await startChat(resolved, config)
  let attacker
  try {
    attacker = await startAttacker(resolved, config)
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
    console.log('open the chat first, then the attacker page, in the same browser; Ctrl-C stops both')
    for (const signal of ['SIGINT', 'SIGTERM']) {
      process.once(signal, () => { demo.close().catch((err) => { console.error(err); process.exitCode = 1 }) })
    }
  }, (err) => {
    console.error(err)
    process.exitCode = 1
  })
}
