'use strict'
/*
 * Prometheus metrics for fastify-websocket-guard, built only on its diagnostics channels
 * (node:diagnostics_channel): no hook, no onReject, nothing added to the app's routes. Around
 * them, a small same-origin chat (rooms at /chat/:room) that serves the metrics on /metrics.
 *
 *   npm run build && node examples/metrics.js
 *
 * Environment: PORT (default 0: a free port, printed), SESSION_SECRET. It listens on 127.0.0.1.
 * In production serve /metrics where only the scraper reaches it (another port, or behind
 * authentication): its labels name your routes and the origins that were refused.
 *
 * `guardMetrics()` is the part to copy into an app; `startMetricsDemo()` is what
 * test/metrics-example.test.ts drives.
 *
 * What the channels cannot tell: a socket closed by its client (or by the network, or at
 * shutdown) publishes nothing, since `fastify-websocket-guard:close` carries only the closes the
 * guard makes. So `websocket_guard_open_sockets` is accepted upgrades minus guard closes: an
 * upper bound that only the guard's own closes bring down, and the duration histogram holds
 * the sockets the guard closed. An accepted upgrade is one that passed the guard; a later hook
 * of the route may still refuse it.
 */
const { randomBytes } = require('node:crypto')
const diagnostics = require('node:diagnostics_channel')
const { join } = require('node:path')
const { readFile } = require('node:fs/promises')
const Fastify = require('fastify')
const cookie = require('@fastify/cookie')
const session = require('@fastify/session')
const websocket = require('@fastify/websocket')
const promClient = require('prom-client')

const HOST = '127.0.0.1'
const MAX_MESSAGE_LENGTH = 500

/**
 * A label value taken from a message, among at most `max` distinct ones: the Origin header of
 * a refusal is the attacker's to choose, and so is the path of an upgrade refused before
 * routing (its `requestId` is null and its `route` the request path, not a pattern), and each
 * new label value is a new time series kept forever. Past `max`, `other`.
 */
function boundedLabel (max) {
  const seen = new Set()
  return function label (value) {
    if (value === null) return 'none'
    if (seen.has(value)) return value
    if (seen.size >= max) return 'other'
    seen.add(value)
    return value
  }
}

/**
 * Subscribes to the guard's four channels and keeps Prometheus metrics of them in `registry`.
 * `stop()` unsubscribes (the metrics stay).
 */
function guardMetrics ({ registry = new promClient.Registry(), maxLabelValues = 50 } = {}) {
  const registers = [registry]
  const unroutedPath = boundedLabel(maxLabelValues)
  const origin = boundedLabel(maxLabelValues)
  // route patterns are the app's own, few; `none`: issueToken called outside any route
  const route = (pattern) => pattern ?? 'none'

  const tokens = new promClient.Counter({ name: 'websocket_guard_tokens_issued_total', help: 'Tokens issued, by the route that issued them', labelNames: ['route'], registers })
  const accepted = new promClient.Counter({ name: 'websocket_guard_accepted_total', help: 'Upgrades that passed the guard, by route and token transport', labelNames: ['route', 'transport'], registers })
  const refused = new promClient.Counter({ name: 'websocket_guard_refused_total', help: 'Upgrades and token requests refused by the guard, by route, error code and status', labelNames: ['route', 'code', 'status_code'], registers })
  const originRefusals = new promClient.Counter({ name: 'websocket_guard_origin_refusals_total', help: `Refusals with WS_GUARD_ORIGIN_NOT_ALLOWED by the Origin header sent (at most ${maxLabelValues} origins, then "other"; "none": no Origin)`, labelNames: ['origin'], registers })
  const closes = new promClient.Counter({ name: 'websocket_guard_closes_total', help: 'Sockets closed by the guard, by route, reason and close code', labelNames: ['route', 'reason', 'code'], registers })
  const open = new promClient.Gauge({ name: 'websocket_guard_open_sockets', help: 'Guarded sockets accepted minus those the guard closed (closes by the client are not seen: an upper bound)', labelNames: ['route'], registers })
  const duration = new promClient.Histogram({
    name: 'websocket_guard_socket_duration_seconds',
    help: 'How long the sockets the guard closed had been open, by route and reason',
    labelNames: ['route', 'reason'],
    buckets: [1, 10, 60, 300, 900, 3600, 4 * 3600, 24 * 3600],
    registers
  })
  // open sockets per route, never below zero (the close of a socket accepted before subscribing)
  const openByRoute = new Map()

  const listeners = {
    'fastify-websocket-guard:token' (message) {
      tokens.inc({ route: route(message.route) })
    },
    'fastify-websocket-guard:accept' (message) {
      const r = route(message.route)
      accepted.inc({ route: r, transport: message.transport ?? 'none' })
      openByRoute.set(r, (openByRoute.get(r) ?? 0) + 1)
      open.set({ route: r }, openByRoute.get(r))
    },
    'fastify-websocket-guard:reject' (message) {
      const r = message.requestId === null ? unroutedPath(message.route) : route(message.route)
      refused.inc({ route: r, code: message.code, status_code: String(message.statusCode) })
      if (message.code === 'WS_GUARD_ORIGIN_NOT_ALLOWED') originRefusals.inc({ origin: origin(message.origin) })
    },
    'fastify-websocket-guard:close' (message) {
      const r = route(message.route)
      closes.inc({ route: r, reason: message.reason, code: String(message.code) })
      duration.observe({ route: r, reason: message.reason }, message.durationMs / 1000)
      openByRoute.set(r, Math.max(0, (openByRoute.get(r) ?? 0) - 1))
      open.set({ route: r }, openByRoute.get(r))
    }
  }
  for (const [name, listener] of Object.entries(listeners)) diagnostics.subscribe(name, listener)
  return {
    registry,
    stop () {
      for (const [name, listener] of Object.entries(listeners)) diagnostics.unsubscribe(name, listener)
    }
  }
}

