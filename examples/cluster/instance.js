'use strict'
/*
 * One instance of the cluster example: a Fastify app whose sessions live in Redis
 * (connect-redis) and whose one-time tokens live in Redis too (redisTokenStore), so that any
 * instance can issue a token and any instance can consume it, exactly once.
 *
 * Run alone:  REDIS_URL=redis://127.0.0.1:6379 SESSION_SECRET=<32+ chars> PORT=3001 \
 *             INSTANCE=a node examples/cluster/instance.js
 * Every instance must share REDIS_URL and SESSION_SECRET. TOKEN_CLIENT=ioredis keeps the
 * tokens through an ioredis client instead of node-redis (sessions stay on node-redis, which
 * is what connect-redis uses).
 */
const { readFile } = require('node:fs/promises')
const { join } = require('node:path')
const Fastify = require('fastify')
const cookie = require('@fastify/cookie')
const session = require('@fastify/session')
const websocket = require('@fastify/websocket')
const { RedisStore } = require('connect-redis')
const { createClient } = require('redis')
const websocketGuard = require('../..')

const HOST = '127.0.0.1'

async function connectRedis (url, kind, log) {
  if (kind === 'ioredis') {
    const IORedis = require('ioredis')
    const client = new IORedis(url, { lazyConnect: true })
    // without a listener an 'error' event would end the process; the guard answers 503 meanwhile
    client.on('error', (err) => { log.warn({ err: err.message }, 'redis (tokens) unavailable') })
    await client.connect()
    return { client, close: () => client.disconnect() }
  }
  const client = createClient({ url })
  client.on('error', (err) => { log.warn({ err: err.message }, 'redis unavailable') })
  await client.connect()
  return { client, close: () => client.destroy() }
}

/**
 * Starts one instance. Options: `name`, `port` (0 picks a free one), `redisUrl`,
 * `sessionSecret`, `tokenClient` ('redis' or 'ioredis'), `logger`.
 */
async function startInstance (options) {
  const { name, port = 0, redisUrl, sessionSecret, tokenClient = 'redis', logger = { level: 'warn' } } = options
  const app = Fastify({ logger })
  // one node-redis client serves connect-redis; the token store may share it
  const sessions = await connectRedis(redisUrl, 'redis', app.log)
  const tokens = tokenClient === 'ioredis' ? await connectRedis(redisUrl, 'ioredis', app.log) : sessions
  app.addHook('onClose', async () => {
    if (tokens !== sessions) tokens.close()
    sessions.close()
  })

  await app.register(cookie)
  await app.register(session, {
    secret: sessionSecret,
    // plain http for the example; in production keep @fastify/session's default (secure)
    cookie: { secure: false },
    store: new RedisStore({ client: sessions.client, prefix: 'example-sess:' })
  })
  await app.register(websocket)
  await app.register(websocketGuard, {
    // no `origins`: same-origin. Behind the balancer, Host is the balancer's, and so is the page.
    store: websocketGuard.redisTokenStore({ client: tokens.client, prefix: 'example-ws-guard:' })
  })

  // which instance answered, for the page to show
  app.addHook('onSend', async (_request, reply) => { reply.header('x-instance', name) })

  app.get('/chat', { websocket: true, guard: true }, (socket) => {
    socket.send(JSON.stringify({ type: 'welcome', instance: name }))
    socket.on('message', (data) => { socket.send(JSON.stringify({ type: 'echo', instance: name, text: data.toString().slice(0, 200) })) })
  })
  app.get('/favicon.ico', async (_request, reply) => { reply.code(204) })
  app.get('/', async (_request, reply) => {
    reply.type('text/html; charset=utf-8').header('cache-control', 'no-store')
    return readFile(join(__dirname, 'public', 'index.html'))
  })

  await app.listen({ port, host: HOST })
  return app
}

module.exports = { startInstance }

if (require.main === module) {
  const { REDIS_URL, SESSION_SECRET, PORT = '0', INSTANCE = 'a', TOKEN_CLIENT = 'redis' } = process.env
  if (REDIS_URL === undefined || SESSION_SECRET === undefined) {
    console.error('REDIS_URL and SESSION_SECRET are required (the same for every instance)')
    process.exit(1)
  }
  startInstance({ name: INSTANCE, port: Number(PORT), redisUrl: REDIS_URL, sessionSecret: SESSION_SECRET, tokenClient: TOKEN_CLIENT }).then((app) => {
    const { port } = app.server.address()
    if (process.send !== undefined) process.send({ port })
    else console.log(`instance ${INSTANCE}: http://${HOST}:${port}/`)
    for (const signal of ['SIGINT', 'SIGTERM']) {
      process.once(signal, () => { app.close().then(() => process.exit(0), () => process.exit(1)) })
    }
    // the parent (index.js) went away: stop too
    process.once('disconnect', () => { app.close().then(() => process.exit(0), () => process.exit(1)) })
  }, (err) => {
    console.error(err)
    process.exit(1)
  })
}
