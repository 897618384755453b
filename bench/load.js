'use strict'
// The load generator, in its own process: asks one bench server for tokens over HTTP
// (keep-alive) and opens WebSockets with the `ws` client, as a browser would (cookie + Origin).
const http = require('node:http')
const WebSocket = require('ws')
const autocannon = require('autocannon')
const { serve } = require('./common')

const agents = new Map()
function agentFor (port) {
  let agent = agents.get(port)
  if (agent === undefined) {
    agent = new http.Agent({ keepAlive: true, maxSockets: 64 })
    agents.set(port, agent)
  }
  return agent
}

/** GET `path` with `jar.cookie`; keeps the session cookie the server sets. */
function getJson (port, path, jar) {
  return new Promise((resolve, reject) => {
    const headers = jar.cookie === '' ? {} : { cookie: jar.cookie }
    const req = http.get({ host: '127.0.0.1', port, path, headers, agent: agentFor(port) }, (res) => {
      const setCookie = res.headers['set-cookie']
      if (setCookie !== undefined) jar.cookie = setCookie.map((c) => c.split(';')[0]).join('; ')
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (chunk) => { body += chunk })
      res.on('end', () => {
        if (res.statusCode !== 200) reject(new Error(`GET ${path} answered ${res.statusCode}: ${body}`))
        else resolve(JSON.parse(body))
      })
    })
    req.on('error', reject)
  })
}

/** Opens a socket, closes it as soon as it is open, resolves once it is closed. */
function openAndClose (port, token, jar, origin) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/chat?token=${token}`, {
      headers: { cookie: jar.cookie },
      origin,
      perMessageDeflate: false
    })
    ws.on('open', () => ws.close())
    ws.on('close', () => resolve())
    ws.on('unexpected-response', (_req, res) => {
      ws.terminate()
      reject(new Error(`upgrade answered ${res.statusCode}`))
    })
    ws.on('error', reject)
  })
}

/** Runs `count` tasks on `concurrency` workers; `task(worker)` gets the worker's index. */
async function pool (count, concurrency, task) {
  let started = 0
  const start = process.hrtime.bigint()
  async function worker (w) {
    while (started < count) {
      started++
      await task(w)
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, (_, w) => worker(w)))
  return Number(process.hrtime.bigint() - start) / 1e6
}

// each worker's own sessions on each server, kept across rounds like users who reconnect;
// no two requests of one session are ever in flight together, as in a browser tab
const jars = new Map()
function jarsFor (port, workers, perWorker) {
  let list = jars.get(port)
  if (list === undefined) {
    list = []
    jars.set(port, list)
  }
  while (list.length < workers) list.push([])
  for (const mine of list) while (mine.length < perWorker) mine.push({ cookie: '' })
  return list
}

/**
 * `count` ops for every target, interleaved (A B C A B C …) so that all meet the same
 * moments of a noisy machine, starting from target `first` so that no server is always first.
 */
function interleave (targets, count, first) {
  const order = targets.map((_, i) => targets[(first + i) % targets.length])
  const out = []
  for (let i = 0; i < count; i++) out.push(...order)
  return out
}

serve({
  // token request + upgrade, `count` times on each target; `sessions` sessions per target
  async flow ({ targets, count, concurrency, sessions, first }) {
    const ops = interleave(targets, count, first)
    const perWorker = Math.ceil(sessions / concurrency)
    const used = new Map()
    let next = 0
    const ms = await pool(ops.length, concurrency, async (w) => {
      const t = ops[next++]
      const mine = jarsFor(t.port, concurrency, perWorker)[w]
      const k = used.get(mine) ?? 0
      used.set(mine, k + 1)
      const jar = mine[k % perWorker]
      const { token } = await getJson(t.port, t.tokenPath, jar)
      await openAndClose(t.port, token, jar, t.origin)
    })
    return { ops: count, ms }
  },
  // HTTP throughput of one GET route with autocannon; one session per connection
  cannon,
  // the same on several servers at once, so that all of them meet the same moments of a
  // noisy machine: one autocannon per server, started together
  async cannons ({ targets, connections, duration }) {
    return await Promise.all(targets.map(({ port, path }) => cannon({ port, path, connections, duration })))
  },
  exit () {
    for (const agent of agents.values()) agent.destroy()
  }
})

/** HTTP throughput of one GET route with autocannon; one session per connection. */
async function cannon ({ port, path, connections, duration }) {
  const cookies = []
  for (let i = 0; i < connections; i++) {
    const jar = { cookie: '' }
    await getJson(port, path, jar)
    cookies.push(jar.cookie)
  }
  let c = 0
  const result = await autocannon({
    url: `http://127.0.0.1:${port}${path}`,
    connections,
    duration,
    setupClient (client) {
      client.setHeaders({ cookie: cookies[c++ % cookies.length] })
    }
  })
  const ok = result['2xx']
  if (result.non2xx > 0 || result.errors > 0) {
    throw new Error(`autocannon on ${path}: ${result.non2xx} non-2xx, ${result.errors} errors`)
  }
  return { ops: ok + connections, ms: result.duration * 1000, rps: ok / result.duration, p99: result.latency.p99 }
}
