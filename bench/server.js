'use strict'
// One bench server, alone in its process so that its CPU time can be read with
// process.cpuUsage().
//
//   node bench/server.js --variant guard|hand-written|floor|baseline [--logger on|off]
//                        [--redis-url redis://…] [--max-tokens N] [--package-dir DIR]
//                        [--token-store-url redis://…] [--guard-options JSON]
//
// Every variant is the same app (@fastify/cookie, @fastify/session, @fastify/websocket, one
// upgrade route GET /chat) with a different check in front of the upgrade:
// guard:        the plugin (origin allow-list, tokens in the session); GET /websocket-token.
// hand-written: what a careful user writes instead of the plugin; GET /hand-token puts a
//               random token into the session, a preValidation hook on /chat checks it.
// floor:        the baseline with a preValidation hook on /chat that checks nothing (the
//               least a hook-based check costs).
// baseline:     no check; GET /plain-token writes one session value.
// Sessions are @fastify/session's default in-process MemoryStore, or Redis through
// connect-redis with --redis-url. The guard keeps its tokens in the session, or in
// redisTokenStore on a node-redis client with --token-store-url; --guard-options adds options
// of the guard (JSON), e.g. '{"closeOnSessionEnd":false}'. --logger on logs at info into a stream that drops the
// lines: the logging's own cost is measured, the I/O of the lines is not.
const { randomBytes, timingSafeEqual } = require('node:crypto')
const { writeFileSync } = require('node:fs')
const { Session } = require('node:inspector')
const { PerformanceObserver } = require('node:perf_hooks')
const { parseArgs } = require('node:util')
const Fastify = require('fastify')
const cookie = require('@fastify/cookie')
const session = require('@fastify/session')
const websocket = require('@fastify/websocket')
const { ORIGIN, loadPackage, serve } = require('./common')

const { values: args } = parseArgs({
  options: {
    variant: { type: 'string' },
    logger: { type: 'string', default: 'off' },
    'redis-url': { type: 'string' },
    'max-tokens': { type: 'string' },
    'token-store-url': { type: 'string' },
    'guard-options': { type: 'string' },
    // another build of the package (the previous one, for a before/after pair in one run)
    'package-dir': { type: 'string' },
    name: { type: 'string' }
  }
})

if (args['package-dir'] !== undefined) process.env.BENCH_PACKAGE_DIR = args['package-dir']

// time spent in garbage collection, reported next to the CPU time
let gcMs = 0
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) gcMs += entry.duration
}).observe({ entryTypes: ['gc'] })

const SECRET = 'a-bench-secret-with-at-least-32-characters'
const TOKEN_KEY = 'websocket_token'

const variants = {
  async guard (app) {
    const { plugin, mod } = loadPackage()
    const maxTokens = args['max-tokens'] === undefined ? undefined : Number(args['max-tokens'])
    const more = args['guard-options'] === undefined ? {} : JSON.parse(args['guard-options'])
    const store = await tokenStore(app, mod)
    await app.register(plugin, { origins: ORIGIN, maxTokens, ...(store === undefined ? {} : { store }), ...more })
    return { tokenPath: '/websocket-token', guard: true }
  },

  // The check issue 14 describes, written as a careful user would, without the plugin.
  async 'hand-written' (app) {
    const allowed = new Set([ORIGIN])
    app.get('/hand-token', async (request, reply) => {
      const token = randomBytes(32).toString('base64url')
      request.session.set(TOKEN_KEY, token)
      reply.header('cache-control', 'no-store')
      return { token }
    })
    const preValidation = async (request, reply) => {
      if (!allowed.has(request.headers.origin)) return reply.code(403).send({ message: 'Forbidden' })
      const q = request.url.indexOf('?')
      const presented = q === -1 ? null : new URLSearchParams(request.url.slice(q + 1)).get('token')
      const expected = request.session.get(TOKEN_KEY)
      if (typeof presented !== 'string' || typeof expected !== 'string' || presented.length !== expected.length ||
          !timingSafeEqual(Buffer.from(presented), Buffer.from(expected))) {
        return reply.code(403).send({ message: 'Forbidden' })
      }
      delete request.session[TOKEN_KEY]
      // @fastify/session saves in onSend, which a successful upgrade never reaches
      await request.session.save()
    }
    return { tokenPath: '/hand-token', guard: false, preValidation }
  },

  async baseline (app) {
    plainTokenRoute(app)
    return { tokenPath: '/plain-token', guard: false }
  },

  // The least any check in a preValidation hook costs, checking nothing: the baseline's
  // token route, and on /chat a callback-style hook that reads the Origin and the `?token=`
  // value of an upgrade and puts a result on the request. What the guard costs above this
  // is its checks and the socket's life; what this costs above the baseline, every hook-based
  // check pays.
  async floor (app) {
    plainTokenRoute(app)
    const preValidation = (request, _reply, done) => {
      if (request.ws === true) request.checked = { origin: request.headers.origin ?? null, token: request.query.token ?? null }
      done()
    }
    return { tokenPath: '/plain-token', guard: false, preValidation }
  }
}

