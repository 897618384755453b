'use strict'
/*
 * The cluster example: Redis, two instances of examples/cluster/instance.js in their own
 * processes, and a round-robin balancer in front of them.
 *
 *   npm run build && node examples/cluster/index.js
 *   open http://127.0.0.1:3000/
 *
 * Environment: REDIS_URL (default: starts its own redis-server on a free port, no
 * persistence), PORT (the balancer's, default 3000), INSTANCES (default 2), TOKEN_CLIENT
 * ('redis' or 'ioredis', default 'redis'), SESSION_SECRET (default: a random one, shared by
 * the instances).
 */
const { fork, spawn } = require('node:child_process')
const { randomBytes } = require('node:crypto')
const { createServer } = require('node:net')
const { join } = require('node:path')
const { startBalancer } = require('./balancer')

const HOST = '127.0.0.1'

function freePort () {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, HOST, () => {
      const { port } = server.address()
      server.close(() => resolve(port))
    })
  })
}

/** A throwaway redis-server: no persistence, loopback only. */
async function startRedis () {
  const port = await freePort()
  const child = spawn('redis-server', ['--port', String(port), '--bind', HOST, '--save', '', '--appendonly', 'no'], { stdio: ['ignore', 'pipe', 'inherit'] })
  await new Promise((resolve, reject) => {
    let output = ''
    child.once('error', (err) => reject(new Error(`cannot start redis-server (set REDIS_URL to use a running Redis): ${err.message}`)))
    child.once('exit', (code) => reject(new Error(`redis-server exited with ${code}: ${output.slice(-300)}`)))
    child.stdout.on('data', (chunk) => {
      output += chunk
      if (output.includes('Ready to accept connections')) {
        child.stdout.resume()
        resolve()
      }
    })
  })
  child.removeAllListeners('exit')
  return { url: `redis://${HOST}:${port}`, stop: () => { child.kill('SIGKILL') } }
}

function startInstanceProcess (name, env) {
  // plain node processes: no flags of the parent (an --inspect port, a test runner's loaders)
  const child = fork(join(__dirname, 'instance.js'), [], { execArgv: [], env: { ...process.env, ...env, INSTANCE: name, PORT: '0' } })
  return new Promise((resolve, reject) => {
    child.once('message', ({ port }) => resolve({ name, host: HOST, port, child }))
    child.once('exit', (code) => reject(new Error(`instance ${name} exited with ${code}`)))
  })
}

/**
 * Starts everything. Options: `port` (the balancer's; 0 picks a free one), `redisUrl`,
 * `instances`, `tokenClient`, `sessionSecret`. Resolves with `{ url, instances, close() }`.
 */
async function startCluster (options = {}) {
  const { port = 3000, instances = 2, tokenClient = 'redis', sessionSecret = randomBytes(32).toString('base64url') } = options
  const redis = options.redisUrl === undefined ? await startRedis() : { url: options.redisUrl, stop () {} }
  const started = []
  let balancer
  async function close () {
    await new Promise((resolve) => balancer === undefined ? resolve() : balancer.close(resolve))
    await Promise.all(started.map(({ child }) => new Promise((resolve) => {
      if (child.exitCode !== null) return resolve()
      child.once('exit', resolve)
      child.kill('SIGTERM')
    })))
    redis.stop()
  }
  try {
    for (let i = 0; i < instances; i++) {
      started.push(await startInstanceProcess(String.fromCharCode(97 + i), { REDIS_URL: redis.url, SESSION_SECRET: sessionSecret, TOKEN_CLIENT: tokenClient }))
    }
    balancer = await startBalancer({ port, host: HOST, backends: started })
  } catch (err) {
    await close()
    throw err
  }
  const address = balancer.address()
  return { url: `http://${HOST}:${address.port}`, redisUrl: redis.url, instances: started.map(({ name, port }) => ({ name, url: `http://${HOST}:${port}` })), close }
}

module.exports = { startCluster }

if (require.main === module) {
  startCluster({
    port: Number(process.env.PORT ?? 3000),
    redisUrl: process.env.REDIS_URL,
    instances: Number(process.env.INSTANCES ?? 2),
    tokenClient: process.env.TOKEN_CLIENT,
    sessionSecret: process.env.SESSION_SECRET
  }).then((cluster) => {
    console.log(`redis:     ${cluster.redisUrl}`)
    for (const instance of cluster.instances) console.log(`instance ${instance.name}: ${instance.url}`)
    console.log(`balancer:  ${cluster.url}/   <- open this one; Ctrl-C stops everything`)
    for (const signal of ['SIGINT', 'SIGTERM']) {
      process.once(signal, () => { cluster.close().catch((err) => { console.error(err); process.exitCode = 1 }) })
    }
  }, (err) => {
    console.error(err.message)
    process.exitCode = 1
  })
}
