'use strict'
// The socket's life, in figures `{ title, goal, run }` (bench/figures.js's shape): heap per
// registered socket, closeSession of a session with 1,000 sockets over two instances, store
// reads of revalidation, and the CPU an upgrade costs with the lifecycle on against off.
// Servers are child processes (test/fixtures/lifecycle-instance.js, on the built package);
// the load generator is this process.
//
//   node bench/lifecycle.js [--quick]     (after `npm run build`; runs bench/run.js --only lifecycle)
const { spawn } = require('node:child_process')
const { join } = require('node:path')
const WebSocket = require('ws')
const { median, percentile } = require('./common')
const { flows, noise, ratio } = require('./measure')
const { startRedis } = require('./redis')

const FIXTURE = join(__dirname, '..', 'test', 'fixtures', 'lifecycle-instance.js')

/** A server process; resolves once it listens. */
async function server (config) {
  const child = spawn(process.execPath, ['--expose-gc', FIXTURE, JSON.stringify(config)], { stdio: ['ignore', 'pipe', 'inherit'], env: process.env })
  const port = await new Promise((resolve, reject) => {
    let out = ''
    child.stdout.on('data', (chunk) => {
      out += chunk
      if (out.includes('\n')) resolve(JSON.parse(out.split('\n')[0]).port)
    })
    child.once('exit', (code) => reject(new Error(`lifecycle server exited (${code})`)))
  })
  const base = `http://127.0.0.1:${port}`
  return {
    base,
    async get (path) { return await (await fetch(base + path)).json() },
    stop () { child.kill('SIGKILL') }
  }
}

/** A browser session: a cookie jar of one cookie. */
class Session {
  constructor (base) {
    this.base = base
    this.cookie = ''
  }

  async request (path, method = 'GET', body) {
    const res = await fetch(this.base + path, {
      method,
      headers: { ...(this.cookie === '' ? {} : { cookie: this.cookie }), ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body)
    })
    const set = res.headers.getSetCookie()
    if (set.length > 0) this.cookie = set[0].split(';')[0]
    return await res.json()
  }

  /** Opens a guarded socket on `base` (this session's cookie); resolves once open. */
  async open (base = this.base) {
    const { token } = await this.on(base).request('/websocket-token?path=/chat')
    const ws = new WebSocket(`${base.replace('http', 'ws')}/chat?token=${token}`, { headers: { cookie: this.cookie } })
    await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject) })
    return ws
  }

  on (base) {
    const moved = new Session(base)
    moved.cookie = this.cookie
    const self = this
    // cookies set on any instance are the browser's
    return { request: async (...args) => { const r = await moved.request(...args); self.cookie = moved.cookie; return r } }
  }
}

async function closeAll (sockets) {
  await Promise.all(sockets.map((ws) => new Promise((resolve) => {
    if (ws.readyState === WebSocket.CLOSED) return resolve()
    ws.once('close', resolve)
    ws.close()
  })))
}

/** Opens `count` sockets, `concurrency` at a time. */
async function openMany (count, concurrency, open) {
  const sockets = []
  for (let i = 0; i < count; i += concurrency) {
    sockets.push(...await Promise.all(Array.from({ length: Math.min(concurrency, count - i) }, () => open())))
  }
  return sockets
}

async function withRedis (ctx, fn) {
  if (typeof ctx.redis === 'function') return await fn(await ctx.redis())
  const redis = await startRedis()
  try {
    return await fn(redis)
  } finally {
    await redis.stop()
  }
}

/** Two instances sharing one Redis (connect-redis sessions, redisTokenStore on node-redis). */
async function withTwoInstances (ctx, fn) {
  return await withRedis(ctx, async (redis) => {
    const config = { redisUrl: redis.url, client: 'node-redis' }
    const [a, b] = await Promise.all([server(config), server(config)])
    try {
      return await fn(a, b)
    } finally {
      a.stop()
      b.stop()
    }
  })
}

/**
 * For each socket, the ms from `started` until its close frame arrives (ws's receiver parses
 * it), not the end of the closing handshake.
 */
