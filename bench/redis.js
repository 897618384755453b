'use strict'
// Redis for the bench: the redis-server it starts, and the Redis store's round trips.
// Round trips are counted by a TCP relay between client and server: one round trip is a
// burst of bytes from the client that follows an answer (or opens the connection). That
// counts what the network sees, whichever client library is used and however it batches.
const { spawn } = require('node:child_process')
const { accessSync, constants } = require('node:fs')
const net = require('node:net')
const { delimiter, join } = require('node:path')
const { createHash, randomBytes } = require('node:crypto')

function onPath (name) {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir === '') continue
    try {
      accessSync(join(dir, name), constants.X_OK)
      return join(dir, name)
    } catch {}
  }
  return null
}

async function freePort () {
  const server = net.createServer()
  await new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', resolve)
  })
  const { port } = server.address()
  await new Promise((resolve) => server.close(resolve))
  return port
}

function spawnRedis (bin, port, args) {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--protected-mode', 'no', '--logfile', '', ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    let output = ''
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`redis-server did not start: ${output}`)) }, 10_000)
    child.stdout.on('data', (chunk) => {
      output += chunk
      if (output.includes('Ready to accept connections')) {
        clearTimeout(timer)
        child.stdout.resume()
        resolve(child)
      }
    })
    child.stderr.on('data', (chunk) => { output += chunk })
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`redis-server exited (${code}): ${output}`)) })
  })
}

/**
 * A redis-server of its own on a free loopback port: `{ port, url, stop() }`. The one place
 * the bench launches Redis, with the signature of scripts/redis.js's startRedis, so that it
 * can become that launcher in one line.
 */
async function startRedis (args = []) {
  const bin = onPath('redis-server')
  if (bin === null) throw new Error('redis-server is not on PATH (Debian: apt-get install redis-server)')
  const port = await freePort()
  const child = await spawnRedis(bin, port, args)
  const exited = new Promise((resolve) => child.once('exit', resolve))
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    async stop () {
      child.kill('SIGKILL')
      await exited
    }
  }
}

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
    return { client, flushScripts: () => client.sendCommand(['SCRIPT', 'FLUSH']), quit: () => client.quit() }
  },
  async ioredis (port) {
    const IORedis = require('ioredis')
    const client = new IORedis({ port, host: '127.0.0.1', lazyConnect: true })
    client.on('error', () => {})
    await client.connect()
    return { client, flushScripts: () => client.script('FLUSH'), quit: () => client.quit() }
  }
}

/** Round trips per issue and per consume of `redisTokenStore` through client `name`. */
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

module.exports = { startRedis, roundTrips }