const PAGE = `<!doctype html>
<meta charset="utf-8">
<title>fastify-websocket-guard: metrics demo</title>
<h1>Room <span id="room"></span></h1>
<p id="status">connecting…</p>
<form id="send"><input id="text" autocomplete="off" maxlength="${MAX_MESSAGE_LENGTH}"> <button>send</button></form>
<ul id="messages"></ul>
<p><button id="logout">log out</button> (the guard closes this session's sockets) · <a href="/metrics">/metrics</a></p>
<script type="module">
  import { GuardedWebSocket } from '/client.js'
  const $ = (id) => document.getElementById(id)
  const room = new URLSearchParams(location.search).get('room') ?? 'lobby'
  $('room').textContent = room
  const socket = new GuardedWebSocket('/chat/' + encodeURIComponent(room))
  socket.addEventListener('open', () => { $('status').textContent = 'connected' })
  socket.addEventListener('close', () => { $('status').textContent = 'disconnected' })
  socket.addEventListener('ended', (event) => { $('status').textContent = 'ended: ' + event.reason })
  socket.addEventListener('message', (event) => {
    const li = document.createElement('li')
    li.textContent = event.data
    $('messages').append(li)
  })
  $('send').addEventListener('submit', (event) => {
    event.preventDefault()
    socket.send($('text').value)
    $('text').value = ''
  })
  $('logout').addEventListener('click', () => { fetch('/logout', { method: 'POST' }) })
</script>
`

/**
 * The chat with its metrics. Options: `port` (default 0), `plugin` (default: this package,
 * built), `clientFile` (default: dist/client.mjs), `sessionSecret`, `logger`.
 */
async function startMetricsDemo (options = {}) {
  const plugin = options.plugin ?? require('..')
  const clientFile = options.clientFile ?? join(__dirname, '..', 'dist', 'client.mjs')
  const metrics = guardMetrics()
  const app = Fastify({ logger: options.logger ?? false })
  app.addHook('onClose', async () => { metrics.stop() })
  await app.register(cookie)
  await app.register(session, {
    secret: options.sessionSecret ?? randomBytes(32).toString('base64url'),
    // plain http for the demo; in production keep @fastify/session's default (secure)
    cookie: { secure: false }
  })
  await app.register(websocket)
  // no `origins`: same-origin
  await app.register(plugin)

  const rooms = new Map()
  app.get('/chat/:room', { websocket: true }, (socket, request) => {
    const name = request.params.room
    const members = rooms.get(name) ?? new Set()
    rooms.set(name, members.add(socket))
    socket.on('message', (data) => {
      const text = data.toString().slice(0, MAX_MESSAGE_LENGTH)
      for (const member of members) member.send(text)
    })
    socket.on('close', () => {
      members.delete(socket)
      if (members.size === 0) rooms.delete(name)
    })
  })
  app.post('/logout', async (request) => {
    await request.session.destroy()
    return { ok: true }
  })
  app.get('/metrics', async (_request, reply) => {
    reply.type(metrics.registry.contentType).header('cache-control', 'no-store')
    return await metrics.registry.metrics()
  })
  app.get('/', async (_request, reply) => reply.type('text/html; charset=utf-8').send(PAGE))
  app.get('/client.js', async (_request, reply) => reply.type('text/javascript; charset=utf-8').send(await readFile(clientFile)))

  await app.listen({ port: options.port ?? 0, host: HOST })
  const { port } = app.server.address()
  return { app, metrics, url: `http://${HOST}:${port}`, close: () => app.close() }
}

module.exports = { guardMetrics, startMetricsDemo }

if (require.main === module) {
  startMetricsDemo({
    port: Number(process.env.PORT ?? 0),
    sessionSecret: process.env.SESSION_SECRET,
    logger: { level: 'warn' }
  }).then((demo) => {
    console.log(`chat:    ${demo.url}/`)
    console.log(`metrics: ${demo.url}/metrics`)
    for (const signal of ['SIGINT', 'SIGTERM']) {
      process.once(signal, () => { demo.close().catch((err) => { console.error(err); process.exitCode = 1 }) })
    }
  }, (err) => {
    console.error(err)
    process.exitCode = 1
  })
}