function closeFrames (sockets, started) {
  return Promise.all(sockets.map((ws) => new Promise((resolve) => ws._receiver.once('conclude', () => resolve(performance.now() - started)))))
}

const B = (v) => `${Math.round(v)} B`
const ms = (v) => `${v.toFixed(1)} ms`

const figures = [
  {
    title: 'Lifecycle: heap per registered guarded socket, beyond what @fastify/websocket holds',
    goal: { max: 200, unit: ' B' },
    async run (ctx) {
      // What the guard itself holds for each open socket, measured alone (a whole server's heap
      // per socket varies by tens of bytes from run to run): the entry, its place in the group
      // and user lists and the deadline heap, and the WeakMap from its socket. No listener: an
      // open socket is followed through ws's own `clients` (lib/sockets/connections.ts), which
      // the test "an open guarded socket costs no listener" checks.
      const { Socket } = require('node:net')
      const { Registry, SocketEntry, TrackedEntry, clock } = require(join(__dirname, '..', 'dist', 'lib', 'sockets', 'registry.js'))
      const v8 = require('node:v8')
      v8.setFlagsFromString('--expose-gc')
      const gc = require('node:vm').runInNewContext('gc')
      const count = ctx.quick ? 20_000 : 100_000
      const kept = []
      const measure = ({ perSession, users, lifetime }) => {
        const registry = new Registry()
        const transports = new WeakMap()
        // made before the measurement: they stand for ws's sockets
        const connections = Array.from({ length: count }, () => new Socket())
        const groups = Array.from({ length: Math.ceil(count / perSession) }, (_, i) => 'g' + String(i).padStart(21, '0'))
        const names = Array.from({ length: groups.length }, (_, i) => 'user-' + i)
        const entries = new Array(count).fill(null)
        gc()
        gc()
        const before = v8.getHeapStatistics().used_heap_size
        for (let i = 0; i < count; i++) {
          const entry = users || lifetime ? new TrackedEntry(clock()) : new SocketEntry(clock())
          registry.add(entry, groups[Math.floor(i / perSession)])
          if (users) registry.setUser(entry, names[Math.floor(i / perSession)])
          if (lifetime) registry.deadlines.add(entry, clock() + 3_600_000)
          transports.set(connections[i], entry)
          entries[i] = entry
        }
        gc()
        gc()
        const after = v8.getHeapStatistics().used_heap_size
        const per = (after - before) / count
        // used after the measurement, so that V8 cannot free them before it
        kept.push(connections, groups, names, transports)
        for (const entry of entries) registry.remove(entry)
        registry.deadlines.stop()
        return per
      }
      const rows = []
      for (const [name, options] of [
        ['defaults, one socket per session', { perSession: 1 }],
        ['defaults, 10 sockets per session', { perSession: 10 }],
        ['identify and maxSocketLifetime too, one socket per session (informative: a user list and a deadline on top)', { perSession: 1, users: true, lifetime: true }]
      ]) {
        measure(options)
        const per = measure(options)
        kept.length = 0
        rows.push({ case: name, value: per, shown: B(per), detail: `${count} entries; the session's group id (22 characters, about 40 B) is the session's, kept by the session plugin`, ...(options.users ? { informative: true } : {}) })
      }
      // and, for the record, a whole server process with the lifecycle on against off (noisy)
      const whole = async (guard, identify) => {
        const s = await server({ store: 'memory', identify, guard })
        try {
          const n = ctx.quick ? 500 : 2000
          const sessions = Array.from({ length: n }, () => new Session(s.base))
          for (const session of sessions) await session.request('/login', 'POST', { user: 'u' + Math.random() })
          await closeAll(await openMany(200, 50, () => sessions[Math.floor(Math.random() * n)].open()))
          const before = (await s.get('/heap')).data
          let i = 0
          const sockets = await openMany(n, 50, () => sessions[i++].open())
          const after = (await s.get('/heap')).data
          await closeAll(sockets)
          return (after - before) / n
        } finally {
          s.stop()
        }
      }
      const off = await whole({ closeOnSessionEnd: false }, false)
      const on = await whole({}, false)
      rows.push({ case: 'whole server, defaults against everything off (informative: ± a few hundred B)', value: 0, shown: B(on - off), detail: `${B(on)} against ${B(off)} per open socket`, informative: true })
      return rows
    }
  },
  {
    title: 'Lifecycle: logout on instance A, time to each close frame of the session\'s sockets on A and B',
    goal: { max: 250, unit: ' ms' },
    async run (ctx) {
      const rounds = ctx.quick ? 10 : 60
      return await withTwoInstances(ctx, async (a, b) => {
        // a user with two tabs on each instance, logging out on A, while another session's
        // sockets stay open beside them
        const times = []
        const remote = []
        const bystander = new Session(a.base)
        await bystander.request('/login', 'POST', { user: 'bob' })
        const kept = [await bystander.open(a.base), await bystander.open(b.base)]
        for (let round = 0; round < rounds; round++) {
          const session = new Session(a.base)
          await session.request('/login', 'POST', { user: 'alice' })
          const sockets = [await session.open(a.base), await session.open(a.base), await session.open(b.base), await session.open(b.base)]
          const closed = closeFrames(sockets, performance.now())
          await session.request('/logout', 'POST', {})
          const each = await closed
          times.push(...each)
          remote.push(...each.slice(2))
          await closeAll(sockets)
        }
        if (kept.some((ws) => ws.readyState !== WebSocket.OPEN)) throw new Error('a socket of another session was closed')
        await closeAll(kept)
        const p99 = percentile(times, 99)
        return [{
          case: `${rounds} rounds, 2 sockets on each instance, node-redis`,
          value: p99,
          shown: `p99 ${ms(p99)}`,
          detail: `p50 ${ms(percentile(times, 50))}; on B (through Redis) p50 ${ms(percentile(remote, 50))}, p99 ${ms(percentile(remote, 99))}; another session's sockets stayed open`
        }]
      })
    }
  },
  {
    title: 'Lifecycle: closeSession of a session with 1,000 sockets over two instances, time to each close frame',
    goal: null,
    async run (ctx) {
      const rounds = ctx.quick ? 2 : 7
      return await withTwoInstances(ctx, async (a, b) => {
        const times = []
        const lasts = []
        for (let round = 0; round < rounds; round++) {
          const session = new Session(a.base)
          await session.request('/login', 'POST', { user: 'alice' })
          let n = 0
          const sockets = await openMany(1000, 50, () => session.open(n++ % 2 === 0 ? a.base : b.base))
          const closed = closeFrames(sockets, performance.now())
          await session.request('/close-session', 'POST', {})
          const each = await closed
          times.push(...each)
          lasts.push(Math.max(...each))
          await closeAll(sockets)
        }
        const p99 = percentile(times, 99)
        return [{
          case: `${rounds} rounds, 500 sockets on each instance, node-redis`,
          value: p99,
          shown: `p50 ${ms(percentile(times, 50))}, p99 ${ms(p99)}`,
          detail: `last close frame p50 ${ms(median(lasts))}, worst ${ms(Math.max(...lasts))}; 1,000 close frames from two processes sharing 2 cores with the client`
        }]
      })
    }
  },
  {
    title: 'Lifecycle: revalidation store reads per interval, 1,000 sockets in 10 sessions',
    goal: { equal: 10 },
    async run (ctx) {
      // in this process: the session store is counted where it is called
      const Fastify = require('fastify')
      const { MemoryStore } = require('@fastify/session')
      const mod = require(join(__dirname, '..', 'dist', 'index.js'))
      let reads = 0
      class CountingStore extends MemoryStore {
        get (id, callback) { reads++; super.get(id, callback) }
      }
      const interval = 500
      const app = Fastify()
      await app.register(require('@fastify/cookie'))
      await app.register(require('@fastify/session'), { secret: 'a-secret-with-at-least-32-characters-for-tests', cookie: { secure: false }, store: new CountingStore() })
      await app.register(require('@fastify/websocket'))
      await app.register(mod.default ?? mod, { allowMissingOrigin: true, maxTokens: 100, revalidateInterval: interval })
      app.get('/chat', { websocket: true, guard: true }, () => {})
      await app.listen({ port: 0, host: '127.0.0.1' })
      try {
        const base = `http://127.0.0.1:${app.server.address().port}`
        const sessions = Array.from({ length: 10 }, () => new Session(base))
        // each session's cookie first: concurrent first requests would each start a session
        for (const session of sessions) await session.request('/websocket-token')
        let i = 0
        const sockets = await openMany(1000, 50, () => sessions[i++ % 10].open())
        const counts = []
        for (let k = 0; k < (ctx.quick ? 2 : 5); k++) {
          const before = reads
          await new Promise((resolve) => setTimeout(resolve, interval))
          counts.push(reads - before)
        }
        await closeAll(sockets)
        const value = median(counts)
        return [{ case: '10 sessions × 100 sockets', value, shown: String(value), detail: `reads in successive intervals: ${counts.join(', ')}` }]
      } finally {
        await app.close()
      }
    }
  },
  {
    title: 'Lifecycle: upgrade CPU with the lifecycle on against off (redisTokenStore), server CPU per flow',
    goal: { max: 1.02 },
    async run (ctx) {
      // bench/server.js's guard with redisTokenStore, the lifecycle on (the defaults) and off,
      // off twice for the A/A pair; each epoch fresh processes, spawned in a rotating order, so
      // that no variant always gets the same place on the machine; within an epoch the flows
      // take turns server by server (bench/measure.js)
      const epochs = ctx.quick ? 1 : 4
      const plan = { ...ctx.plan.flows, warmup: ctx.quick ? 1 : 4, rounds: ctx.quick ? 3 : 6, minRounds: 3, seconds: 30, count: ctx.quick ? 40 : 160 }
      const off = { variant: 'guard', guardOptions: { closeOnSessionEnd: false } }
      const variants = [['on', { variant: 'guard' }], ['off', off], ['off-2', off]]
      const cpu = { on: [], off: [], 'off-2': [] }
      const gc = { on: [], off: [], 'off-2': [] }
      let warmedUp = 0
      for (let e = 0; e < epochs; e++) {
        const servers = Object.fromEntries(variants.map((_, i) => variants[(i + e) % variants.length]))
        const result = await flows(ctx, `lifecycle-${e + 1}`, { logger: 'off', sessions: 'memory', tokenStore: 'redis' }, servers, plan)
        warmedUp = result.warmedUp
        for (const name of Object.keys(cpu)) {
          cpu[name].push(...result.cpu[name])
          gc[name].push(...result.gc[name])
        }
      }
      const aa = noise(cpu['off-2'], cpu.off)
      const value = ratio(cpu.on, cpu.off)
      return [{
        case: 'token request + upgrade + close, logger off, sessions in memory',
        value,
        shown: `${value.toFixed(3)}×`,
        detail: `medians: on ${median(cpu.on).toFixed(1)} µs, off ${median(cpu.off).toFixed(1)} µs per flow (of which GC: on ${median(gc.on).toFixed(1)} µs, off ${median(gc.off).toFixed(1)} µs); ${cpu.on.length} rounds in ${epochs} epochs, each server warmed up by ${warmedUp} flows; A/A (off-2/off) ${aa.median.toFixed(3)}×, noise ±${(aa.floor * 100).toFixed(1)}%`,
        noise: aa.floor
      }]
    }
  }
]

module.exports = figures

if (require.main === module) {
  // the figures need bench/run.js's context (its child processes, its redis-server)
  const { status } = require('node:child_process').spawnSync(process.execPath, [join(__dirname, 'run.js'), '--only', 'lifecycle', ...process.argv.slice(2)], { stdio: 'inherit' })
  process.exitCode = status ?? 1
}
