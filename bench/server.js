'use strict'
// One bench server, alone in its process so that its CPU time can be read with
// process.cpuUsage(). `node bench/server.js guarded|guarded-store|baseline [maxTokens]`.
//
// guarded:  @fastify/session + @fastify/websocket + the guard (origin allow-list, tokens in
//           the session, maxTokens as given or the default 8); GET /websocket-token issues,
//           GET /chat is a guarded upgrade.
// guarded-store: the same with the tokens in the in-memory TokenStore (the session holds
//           an id), so that consuming a token does not save the session.
// baseline: the same app without the guard; GET /plain-token writes one session value and
//           answers the same JSON, GET /chat is an unguarded upgrade.
const Fastify = require('fastify')
const cookie = require('@fastify/cookie')
const session = require('@fastify/session')
const websocket = require('@fastify/websocket')
const { PerformanceObserver } = require('node:perf_hooks')
const { loadPackage, serve } = require('./common')

// time spent in garbage collection, reported next to the CPU time
let gcMs = 0
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) gcMs += entry.duration
}).observe({ entryTypes: ['gc'] })

const SECRET = 'a-bench-secret-with-at-least-32-characters'
const ORIGIN = 'http://bench.example'
const variant = process.argv[2]

/**
 * Sessions kept serialised, as production session stores (Redis, a database) keep them.
 * @fastify/session's own MemoryStore keeps each session object, and with it the last request
 * that saved it: after an upgrade that is the upgrade's socket, which would make the
 * comparison one of retained sockets rather than of the guard.
 */
class SerialisingStore {
  constructor () {
    this.sessions = new Map()
  }

  set (id, session, callback) {
    this.sessions.set(id, JSON.stringify(session))
    callback()
  }

  get (id, callback) {
    const text = this.sessions.get(id)
    callback(null, text === undefined ? null : JSON.parse(text))
  }

  destroy (id, callback) {
    this.sessions.delete(id)
    callback()
  }
}

async function build () {
  // logging on, as in production, into a stream that drops the lines: the guard's log
  // redaction is part of its cost, the I/O of the lines is not
  const app = Fastify({ logger: { level: 'info', stream: { write () {} } } })
  await app.register(cookie)
  await app.register(session, { secret: SECRET, cookie: { secure: false }, store: new SerialisingStore() })
  await app.register(websocket)
  if (variant === 'guarded' || variant === 'guarded-store') {
    const { plugin, mod } = loadPackage()
    const maxTokens = process.argv[3] === undefined ? undefined : Number(process.argv[3])
    const store = variant === 'guarded-store' ? mod.memoryTokenStore() : undefined
    await app.register(plugin, { origins: ORIGIN, maxTokens, store })
  } else if (variant === 'baseline') {
    let n = 0
    app.get('/plain-token', async (request, reply) => {
      // as much as the token route does that is not the guard: one session write, same JSON
      request.session.set('websocket_token', String(++n).padStart(43, '0'))
      reply.header('cache-control', 'no-store')
      return { token: 'x'.repeat(43), expiresAt: Date.now() + 60_000 }
    })
  } else {
    throw new Error(`unknown variant ${variant}`)
  }
  let opened = 0
  app.get('/chat', { websocket: true, guard: variant !== 'baseline' }, () => { opened++ })
  await app.listen({ port: 0, host: '127.0.0.1' })
  return { app, opened: () => opened }
}

build().then(({ app, opened }) => {
  serve({
    address: () => ({ port: app.server.address().port, origin: ORIGIN, variant }),
    cpu: () => {
      const u = process.cpuUsage()
      return { cpu: u.user + u.system, gc: gcMs * 1000, opened: opened() }
    },
    exit: () => app.close()
  })
}, (err) => {
  console.error(err)
  process.exit(1)
})
