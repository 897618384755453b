'use strict'
// A bench figure for the Redis store by topology: consume latency p50/p99 against a plain GET
// to the same node on the same client in the same run (A B A B …), and what each consume
// costs on the wire: round trips (counted by a proxy in front of every node: a burst of bytes
// from the client after an answer) and commands (counted with MONITOR on every primary).
// Topologies: one redis-server; a 3-primary, 3-replica Cluster; one redis-server with a
// replica and `durability: { replicas: 1 }`. Clients: node-redis and ioredis.
//
// As a figure of bench/figures.js: `require('./redis-consume')` is `{ title, goal, run(ctx) }`,
// `run` resolving with rows `{ case, value, shown, detail }` (value: round trips per consume,
// checked against the goal; shown: the latency). For the three informative slots, one per
// topology: `run: consumeLatency('standalone')` (or 'cluster', or
// 'standalone, durability: { replicas: 1 }'). Alone: `node bench/redis-consume.js [--quick]`
// after `npm run build`, which prints the rows.
const { createHash, randomBytes } = require('node:crypto')
const { join } = require('node:path')
const redis = require('../scripts/redis')
const { median, percentile } = require('./common')

const HOST = '127.0.0.1'
const us = (v) => `${v.toFixed(0)} µs`

function record () {
  const token = randomBytes(32).toString('base64url')
  return { hash: createHash('sha256').update(token).digest('base64url'), expiresAt: Date.now() + 60_000, path: null }
}

/** A connected client of `library` on `nodes` (one standalone node, or a cluster's), through `proxies` when given. */
async function connect (library, topology, nodes, proxies) {
  // a node's own address -> the proxy in front of it
  const via = (port) => proxies === undefined ? port : proxies.get(port).port
  if (library === 'node-redis') {
    const { createClient, createCluster } = require('redis')
    const client = topology === 'cluster'
      ? createCluster({
        rootNodes: [{ url: `redis://${HOST}:${via(nodes[0].port)}` }],
        nodeAddressMap: (address) => {
          const port = Number(address.split(':').pop())
          return { host: HOST, port: via(port) }
        }
      })
      : createClient({ url: `redis://${HOST}:${via(nodes[0].port)}` })
    client.on('error', () => {})
    await client.connect()
    return { client, get: (key) => client.get(key), close: () => client.destroy() }
  }
  const { Redis, Cluster } = require('ioredis')
  const client = topology === 'cluster'
    ? new Cluster([{ host: HOST, port: via(nodes[0].port) }], {
      lazyConnect: true,
      natMap: Object.fromEntries(nodes.map((n) => [`${HOST}:${n.port}`, { host: HOST, port: via(n.port) }]))
    })
    : new Redis({ host: HOST, port: via(nodes[0].port), lazyConnect: true })
  client.on('error', () => {})
  await client.connect()
  return { client, get: (key) => client.get(key), close: () => client.disconnect() }
}

/** Round trips and commands per consume, each consume after an (uncounted) issue. */
async function wire (redisTokenStore, library, topology, nodes, durability, ops) {
  const proxies = new Map()
  for (const node of nodes) proxies.set(node.port, await redis.startProxy(node.port))
  const { client, close } = await connect(library, topology, nodes, proxies)
  const monitors = []
  try {
    const store = redisTokenStore({ client, prefix: 'bench-wire:', ...(durability ? { durability } : {}) })
    // scripts loaded on every node first: the first call on a node that lacks one costs an EVAL
    for (let i = 0; i < 64; i++) {
      const r = record()
      await store.issue(`warm-${i}`, r, 8)
      await store.consume(`warm-${i}`, r.hash, '/chat', Date.now())
    }
    for (const node of nodes) {
      if ((await redis.info(node.port, 'replication')).role === 'master') monitors.push(await redis.monitor(node.port))
    }
    const records = Array.from({ length: ops }, () => record())
    let trips = 0
    const from = monitors.map((m) => m.seen.length)
    const consumed = []
    for (let i = 0; i < ops; i++) {
      await store.issue(`id-${i}`, records[i], 8)
      const before = [...proxies.values()].reduce((n, p) => n + p.roundTrips, 0)
      const outcome = await store.consume(`id-${i}`, records[i].hash, '/chat', Date.now())
      trips += [...proxies.values()].reduce((n, p) => n + p.roundTrips, 0) - before
      if (outcome !== 'consumed') throw new Error(`consume answered ${outcome}`)
      consumed.push(`bench-wire:{id-${i}}`)
    }
    await Promise.all(monitors.map((m) => m.settle()))
    // the consumes' commands: the script names its key; WAIT follows it on the same connection
    let commands = 0
    monitors.forEach((m, i) => {
      for (const c of m.seen.slice(from[i])) {
        if (c.addr === 'lua') continue
        const name = c.args[0].toUpperCase()
        if (name === 'WAIT' || (name.startsWith('EVAL') && isConsume(c))) commands++
      }
    })
    return { roundTrips: trips / ops, commands: commands / ops }
  } finally {
    for (const m of monitors) m.close()
    await close()
    for (const p of proxies.values()) await p.close()
  }
}

// An issue and a consume are both a script on the session's key: EVALSHA sha 1 key, then the
// consume's hash, path and now, the issue's five arguments.
const isConsume = (c) => c.args.length === 4 + 3