/** GET /plain-token: as much as the token route does that is not the guard (one session write, the same JSON). */
function plainTokenRoute (app) {
  let n = 0
  app.get('/plain-token', async (request, reply) => {
    request.session.set(TOKEN_KEY, String(++n).padStart(43, '0'))
    reply.header('cache-control', 'no-store')
    return { token: 'x'.repeat(43), expiresAt: Date.now() + 60_000 }
  })
}

/** redisTokenStore on a node-redis client of its own, with --token-store-url. */
async function tokenStore (app, mod) {
  if (args['token-store-url'] === undefined) return undefined
  const { createClient } = require('redis')
  const client = createClient({ url: args['token-store-url'] })
  client.on('error', () => {})
  await client.connect()
  app.addHook('onClose', () => client.quit())
  return mod.redisTokenStore({ client, prefix: `bench-${args.name ?? process.pid}:` })
}

async function sessionStore () {
  if (args['redis-url'] === undefined) return { store: undefined, close () {} }
  const { createClient } = require('redis')
  const { RedisStore } = require('connect-redis')
  const client = createClient({ url: args['redis-url'] })
  client.on('error', () => {})
  await client.connect()
  // each server its own prefix: servers of one run share one redis-server
  const store = new RedisStore({ client, prefix: `bench-${args.name ?? process.pid}:` })
  return { store, close: () => client.quit() }
}

async function build () {
  const variant = variants[args.variant]
  if (variant === undefined) throw new Error(`unknown variant ${args.variant}`)
  if (args.logger !== 'on' && args.logger !== 'off') throw new Error(`--logger is on or off, not ${args.logger}`)
  const logger = args.logger === 'on' ? { level: 'info', stream: { write () {} } } : false
  const app = Fastify({ logger })
  const sessions = await sessionStore()
  app.addHook('onClose', () => sessions.close())
  await app.register(cookie)
  await app.register(session, { secret: SECRET, cookie: { secure: false }, store: sessions.store })
  await app.register(websocket)
  const { tokenPath, guard, preValidation } = await variant(app)
  let opened = 0
  app.get('/chat', { websocket: true, guard, preValidation }, (socket) => {
    opened++
    socket.on('error', () => {})
  })
  await app.listen({ port: 0, host: '127.0.0.1' })
  return { app, tokenPath, opened: () => opened }
}

const profiler = {
  session: null,
  post (method, params) {
    return new Promise((resolve, reject) => {
      this.session.post(method, params, (err, result) => { if (err) reject(err); else resolve(result) })
    })
  },
  async start (interval) {
    this.session = new Session()
    this.session.connect()
    await this.post('Profiler.enable')
    if (interval !== undefined) await this.post('Profiler.setSamplingInterval', { interval })
    await this.post('Profiler.start')
  },
  async stop (file) {
    const { profile } = await this.post('Profiler.stop')
    this.session.disconnect()
    writeFileSync(file, JSON.stringify(profile))
  }
}

build().then(({ app, tokenPath, opened }) => {
  serve({
    address: () => ({ port: app.server.address().port, origin: ORIGIN, tokenPath }),
    cpu: () => {
      const u = process.cpuUsage()
      return { cpu: u.user + u.system, gc: gcMs * 1000, opened: opened() }
    },
    // a V8 CPU profile of what comes between the two (bench/measure.js: the measured part)
    'profile-start': ({ interval }) => profiler.start(interval),
    'profile-stop': ({ file }) => profiler.stop(file),
    exit: () => app.close()
  })
}, (err) => {
  console.error(err)
  process.exit(1)
})
