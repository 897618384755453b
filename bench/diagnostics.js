'use strict'
// What the diagnostics channels cost, as figures `{ title, goal, run }` for bench/run.js (or
// on their own: `node bench/diagnostics.js [--quick]`, after `npm run build`).
//
// The same build of dist/ runs in four server processes: with the publishing code removed
// (a copy of dist/ whose `publish…()` call sites and diagnostics imports are cut out, twice:
// the A/A pair that measures the noise), as built with nobody subscribed, and as built with a
// subscriber on every channel. A server's cost is its own CPU time per flow (process.cpuUsage),
// since the load generator (this process) shares the machine. One flow is what publishes on
// every channel the guard has without the socket-lifecycle code: a token request (:token), an
// accepted upgrade (:accept) and its close, and an upgrade refused for its Origin (:reject).
// The flows of a round take turns between the servers (A B C D A B …), so that all of them
// meet the same moments of a noisy machine; each epoch starts fresh processes, and the median
// over epochs is quoted. Beside it, the publish calls alone are timed in-process.
const { fork } = require('node:child_process')
const { once } = require('node:events')
const { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } = require('node:fs')
const http = require('node:http')
const { tmpdir } = require('node:os')
const { join } = require('node:path')
const { setTimeout: sleep } = require('node:timers/promises')
const { median } = require('./common')

const root = join(__dirname, '..')
const HOST = '127.0.0.1'
const FOREIGN = 'https://evil.example'

const PLANS = {
  full: { epochs: 8, warmup: 1, rounds: 3, flows: 100, concurrency: 8, sessions: 16 },
  quick: { epochs: 2, warmup: 1, rounds: 2, flows: 30, concurrency: 8, sessions: 8 }
}

// ---- the builds

// a statement of its own in tsc's CommonJS output: `(0, diagnostics_1.publishX)(…);`
const CALL = /^[ \t]*\(0, diagnostics_1\.publish\w+\)\(.*\);[ \t]*\n/gm
const IMPORT = /^const diagnostics_1 = require\("(?:\.\.?\/)+diagnostics"\);\n/gm

function jsFiles (dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) return jsFiles(path)
    return entry.name.endsWith('.js') ? [path] : []
  })
}

/** `dist` without its publishing: every call site and import cut out. Returns the calls cut. */
function removePublishing (dist) {
  let calls = 0
  for (const file of jsFiles(join(dist, 'lib'))) {
    if (file.endsWith(join('lib', 'diagnostics.js'))) continue
    const source = readFileSync(file, 'utf8')
    const cut = source.replace(CALL, () => { calls++; return '' }).replace(IMPORT, '')
    if (cut.includes('diagnostics_1')) throw new Error(`${file}: a use of diagnostics the bench cannot cut out; update CALL in bench/diagnostics.js`)
    if (cut !== source) writeFileSync(file, cut)
  }
  // token, accept, reject, and the reject at handleUpgrade; more once the lifecycle code calls publishClose
  if (calls < 4) throw new Error(`only ${calls} publish calls found in dist/: is it built from this branch?`)
  return calls
}

/** Two copies of dist/: as built, and without publishing. Removed by `cleanup()`. */
function builds () {
  const dist = join(root, 'dist')
  const dir = mkdtempSync(join(tmpdir(), 'bench-diagnostics-'))
  const published = join(dir, 'published')
  const removed = join(dir, 'removed')
  cpSync(dist, published, { recursive: true })
  cpSync(dist, removed, { recursive: true })
  const calls = removePublishing(removed)
  return { published, removed, calls, cleanup: () => rmSync(dir, { recursive: true, force: true }) }
}

// ---- the server (a child process)

