'use strict'
// Figure 4: the Redis store against a real redis-server on a free loopback port.
// Round trips are counted by a TCP relay between client and server: one round trip is a
// burst of bytes from the client that follows an answer (or opens the connection). That
// counts what the network sees, whichever client library is used and however it batches.
// Latency is measured on a direct connection, alternating consume with a plain GET (one
// round trip of the same client) as its baseline.
const net = require('node:net')
const { createHash, randomBytes } = require('node:crypto')
const { loadPackage, median, percentile, serve } = require('./common')
// the one launcher of the tests and the bench: free loopback port, no persistence, killed with this process
const { REDIS_SERVER, MISSING, startRedis } = require('../scripts/redis')

/** A relay to `port` that counts client round trips. */
async function countingRelay (port) {
  const counter = { trips: 0 }
  const server = net.createServer((client) => {
    const upstream = net.connect(port, '127.0.0.1')
    let answered = true
    client.on('data', (chunk) => {
      if (answered) counter.trips++
      answered = false
      upstream.write(chunk)
    })
    upstream.on('data', (chunk) => {
      answered = true
      client.write(chunk)
    })
    client.on('close', () => upstream.destroy())
    upstream.on('close', () => client.destroy())
    client.on('error', () => {})
    upstream.on('error', () => {})
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  return { counter, port: server.address().port, close: () => new Promise((resolve) => server.close(resolve)) }
}

function record (path = null) {
  const token = randomBytes(32).toString('base64url')
  return { hash: createHash('sha256').update(token).digest('base64url'), expiresAt: Date.now() + 60_000, path }
}

const clients = {
  async 'node-redis' (port) {
    const { createClient } = require('redis')
    const client = createClient({ url: `redis://127.0.0.1:${port}` })
    client.on('error', () => {})
    await client.connect()
    return { client, get: (key) => client.get(key), flushScripts: () => client.sendCommand(['SCRIPT', 'FLUSH']), quit: () => client.quit() }
  },
  async ioredis (port) {
    const IORedis = require('ioredis')
    const client = new IORedis({ port, host: '127.0.0.1', lazyConnect: true })
    client.on('error', () => {})
    await client.connect()
    return { client, get: (key) => client.get(key), flushScripts: () => client.script('FLUSH'), quit: () => client.quit() }
  }
}

async function roundTrips (redisTokenStore, redisPort, name, ops) {
  const relay = await countingRelay(redisPort)
  const { client, flushScripts, quit } = await clients[name](relay.port)
  try {
    const store = redisTokenStore({ client, prefix: 'bench-rt:' })
    // the first call of each script on a server that lacks it loads it (NOSCRIPT, then EVAL)
    await flushScripts()
    const first = { issue: 0, consume: 0 }
    let before = relay.counter.trips
    const warm = record()
    await store.issue('warm', warm, 8)
    first.issue = relay.counter.trips - before
    before = relay.counter.trips
    await store.consume('warm', warm.hash, '/chat', Date.now())
    first.consume = relay.counter.trips - before

    const ids = Array.from({ length: ops }, (_, i) => `id-${i}`)
    const records = ids.map(() => record())
    before = relay.counter.trips
    for (let i = 0; i < ops; i++) await store.issue(ids[i], records[i], 8)
    const issue = (relay.counter.trips - before) / ops
    before = relay.counter.trips
    for (let i = 0; i < ops; i++) {
      const outcome = await store.consume(ids[i], records[i].hash, '/chat', Date.now())
      if (outcome !== 'consumed') throw new Error(`consume answered ${outcome}`)
    }
    const consume = (relay.counter.trips - before) / ops
    return { issue, consume, first }
  } finally {
    await quit()
    await relay.close()
  }
}

async function latency (redisTokenStore, redisPort, name, ops) {
  const { client, get, quit } = await clients[name](redisPort)
  try {
    const store = redisTokenStore({ client, prefix: 'bench-lat:' })
    const consume = []
    const plain = []
    const time = async (list, fn) => {
      const start = process.hrtime.bigint()
      await fn()
      list.push(Number(process.hrtime.bigint() - start) / 1000)
    }
    for (let i = 0; i < ops + 200; i++) {
      const r = record()
      const id = `id-${i}`
      await store.issue(id, r, 8)
      // A B A B: a consume, then the baseline (a GET on the same connection)
      if (i < 200) {
        await store.consume(id, r.hash, '/chat', Date.now())
        await get('bench-lat:none')
        continue
      }
      await time(consume, () => store.consume(id, r.hash, '/chat', Date.now()))
      await time(plain, () => get('bench-lat:none'))
    }
    return {
      consume: { p50: median(consume), p99: percentile(consume, 99) },
      get: { p50: median(plain), p99: percentile(plain, 99) }
    }
  } finally {
    await quit()
  }
}

serve({
  async run ({ quick }) {
    const rows = []
    const notes = []
    const skip = (why) => {
      notes.push(`figure 4 skipped: ${why}`)
      rows.push({ figure: '4. Redis store', value: `skipped: ${why}`, baseline: '', ratio: '', goal: '', met: null })
      return { rows, notes }
    }
    const { mod } = loadPackage()
    if (typeof mod.redisTokenStore !== 'function') return skip('this build exports no redisTokenStore')
    if (REDIS_SERVER === null) return skip(MISSING)

    const server = await startRedis()
    const { port } = server
    try {
      for (const name of ['node-redis', 'ioredis']) {
        const rt = await roundTrips(mod.redisTokenStore, port, name, quick ? 50 : 200)
        notes.push(`${name}: the first issue and consume after SCRIPT FLUSH took ${rt.first.issue} and ${rt.first.consume} round trips (script loading)`)
        rows.push({ figure: `4. Redis store (${name}): round trips per issue`, value: rt.issue.toFixed(2), baseline: '1', ratio: rt.issue, goal: '= 1', met: rt.issue === 1 })
        rows.push({ figure: `4. Redis store (${name}): round trips per consume`, value: rt.consume.toFixed(2), baseline: '1', ratio: rt.consume, goal: '= 1', met: rt.consume === 1 })
      }
      for (const name of ['node-redis', 'ioredis']) {
        const l = await latency(mod.redisTokenStore, port, name, quick ? 500 : 3000)
        const us = (v) => `${v.toFixed(0)} µs`
        rows.push({
          figure: `4. Redis store (${name}): consume latency p50 / p99 (baseline: a GET)`,
          value: `${us(l.consume.p50)} / ${us(l.consume.p99)}`,
          baseline: `${us(l.get.p50)} / ${us(l.get.p99)}`,
          ratio: `${(l.consume.p50 / l.get.p50).toFixed(2)}× / ${(l.consume.p99 / l.get.p99).toFixed(2)}×`,
          goal: '(loopback)',
          met: null
        })
      }
    } finally {
      await server.stop()
    }
    return { rows, notes }
  }
})