/** Consume latency against a GET of a key in the same slot, alternating, on direct connections. */
async function latency (redisTokenStore, library, topology, nodes, durability, ops) {
  const { client, get, close } = await connect(library, topology, nodes)
  try {
    const store = redisTokenStore({ client, prefix: 'bench-lat:', ...(durability ? { durability } : {}) })
    const consume = []
    const plain = []
    const time = async (list, fn) => {
      const start = process.hrtime.bigint()
      await fn()
      list.push(Number(process.hrtime.bigint() - start) / 1000)
    }
    const warmup = Math.min(200, ops)
    for (let i = 0; i < ops + warmup; i++) {
      const r = record()
      const id = `id-${i}`
      await store.issue(id, r, 8)
      // the same slot as the consume's key: the GET goes to the same node
      const sibling = `bench-lat:{${id}}:none`
      if (i < warmup) {
        await store.consume(id, r.hash, '/chat', Date.now())
        await get(sibling)
        continue
      }
      await time(consume, () => store.consume(id, r.hash, '/chat', Date.now()))
      await time(plain, () => get(sibling))
    }
    return {
      consume: { p50: median(consume), p99: percentile(consume, 99) },
      get: { p50: median(plain), p99: percentile(plain, 99) }
    }
  } finally {
    await close()
  }
}

const TOPOLOGIES = {
  standalone: async () => {
    const server = await redis.startRedis()
    return { nodes: [server], durability: null, stop: () => server.stop() }
  },
  cluster: async () => {
    const cluster = await redis.startCluster({ primaries: 3, replicas: 1 })
    return { nodes: cluster.nodes, durability: null, stop: () => cluster.stop() }
  },
  'standalone, durability: { replicas: 1 }': async () => {
    const primary = await redis.startRedis()
    const replica = await redis.startRedis(['--replicaof', HOST, String(primary.port)])
    await redis.replicasOnline(primary.port)
    return {
      nodes: [primary],
      durability: { replicas: 1, timeout: 1000 },
      stop: async () => { await replica.stop(); await primary.stop() }
    }
  }
}

/** Rows for one topology, one per client library: round trips per consume as the value. */
async function measureTopology (ctx, name) {
  const { redisTokenStore } = ctx.package()
  const ops = ctx.quick ? 300 : 2000
  const wireOps = ctx.quick ? 50 : 200
  const topology = name === 'cluster' ? 'cluster' : 'standalone'
  const setup = await TOPOLOGIES[name]()
  const rows = []
  try {
    for (const library of ['node-redis', 'ioredis']) {
      const w = await wire(redisTokenStore, library, topology, setup.nodes, setup.durability, wireOps)
      const l = await latency(redisTokenStore, library, topology, setup.nodes, setup.durability, ops)
      rows.push({
        case: `${name}, ${library}`,
        value: w.roundTrips,
        latency: l,
        shown: `${w.roundTrips.toFixed(2)} (${us(l.consume.p50)} / ${us(l.consume.p99)}; GET ${us(l.get.p50)} / ${us(l.get.p99)}; ${(l.consume.p50 / l.get.p50).toFixed(2)}× / ${(l.consume.p99 / l.get.p99).toFixed(2)}×)`,
        detail: `${w.commands.toFixed(2)} commands per consume on the primaries (MONITOR); latency over ${ops} consumes, each followed by a GET on the same client and node`
      })
    }
  } finally {
    await setup.stop()
  }
  return rows
}

const figure = {
  title: 'Redis store by topology: round trips per consume (consume latency p50 / p99 against a GET in the same run)',
  goal: { equal: 1, unit: ' round trip' },
  async run (ctx) {
    const rows = []
    for (const name of Object.keys(TOPOLOGIES)) rows.push(...await measureTopology(ctx, name))
    return rows
  }
}

/**
 * `run` for an informative figure of one topology ('standalone', 'cluster' or
 * 'standalone, durability: { replicas: 1 }'): rows whose value is the consume's p50 over the
 * GET's, shown with both percentiles and the round trips.
 */
function consumeLatency (name) {
  if (TOPOLOGIES[name] === undefined) throw new Error(`no topology ${name}: ${Object.keys(TOPOLOGIES).join(', ')}`)
  return async (ctx) => (await measureTopology(ctx, name)).map((row) => ({
    case: row.case.slice(name.length + 2),
    value: row.latency.consume.p50 / row.latency.get.p50,
    shown: `${us(row.latency.consume.p50)} / ${us(row.latency.consume.p99)} (GET ${us(row.latency.get.p50)} / ${us(row.latency.get.p99)}; ${(row.latency.consume.p50 / row.latency.get.p50).toFixed(2)}× / ${(row.latency.consume.p99 / row.latency.get.p99).toFixed(2)}×)`,
    detail: `${row.value.toFixed(2)} round trips and ${row.detail}`
  }))
}

module.exports = figure
module.exports.consumeLatency = consumeLatency

if (require.main === module) {
  const quick = process.argv.includes('--quick')
  const mod = require(join(__dirname, '..', 'dist', 'index.js'))
  figure.run({ quick, package: () => mod }).then((rows) => {
    console.log(`${figure.title} (goal: = ${figure.goal.equal}${figure.goal.unit})`)
    for (const row of rows) console.log(`- ${row.case}: ${row.shown}\n    ${row.detail}`)
  }, (err) => {
    console.error(err)
    process.exitCode = 1
  })
}