async function serve (packageDir, subscribe) {
  const Fastify = require('fastify')
  const plugin = require(join(packageDir, 'index.js'))
  let received = 0
  if (subscribe) {
    const diagnostics = require('node:diagnostics_channel')
    // a subscriber that reads what a metrics subscriber reads
    const listener = (message) => { if (message.route !== undefined) received++ }
    for (const name of ['token', 'accept', 'reject', 'close']) diagnostics.subscribe(`fastify-websocket-guard:${name}`, listener)
  }
  const app = Fastify({ logger: false })
  await app.register(require('@fastify/cookie'))
  await app.register(require('@fastify/session'), { secret: 'a-bench-secret-with-at-least-32-characters', cookie: { secure: false } })
  await app.register(require('@fastify/websocket'))
  await app.register(plugin)
  app.get('/chat', { websocket: true }, (socket) => { socket.on('message', () => {}) })
  await app.listen({ port: 0, host: HOST })
  process.on('message', (message) => {
    if (message.cmd === 'cpu') {
      const { user, system } = process.cpuUsage()
      process.send({ id: message.id, cpu: user + system, received })
    } else if (message.cmd === 'exit') {
      app.close().then(() => process.exit(0), () => process.exit(1))
    }
  })
  process.on('disconnect', () => process.exit(0))
  process.send({ id: 0, port: app.server.address().port })
}

/** A server process of `variant`; `call(cmd)` answers in order. */
async function startServer (name, packageDir, subscribe) {
  const child = fork(__filename, ['server', packageDir, subscribe ? '1' : '0'], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    // the copies of dist/ live outside the checkout: they find its packages through NODE_PATH
    env: { ...process.env, NODE_PATH: join(root, 'node_modules') }
  })
  const waiting = new Map()
  child.on('message', (message) => {
    const resolve = waiting.get(message.id)
    waiting.delete(message.id)
    resolve?.(message)
  })
  const ready = new Promise((resolve, reject) => {
    waiting.set(0, resolve)
    child.once('exit', (code) => reject(new Error(`${name} server exited (${code})`)))
  })
  const { port } = await ready
  let next = 1
  const agent = new http.Agent({ keepAlive: true, maxSockets: 64 })
  return {
    name,
    port,
    agent,
    cookies: [],
    call (cmd) {
      const id = next++
      return new Promise((resolve) => {
        waiting.set(id, resolve)
        child.send({ cmd, id })
      })
    },
    async stop () {
      agent.destroy()
      if (child.exitCode !== null) return
      const exited = once(child, 'exit')
      child.send({ cmd: 'exit' })
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000)
      await exited
      clearTimeout(timer)
    }
  }
}

// ---- the load (this process)

function getToken (server, cookie) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: HOST, port: server.port, path: '/websocket-token', agent: server.agent, headers: cookie === undefined ? {} : { cookie } }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (chunk) => { body += chunk })
      res.on('end', () => {
        if (res.statusCode !== 200) return reject(new Error(`token route answered ${res.statusCode}`))
        const setCookie = res.headers['set-cookie']
        resolve({ token: JSON.parse(body).token, cookie: setCookie === undefined ? cookie : setCookie[0].split(';')[0] })
      })
    })
    req.on('error', reject)
  })
}

/** Opens a socket and closes it once open (`expect` 101), or reads the refusal (`expect` 403). */
function upgrade (WebSocket, server, path, cookie, origin, expect) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://${HOST}:${server.port}${path}`, { headers: { cookie, origin } })
    ws.on('open', () => {
      if (expect !== 101) reject(new Error(`${path} opened, expected ${expect}`))
      ws.close()
    })
    ws.on('close', () => { if (expect === 101) resolve() })
    ws.on('unexpected-response', (_req, res) => {
      res.resume()
      ws.terminate()
      if (res.statusCode === expect) resolve()
      else reject(new Error(`${path} answered ${res.statusCode}, expected ${expect}`))
    })
    ws.on('error', (err) => { if (expect === 101) reject(err) })
  })
}

/** Token request, accepted upgrade and close, refused upgrade. */
async function flow (WebSocket, server, i) {
  const cookie = server.cookies[i % server.cookies.length]
  const origin = `http://${HOST}:${server.port}`
  const { token } = await getToken(server, cookie)
  await upgrade(WebSocket, server, '/chat?token=' + token, cookie, origin, 101)
  await upgrade(WebSocket, server, '/chat?token=' + token, cookie, FOREIGN, 403)
}

