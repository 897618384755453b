'use strict'
/*
 * Rate limiting the token route with @fastify/rate-limit.
 *
 * Each GET /websocket-token writes a token into a session, and a client that sends no cookie
 * gets a new session each time. The guard bounds what one session holds (`maxTokens`) and
 * forgets expired tokens, but how many sessions a client can make is bounded only by how fast
 * it may ask: put a limit on the token route.
 *
 * The guard declares its token route itself; `tokenRouteOptions.config.rateLimit` gives it
 * the limit (with `global: false`, @fastify/rate-limit limits only routes that ask). Give
 * the WebSocket route a limit of its own the same way, in its own `config`, if you want one.
 *
 *   npm run build && node examples/rate-limit.js
 *   for i in $(seq 12); do curl -s -o /dev/null -w '%{http_code} ' http://127.0.0.1:3000/websocket-token; done
 *   # 200 200 200 200 200 200 200 200 200 200 429 429
 *
 * Environment: PORT (default 3000), SESSION_SECRET. Behind a reverse proxy, set Fastify's
 * `trustProxy` to that proxy (and only that one), or every client shares the proxy's address
 * and so one limit.
 */
const { randomBytes } = require('node:crypto')
const Fastify = require('fastify')
const cookie = require('@fastify/cookie')
const session = require('@fastify/session')
const websocket = require('@fastify/websocket')
const rateLimit = require('@fastify/rate-limit')

/**
 * Builds the app. Options: `plugin` (default: this package, built), `max` and `timeWindow`
 * (of the token route's limit; default 10 per minute), `sessionSecret`, `logger`, `guard`
 * (more plugin options).
 */
async function buildApp (options = {}) {
  const plugin = options.plugin ?? require('..')
  const app = Fastify({ logger: options.logger ?? false })
  await app.register(cookie)
  await app.register(session, {
    secret: options.sessionSecret ?? randomBytes(32).toString('base64url'),
    // plain http for the example; in production keep @fastify/session's default (secure)
    cookie: { secure: false }
  })
  await app.register(websocket)

  // Keyed by client address (request.ip): a client that drops its cookie is still the
  // same client. The limiter runs as one of the token route's onRequest hooks, so a
  // refused request never reaches the handler and no token is issued.
  await app.register(rateLimit, { global: false })

  // no `origins`: same-origin only
  await app.register(plugin, {
    ...options.guard,
    tokenRouteOptions: { config: { rateLimit: { max: options.max ?? 10, timeWindow: options.timeWindow ?? '1 minute' } } }
  })

  app.get('/chat', { websocket: true, guard: true }, (socket) => {
    socket.send('hello')
    socket.on('message', (message) => socket.send(message.toString()))
  })
  return app
}

module.exports = { buildApp }

if (require.main === module) {
  buildApp({
    sessionSecret: process.env.SESSION_SECRET,
    logger: { level: 'info' }
  }).then(async (app) => {
    await app.listen({ port: Number(process.env.PORT ?? 3000), host: '127.0.0.1' })
    for (const signal of ['SIGINT', 'SIGTERM']) {
      process.once(signal, () => { app.close().catch((err) => { console.error(err); process.exitCode = 1 }) })
    }
  }).catch((err) => {
    console.error(err)
    process.exitCode = 1
  })
}
