'use strict'
// The socket's life, in figures `{ title, goal, run }` (bench/figures.js's shape): heap per
// registered socket, closeSession of a session with 1,000 sockets over two instances, store
// reads of revalidation, and the CPU an upgrade costs with the lifecycle on against off.
// Servers are child processes (test/fixtures/lifecycle-instance.js, on the built package);
// the load generator is this process.
//
//   node bench/lifecycle.js [--quick]     (after `npm run build`)
const { spawn } = require('node:child_process')
const { join } = require('node:path')
const WebSocket = require('ws')
const { median, percentile } = require('./common')
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

const B = (v) => `${Math.round(v)} B`
const ms = (v) => `${v.toFixed(1)} ms`

const figures = [
  {
    title: 'Lifecycle: heap per registered guarded socket (lifecycle on minus off, one socket per session)',
    goal: { max: 200, unit: ' B' },
    async run (ctx) {
      const count = ctx.quick ? 500 : 2000
      const perSocket = async (guard, identify = true) => {
        const s = await server({ store: 'memory', identify, guard })
        try {
          const sessions = Array.from({ length: count }, () => new Session(s.base))
          for (const session of sessions) await session.request('/login', 'POST', { user: 'u' + Math.random() })
          // warm-up: every code path has run, every session exists
          await closeAll(await openMany(200, 50, () => sessions[Math.floor(Math.random() * count)].open()))
          const before = (await s.get('/heap')).heapUsed
          let i = 0
          const sockets = await openMany(count, 50, () => sessions[i++].open())
          const after = (await s.get('/heap')).heapUsed
          await closeAll(sockets)
          return (after - before) / count
        } finally {
          s.stop()
        }
      }
      const rows = []
      const off = await perSocket({ closeOnSessionEnd: false }, false)
      for (const [name, guard] of [['defaults (closeOnSessionEnd)', {}], ['everything on (identify, maxSocketLifetime, revalidateInterval)', { maxSocketLifetime: 3_600_000, revalidateInterval: 60_000 }]]) {
        const on = await perSocket(guard)
        rows.push({ case: name, value: on - off, shown: B(on - off), detail: `${B(on)} per open socket against ${B(off)} with the lifecycle off, ${count} sockets` })
      }
      return rows
    }
  },
  {
    title: 'Lifecycle: closeSession of a session with 1,000 sockets over two instances, time to each close frame',
    goal: { max: 250, unit: ' ms' },
    async run (ctx) {
      const rounds = ctx.quick ? 2 : 7
      return await withRedis(ctx, async (redis) => {
        const config = { redisUrl: redis.url, client: 'node-redis' }
        const [a, b] = await Promise.all([server(config), server(config)])
        try {
          const times = []
          const lasts = []
          for (let round = 0; round < rounds; round++) {
            const session = new Session(a.base)
            await session.request('/login', 'POST', { user: 'alice' })
            let n = 0
            const sockets = await openMany(1000, 50, () => session.open(n++ % 2 === 0 ? a.base : b.base))
            const started = performance.now()
            const closed = sockets.map((ws) => new Promise((resolve) => ws.once('close', () => resolve(performance.now() - started))))
            await session.request('/close-session', 'POST', {})
            const each = await Promise.all(closed)
            times.push(...each)
            lasts.push(Math.max(...each))
          }
          const p99 = percentile(times, 99)
          return [{
            case: `${rounds} rounds, 500 sockets on each instance, node-redis`,
            value: p99,
            shown: `p99 ${ms(p99)}`,
            detail: `p50 ${ms(percentile(times, 50))}; last close frame p50 ${ms(median(lasts))}, worst ${ms(Math.max(...lasts))}`
          }]
        } finally {
          a.stop()
          b.stop()
        }
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
      const rounds = ctx.quick ? 3 : 9
      const flows = ctx.quick ? 200 : 400
      return await withRedis(ctx, async (redis) => {
        const servers = {
          on: await server({ redisUrl: redis.url, client: 'node-redis', sessions: 'memory' }),
          off: await server({ redisUrl: redis.url, client: 'node-redis', sessions: 'memory', guard: { closeOnSessionEnd: false } }),
          'off-2': await server({ redisUrl: redis.url, client: 'node-redis', sessions: 'memory', guard: { closeOnSessionEnd: false } })
        }
        try {
          const names = Object.keys(servers)
          const sessions = Object.fromEntries(names.map((name) => [name, Array.from({ length: 16 }, () => new Session(servers[name].base))]))
          const flow = async (name, k) => {
            const ws = await sessions[name][k % 16].open()
            await closeAll([ws])
          }
          const cpu = Object.fromEntries(names.map((name) => [name, []]))
          for (let round = -1; round < rounds; round++) {
            // the servers take turns, in a rotating order, so that load on the machine falls on each alike
            const order = names.map((_, i) => names[(i + round + 1) % names.length])
            for (const name of order) {
              const before = (await servers[name].get('/heap')).cpu
              for (let k = 0; k < flows; k += 8) await Promise.all(Array.from({ length: 8 }, (_, j) => flow(name, k + j)))
              const after = (await servers[name].get('/heap')).cpu
              if (round >= 0) cpu[name].push((after.user + after.system - before.user - before.system) / flows)
            }
          }
          const ratios = cpu.on.map((v, i) => v / cpu.off[i])
          const aa = cpu['off-2'].map((v, i) => v / cpu.off[i])
          const value = median(ratios)
          return [{
            case: 'token request + upgrade + close, 8 in flight, sessions in memory',
            value,
            shown: `${value.toFixed(3)}×`,
            detail: `medians: on ${median(cpu.on).toFixed(1)} µs, off ${median(cpu.off).toFixed(1)} µs per flow; A/A (off-2/off) ${median(aa).toFixed(3)}×`,
            noise: Math.abs(median(aa) - 1)
          }]
        } finally {
          for (const s of Object.values(servers)) s.stop()
        }
      })
    }
  }
]

module.exports = figures

if (require.main === module) {
  const quick = process.argv.includes('--quick')
  ;(async () => {
    for (const figure of figures) {
      const rows = await figure.run({ quick })
      console.log(`${figure.title}\n   goal ${JSON.stringify(figure.goal)}`)
      for (const row of rows) console.log(`   - ${row.case}: ${row.shown}  (${row.detail})`)
    }
  })().catch((err) => {
    console.error(err)
    process.exitCode = 1
  })
}