/** One round: `plan.flows` flows on each server, taking turns. Server CPU µs per flow, by server. */
async function round (WebSocket, servers, plan, offset) {
  const before = await Promise.all(servers.map((s) => s.call('cpu')))
  const total = plan.flows * servers.length
  let next = 0
  async function worker () {
    while (next < total) {
      const i = next++
      await flow(WebSocket, servers[(i + offset) % servers.length], Math.floor(i / servers.length))
    }
  }
  await Promise.all(Array.from({ length: plan.concurrency }, worker))
  // the closing handshakes of this round finish in it
  await sleep(50)
  const after = await Promise.all(servers.map((s) => s.call('cpu')))
  return Object.fromEntries(servers.map((s, k) => [s.name, (after[k].cpu - before[k].cpu) / plan.flows]))
}

const us = (v) => `${v.toFixed(1)} µs`
const times = (v) => `${v.toFixed(3)}×`
const pct = (v) => `±${(v * 100).toFixed(1)}%`

/**
 * CPU per flow of each server, epoch by epoch: each epoch starts four fresh processes (in an
 * order that changes) and keeps the median of its rounds. Two processes running the same code
 * differ by a few per cent for as long as they live (what their JIT happened to do, the core
 * they ran on), more than the effect looked for: fresh processes each epoch turn that bias
 * into noise that the median over epochs removes, instead of a constant.
 */
async function measure (ctx) {
  const WebSocket = require('ws')
  const plan = ctx.quick ? PLANS.quick : PLANS.full
  const made = builds()
  const variants = [['removed', made.removed, false], ['removed-2', made.removed, false], ['none', made.published, false], ['all', made.published, true]]
  const epochs = []
  // each variant starts in each position equally often over a multiple of four epochs
  try {
    for (let e = 0; e < plan.epochs; e++) {
      const order = variants.map((_, i) => variants[(i + e) % variants.length])
      const servers = []
      try {
        for (const [name, dir, subscribe] of order) servers.push(await startServer(name, dir, subscribe))
        for (const server of servers) {
          for (let i = 0; i < plan.sessions; i++) server.cookies.push((await getToken(server)).cookie)
        }
        const rounds = []
        for (let r = 0; r < plan.warmup + plan.rounds; r++) {
          const cpu = await round(WebSocket, servers, plan, r)
          if (r >= plan.warmup) rounds.push(cpu)
        }
        const cpu = Object.fromEntries(variants.map(([name]) => [name, median(rounds.map((r) => r[name]))]))
        ctx.log?.(`diagnostics epoch ${e + 1}/${plan.epochs}: ${variants.map(([name]) => `${name} ${us(cpu[name])}`).join(', ')} per flow`)
        const flows = (plan.warmup + plan.rounds) * plan.flows
        const { received } = await servers.find((s) => s.name === 'all').call('cpu')
        // token, accept and reject per flow, and the first token request of each session
        if (received !== 3 * flows + plan.sessions) throw new Error(`the subscribed server received ${received} messages, expected ${3 * flows + plan.sessions}`)
        epochs.push(cpu)
      } finally {
        await Promise.all(servers.map((s) => s.stop()))
      }
    }
    return { epochs, calls: made.calls, plan, perCall: publishCost(made.published) }
  } finally {
    made.cleanup()
  }
}

/**
 * Nanoseconds per publish call, timed in this process on the built code, with nobody
 * subscribed and with a subscriber on every channel: what a flow adds, to set beside the
 * end-to-end ratios, whose noise is larger than the effect. The best of five runs.
 */
