'use strict'
// The guard's own per-flow work with tokens beside @fastify/session's MemoryStore, in this
// process, on warm code: what a flow runs of it, function by function, in a loop, so that
// each row is a few hundred nanoseconds measured over many calls rather than samples of a
// profiler. Beside the server CPU of a whole flow (figures 3 and 27), it says how much of the
// guard's cost above the baseline is its own code, and how much is what any hook costs.
//   node bench/hot-path.js   (BENCH_PACKAGE_DIR=dir, or dist/ of this checkout)
const { join } = require('node:path')
const { ORIGIN, median } = require('./common')

const SESSIONS = 16

/** ns per call of `fn(i)` over `n` calls, after as many calls of warm-up. */
function nsPerCall (n, fn) {
  for (let i = 0; i < n; i++) fn(i)
  const start = process.hrtime.bigint()
  for (let i = 0; i < n; i++) fn(i)
  return Number(process.hrtime.bigint() - start) / n
}

function hotPath (libDir, { calls = 200_000, rounds = 5 } = {}) {
  const tokens = require(join(libDir, 'tokens.js'))
  const { tokenTable } = require(join(libDir, 'stores', 'memory.js'))
  const { derivedId } = require(join(libDir, 'session.js'))
  const { compileOrigins, upgradeOrigin } = require(join(libDir, 'origin.js'))
  const { Registry, SocketEntry } = require(join(libDir, 'sockets', 'registry.js'))

  const table = tokenTable(30_000, Infinity)
  const ids = Array.from({ length: SESSIONS }, (_, i) => `wsg-local:${String(i).padStart(22, '0')}`)
  const sessions = ids.map((_, i) => ({ sessionId: `session-id-${String(i).padStart(21, '0')}` }))
  const check = compileOrigins(ORIGIN, 'origins', 1000)
  const request = { headers: { origin: ORIGIN } }
  const registry = new Registry()

  const token = tokens.generateToken()
  const url = `/chat?token=${token}`
  const steps = {
    // the upgrade: the origin, the one token presented, the session's group, its registry entry
    origin: () => upgradeOrigin(check, false, request),
    present: () => tokens.presentedToken(url, undefined, 'token', 'websocket-guard.'),
    group: (i) => derivedId(sessions[i % SESSIONS], 'group:'),
    register: (i) => {
      const entry = new SocketEntry(i)
      registry.add(entry, ids[i % SESSIONS])
      registry.remove(entry)
    },
    // the token route's token, its hash and record, into the session's local table; then, at
    // the upgrade, the presented token hashed, compared and deleted: one session's flow
    'issue + consume': (i) => {
      const id = ids[i % SESSIONS]
      const { issued, record } = tokens.newToken(60_000, null, Date.now())
      table.issue(id, record, 8)
      const outcome = table.consume(id, tokens.hashToken(issued.token), '/chat', Date.now())
      if (outcome !== 'consumed') throw new Error(`hot path: ${outcome}`)
    }
  }
  // each step's median over rounds
  const per = Object.fromEntries(Object.keys(steps).map((name) => [name, []]))
  for (let r = 0; r < rounds; r++) {
    for (const [name, fn] of Object.entries(steps)) per[name].push(nsPerCall(calls, fn))
  }
  table.close()
  const ns = Object.fromEntries(Object.entries(per).map(([name, v]) => [name, median(v)]))
  return { ns, total: Object.values(ns).reduce((a, b) => a + b, 0) }
}

module.exports = { hotPath }

if (require.main === module) {
  const dir = process.env.BENCH_PACKAGE_DIR ?? join(__dirname, '..', 'dist')
  const { ns, total } = hotPath(join(dir, 'lib'))
  for (const [name, v] of Object.entries(ns)) console.log(`${name.padEnd(10)} ${v.toFixed(0)} ns`)
  console.log(`total      ${(total / 1000).toFixed(2)} µs per flow`)
}