function publishCost (dist) {
  const diagnostics = require(join(dist, 'lib', 'diagnostics.js'))
  const dc = require('node:diagnostics_channel')
  const request = { id: 'req-1', url: '/chat?token=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', routeOptions: { url: '/chat' }, headers: { origin: 'http://127.0.0.1:3000' } }
  const error = { code: 'WS_GUARD_ORIGIN_NOT_ALLOWED', statusCode: 403 }
  function time (n) {
    let best = Infinity
    for (let attempt = 0; attempt < 5; attempt++) {
      const start = process.hrtime.bigint()
      for (let i = 0; i < n; i++) {
        diagnostics.publishToken(request, null, i)
        diagnostics.publishAccept(request, 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', 'token')
        diagnostics.publishReject(request, error)
      }
      best = Math.min(best, Number(process.hrtime.bigint() - start) / (3 * n))
    }
    return best
  }
  const none = time(5_000_000)
  let received = 0
  const listener = (message) => { if (message.route !== undefined) received++ }
  const names = ['token', 'accept', 'reject'].map((name) => `fastify-websocket-guard:${name}`)
  for (const name of names) dc.subscribe(name, listener)
  const all = time(500_000)
  for (const name of names) dc.unsubscribe(name, listener)
  if (received === 0) throw new Error('the subscriber received nothing')
  return { none, all }
}


const epochCpu = (m, name) => median(m.epochs.map((e) => e[name]))
/** The A/A noise floor: the median distance of removed-2 / removed from 1, over epochs. */
const noiseFloor = (m) => median(m.epochs.map((e) => Math.abs(e['removed-2'] / e.removed - 1)))

/** Median over epochs of `a` / `b`, `b` being one server or the mean of several. */
function compare (m, a, b) {
  const names = Array.isArray(b) ? b : [b]
  const ratios = m.epochs.map((e) => e[a] / (names.reduce((sum, name) => sum + e[name], 0) / names.length))
  const value = median(ratios)
  const floor = noiseFloor(m)
  return {
    case: 'token request + accepted upgrade + refused upgrade, end to end',
    value,
    shown: times(value),
    detail: `medians: ${a} ${us(epochCpu(m, a))}, ${names.join(' and ')} ${names.map((name) => us(epochCpu(m, name))).join(' and ')} server CPU per flow; per-epoch ratios ${times(Math.min(...ratios))}–${times(Math.max(...ratios))}; ${m.epochs.length} epochs of fresh processes, ${m.plan.rounds} rounds of ${m.plan.flows} flows each; ${m.calls} publish call sites removed; A/A noise ${pct(floor)}`,
    noise: floor
  }
}

/** What the three publish calls of a flow cost (`subscribers`: 'none' or 'all'), over a flow's CPU. */
function computed (m, subscribers) {
  const flow = epochCpu(m, 'removed')
  const ns = m.perCall[subscribers]
  const value = 1 + 3 * ns / 1000 / flow
  return {
    case: 'the publish calls alone, timed in-process',
    value,
    shown: `${value.toFixed(6)}×`,
    detail: `${ns.toFixed(1)} ns per call ${subscribers === 'none' ? 'with nobody subscribed' : 'with a subscriber on every channel'} × 3 calls per flow, over ${us(flow)} server CPU per flow`
  }
}

const measured = (ctx) => ctx.once === undefined ? (ctx.measured ??= measure(ctx)) : ctx.once('diagnostics channels', () => measure(ctx))

const figures = [
  {
    title: 'Diagnostics channels without a subscriber / publishing removed: server CPU per flow',
    goal: { max: 1.01 },
    async run (ctx) {
      const m = await measured(ctx)
      return [compare(m, 'none', ['removed', 'removed-2']), computed(m, 'none')]
    }
  },
  {
    title: 'Diagnostics channels with a subscriber on every channel / publishing removed: server CPU per flow',
    goal: null,
    async run (ctx) {
      const m = await measured(ctx)
      return [compare(m, 'all', ['removed', 'removed-2']), computed(m, 'all')]
    }
  },
  {
    title: 'Noise floor of the diagnostics figures: removed-2 / removed (A/A), server CPU per flow',
    goal: null,
    async run (ctx) { return [compare(await measured(ctx), 'removed-2', 'removed')] }
  }
]

module.exports = figures

if (require.main === module) {
  if (process.argv[2] === 'server') {
    serve(process.argv[3], process.argv[4] === '1').catch((err) => {
      console.error(err)
      process.exit(1)
    })
  } else {
    const ctx = { quick: process.argv.includes('--quick'), log: (line) => process.stdout.write(`    ${line}\n`) }
    ;(async () => {
      for (const figure of figures) {
        const goal = figure.goal === null ? '(informative)' : `≤ ${figure.goal.max}`
        for (const row of await figure.run(ctx)) {
          const met = figure.goal === null ? '' : row.value <= figure.goal.max ? ' met' : ' NOT met'
          console.log(`${figure.title}\n  ${row.case}: ${row.shown}, goal ${goal}${met}\n  ${row.detail}`)
        }
      }
    })().catch((err) => {
      console.error(err)
      process.exitCode = 1
    })
  }
}
