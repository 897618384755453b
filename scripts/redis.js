'use strict'
// Real redis-servers for the tests and the bench: standalone, a Cluster, a primary with a
// replica and Sentinels, and a TCP proxy to hold a replication link. Every server listens on
// a free port of 127.0.0.1, keeps nothing on disk, and dies with this process however this
// process ends (a SIGKILL included: see `spawnServer`).
//
// Plain CommonJS with no dependency, so that the TypeScript tests and the JavaScript bench
// load the same file; `redis.d.ts` next to it types it.
const { spawn } = require('node:child_process')
const { accessSync, constants, mkdtempSync, rmSync, writeFileSync } = require('node:fs')
const net = require('node:net')
const { tmpdir } = require('node:os')
const { delimiter, join } = require('node:path')

const HOST = '127.0.0.1'

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

const REDIS_SERVER = onPath('redis-server')
const REDIS_CLI = onPath('redis-cli')
const MISSING = 'redis-server is not on PATH (Debian: apt-get install redis-server)'

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

async function freePort () {
  const server = net.createServer()
  await new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, HOST, resolve)
  })
  const { port } = server.address()
  await new Promise((resolve) => server.close(resolve))
  return port
}

// ---------------------------------------------------------------------------------------
// A minimal RESP client, for setting servers up and waiting on them without a library.

function parseReply (buf, at) {
  const end = buf.indexOf('\r\n', at)
  if (end === -1) return null
  const type = String.fromCharCode(buf[at])
  const line = buf.toString('utf8', at + 1, end)
  const next = end + 2
  switch (type) {
    case '+': return { value: line, next }
    case '-': return { value: Object.assign(new Error(line), { reply: true }), next }
    case ':': return { value: Number(line), next }
    case '$': {
      const length = Number(line)
      if (length < 0) return { value: null, next }
      if (buf.length < next + length + 2) return null
      return { value: buf.toString('utf8', next, next + length), next: next + length + 2 }
    }
    case '*': {
      const count = Number(line)
      if (count < 0) return { value: null, next }
      const items = []
      let pos = next
      for (let i = 0; i < count; i++) {
        const item = parseReply(buf, pos)
        if (item === null) return null
        items.push(item.value)
        pos = item.next
      }
      return { value: items, next: pos }
    }
    default: throw new Error(`unexpected RESP type ${JSON.stringify(type)}`)
  }
}

function encode (args) {
  let out = `*${args.length}\r\n`
  for (const arg of args) {
    const s = String(arg)
    out += `$${Buffer.byteLength(s)}\r\n${s}\r\n`
  }
  return out
}

/**
 * Sends one command on a fresh connection and resolves with its reply; an error reply
 * rejects. Gives up after `timeout` ms.
 */
function command (port, args, { timeout = 5000 } = {}) {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, HOST)
    let buf = Buffer.alloc(0)
    const timer = setTimeout(() => {
      socket.destroy()
      reject(new Error(`redis ${port}: no answer to ${args[0]} within ${timeout} ms`))
    }, timeout)
    timer.unref()
    const done = (err, value) => {
      clearTimeout(timer)
      socket.destroy()
      if (err) reject(err)
      else resolve(value)
    }
    socket.once('error', (err) => done(err))
    socket.once('connect', () => socket.write(encode(args)))
    socket.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk])
      let reply
      try {
        reply = parseReply(buf, 0)
      } catch (err) {
        done(err)
        return
      }
      if (reply === null) return
      if (reply.value instanceof Error) done(reply.value)
      else done(null, reply.value)
    })
  })
}

/** `INFO section` as an object of its `name:value` lines. */
async function info (port, section) {
  const text = await command(port, ['INFO', section])
  const out = {}
  for (const line of text.split('\r\n')) {
    const colon = line.indexOf(':')
    if (colon > 0) out[line.slice(0, colon)] = line.slice(colon + 1)
  }
  return out
}

/** Polls `check` until it resolves truthy; rejects with `what` after `limit` ms. */
async function waitFor (what, check, { limit = 20_000, every = 25 } = {}) {
  const end = Date.now() + limit
  let last
  for (;;) {
    try {
      const value = await check()
      if (value) return value
    } catch (err) {
      last = err
    }
    if (Date.now() > end) {
      throw new Error(`${what}: still not true after ${limit} ms${last ? ` (last error: ${last.message})` : ''}`)
    }
    await sleep(every)
  }
}

/**
 * Waits until the server on `port` counts `count` replicas as online. A replica whose link
 * is up is not yet counted by WAIT: a diskless sync puts it online at its first REPLCONF ACK,
 * which it sends once a second.
 */
function replicasOnline (port, count = 1, options) {
  return waitFor(`${count} replica(s) of ${port} online`, async () => {
    const repl = await info(port, 'replication')
    return Object.keys(repl).filter((k) => /^slave\d+$/.test(k) && repl[k].includes('state=online')).length >= count
  }, options)
}

// ---------------------------------------------------------------------------------------
// Processes.

// Killed synchronously when this process exits normally; the watcher below covers the rest.
const running = new Set()
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL')
})

// Run through `sh`, which keeps a copy of the stdin pipe for a background watcher and then
// execs the server (same pid, so signals and exit events are the server's own). When this
// process dies by any means, the pipe's write end closes, `read` returns, and the watcher
// kills the server: no redis-server outlives a test run that timed out or was killed.
const WRAPPER = 'exec 3<&0; (read -r _ <&3; kill -9 $$ 2>/dev/null) & exec "$0" "$@" 3<&- </dev/null'

function spawnServer (bin, args, ready) {
  return new Promise((resolve, reject) => {
    const child = spawn('sh', ['-c', WRAPPER, bin, ...args], { stdio: ['pipe', 'pipe', 'pipe'] })
    running.add(child)
    let log = ''
    const keep = (chunk) => {
      // the last few kilobytes, for the error message of a server that failed
      log = (log + chunk.toString()).slice(-8192)
    }
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`redis-server ${args.join(' ')} was not ready within 10 s: ${log.slice(-1000)}`))
    }, 10_000)
    timer.unref()
    const onData = (chunk) => {
      keep(chunk)
      if (ready.test(log)) {
        clearTimeout(timer)
        child.off('exit', onEarlyExit)
        resolve(child)
      }
    }
    const onEarlyExit = (code, signal) => {
      clearTimeout(timer)
      reject(new Error(`redis-server exited (${code ?? signal}) before it was ready: ${log.slice(-1000)}`))
    }
    child.stdout.on('data', onData)
    child.stderr.on('data', keep)
    child.once('exit', onEarlyExit)
    child.once('exit', () => {
      running.delete(child)
      child.stdin.destroy()
    })
    child.once('error', reject)
    child.log = () => log
  })
}

function killChild (child) {
  if (child === null || child.exitCode !== null || child.signalCode !== null) return Promise.resolve()
  return new Promise((resolve) => {
    child.once('exit', () => resolve())
    // SIGKILL ends a stopped (SIGSTOP) process too
    child.kill('SIGKILL')
  })
}

const BASE_ARGS = [
  '--bind', HOST, '--protected-mode', 'no', '--save', '', '--appendonly', 'no',
  '--logfile', '', '--loglevel', 'notice',
  // a replica's full sync streams straight from memory, at once, and writes no file
  '--repl-diskless-sync', 'yes', '--repl-diskless-sync-delay', '0', '--repl-diskless-load', 'on-empty-db'
]

/**
 * Starts a redis-server on a free port with `args` added (for instance
 * `['--replicaof', '127.0.0.1', String(port)]`). `stop()` kills it and removes its
 * directory; `kill()` SIGKILLs it and `restart(args?)` starts it again, empty, on the same
 * port; `pause()`/`resume()` SIGSTOP/SIGCONT it.
 */
async function startRedis (args = [], { ports = 1 } = {}) {
  if (REDIS_SERVER === null) throw new Error(MISSING)
  const dir = mkdtempSync(join(tmpdir(), 'ws-guard-redis-'))
  let child = null
  let port = 0
  let extra = []
  let current = args
  const launch = () => spawnServer(REDIS_SERVER, ['--port', String(port), '--dir', dir, ...BASE_ARGS, ...extra, ...current], /Ready to accept connections/)
  for (let attempt = 0; child === null; attempt++) {
    port = await freePort()
    // a cluster node also needs its bus port
    extra = ports === 2 ? ['--cluster-port', String(await freePort())] : []
    try {
      child = await launch()
    } catch (err) {
      // another process may have taken a port in between: try others
      if (attempt === 4) throw err
    }
  }
  let stopped = false
  return {
    host: HOST,
    port,
    url: `redis://${HOST}:${port}`,
    get process () { return child },
    get log () { return child === null ? '' : child.log() },
    command: (...cmd) => command(port, cmd),
    async stop () {
      stopped = true
      await killChild(child)
      rmSync(dir, { recursive: true, force: true })
    },
    async kill () {
      await killChild(child)
    },
    async restart (newArgs = current) {
      if (stopped) throw new Error('restart after stop')
      await killChild(child)
      current = newArgs
      child = await launch()
    },
    pause () {
      child?.kill('SIGSTOP')
    },
    resume () {
      child?.kill('SIGCONT')
    }
  }
}

/** Stops every server in `list`, whatever fails. */
async function stopAll (list) {
  await Promise.all(list.map((s) => s.stop().catch(() => {})))
}

// ---------------------------------------------------------------------------------------
// Cluster.

/** `CLUSTER NODES` as `{ id, port, flags, master, slots }` rows. */
async function clusterNodes (port) {
  const text = await command(port, ['CLUSTER', 'NODES'])
  return text.trim().split('\n').map((line) => {
    const [id, addr, flags, master, , , , , ...slots] = line.split(' ')
    return { id, port: Number(addr.split('@')[0].split(':')[1]), flags: flags.split(','), master, slots }
  })
}

/**
 * A Redis Cluster of `primaries` primaries with `replicas` replicas each, made by
 * `redis-cli --cluster create` and ready: every node agrees on every node, `cluster_state`
 * is `ok` everywhere, and every replica is in sync with its primary.
 */
async function startCluster ({ primaries = 3, replicas = 1, args = [] } = {}) {
  if (REDIS_CLI === null) throw new Error('redis-cli is not on PATH (Debian: apt-get install redis-tools)')
  const count = primaries * (1 + replicas)
  const nodeArgs = [
    '--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf',
    // how long before a node is deemed failed: short, but not so short that a loaded
    // machine fails nodes on its own
    '--cluster-node-timeout', '2000', ...args
  ]
  const nodes = await Promise.all(Array.from({ length: count }, () => startRedis(nodeArgs, { ports: 2 })))
  try {
    await new Promise((resolve, reject) => {
      const cli = spawn(REDIS_CLI, ['--cluster', 'create', ...nodes.map((n) => `${HOST}:${n.port}`),
        '--cluster-replicas', String(replicas), '--cluster-yes'], { stdio: ['ignore', 'pipe', 'pipe'] })
      let out = ''
      cli.stdout.on('data', (c) => { out += c })
      cli.stderr.on('data', (c) => { out += c })
      cli.once('error', reject)
      // 'close', not 'exit': the output may still be in the pipe when the process exits
      cli.once('close', (code) => {
        if (code === 0 && out.includes('All 16384 slots covered')) resolve()
        else reject(new Error(`redis-cli --cluster create failed (${code}): ${out.slice(-2000)}`))
      })
    })
    await waitFor('cluster ready', async () => {
      for (const node of nodes) {
        const text = await command(node.port, ['CLUSTER', 'INFO'])
        if (!/cluster_state:ok/.test(text) || !new RegExp(`cluster_known_nodes:${count}\\b`).test(text)) return false
        const rows = await clusterNodes(node.port)
        if (rows.some((r) => r.flags.some((f) => /fail|handshake|noaddr/.test(f)))) return false
        // a node learns by gossip that another one became a replica: until then it is an
        // empty primary in its view
        if (rows.filter((r) => r.flags.includes('slave')).length !== primaries * replicas) return false
        const repl = await info(node.port, 'replication')
        if (repl.role === 'slave' && repl.master_link_status !== 'up') return false
      }
      return true
    })
    for (const node of nodes) {
      if ((await info(node.port, 'replication')).role === 'master') await replicasOnline(node.port, replicas)
    }
  } catch (err) {
    await stopAll(nodes)
    throw err
  }
  return {
    nodes,
    /** the nodes as node-redis `rootNodes` / ioredis `Cluster` start nodes */
    startNodes: nodes.map((n) => ({ host: HOST, port: n.port })),
    /** the primary and replicas currently serving `slot`, as seen by `node` (default: the first) */
    async shard (slot, via = nodes[0]) {
      const rows = await clusterNodes(via.port)
      const primary = rows.find((r) => r.flags.includes('master') && r.slots.some((range) => {
        const [from, to = from] = range.split('-').map(Number)
        return slot >= from && slot <= to
      }))
      if (primary === undefined) throw new Error(`no primary serves slot ${slot}`)
      const byPort = (port) => nodes.find((n) => n.port === port)
      return {
        primary: byPort(primary.port),
        replicas: rows.filter((r) => r.master === primary.id && !r.flags.some((f) => /fail/.test(f))).map((r) => byPort(r.port))
      }
    },
    /**
     * Sends `CLUSTER FAILOVER` to a replica of `slot`'s primary and resolves once the replica
     * has accepted it, with `{ from, to, done }`: `done` resolves once every node sees the
     * replica as the slot's primary and the old primary as its replica, in sync and counted
     * by WAIT.
     */
    async failover (slot) {
      const { primary, replicas: [replica] } = await this.shard(slot)
      if (replica === undefined) throw new Error(`slot ${slot} has no replica`)
      await command(replica.port, ['CLUSTER', 'FAILOVER'])
      let asked = Date.now()
      const done = waitFor(`failover of slot ${slot} to ${replica.port}`, async () => {
        let agreed = true
        for (const node of nodes) {
          const view = await this.shard(slot, node)
          if (view.primary !== replica || !view.replicas.includes(primary)) agreed = false
        }
        if (agreed) return (await info(primary.port, 'replication')).master_link_status === 'up'
        // The primaries refuse to vote twice for a replica of the same primary within twice
        // the node timeout, and a manual failover gives up after 5 s: a failover the same way
        // as a recent one is asked again until it gets its votes
        if (Date.now() - asked > 5500) {
          asked = Date.now()
          await command(replica.port, ['CLUSTER', 'FAILOVER'])
        }
        return false
      }, { limit: 30_000, every: 50 }).then(() => replicasOnline(replica.port, replicas))
      // awaited by the caller; a rejection is theirs, but never unhandled meanwhile
      done.catch(() => {})
      return { from: primary, to: replica, done }
    },
    stop: () => stopAll(nodes)
  }
}

// ---------------------------------------------------------------------------------------
// Sentinel.

/**
 * A primary, a replica of it, and `sentinels` Sentinels (quorum 2) watching it under `name`,
 * ready: every Sentinel knows the replica and the other Sentinels. `downAfter` and
 * `failoverTimeout` (ms) are short so that a failover takes seconds, not minutes.
 */
async function startSentinel ({ name = 'ws-guard', sentinels = 3, quorum = 2, downAfter = 1000, failoverTimeout = 2000 } = {}) {
  if (REDIS_SERVER === null) throw new Error(MISSING)
  const started = []
  try {
    const primary = await startRedis()
    started.push(primary)
    const replica = await startRedis(['--replicaof', HOST, String(primary.port)])
    started.push(replica)
    await replicasOnline(primary.port)
    const watchers = await Promise.all(Array.from({ length: sentinels }, () => startSentinelProcess(name, primary.port, quorum, downAfter, failoverTimeout)))
    started.push(...watchers)
    await waitFor('sentinels ready', async () => {
      for (const s of watchers) {
        const flat = await command(s.port, ['SENTINEL', 'MASTER', name])
        const fields = {}
        for (let i = 0; i < flat.length; i += 2) fields[flat[i]] = flat[i + 1]
        if (Number(fields['num-slaves']) < 1 || Number(fields['num-other-sentinels']) < sentinels - 1) return false
      }
      return true
    })
    return {
      name,
      primary,
      replica,
      sentinels: watchers,
      /** ioredis `sentinels` / node-redis `sentinelRootNodes` */
      sentinelNodes: watchers.map((s) => ({ host: HOST, port: s.port })),
      /** the primary's port as the Sentinels report it */
      async primaryPort () {
        const [, port] = await command(watchers[0].port, ['SENTINEL', 'GET-MASTER-ADDR-BY-NAME', name])
        return Number(port)
      },
      stop: () => stopAll(started)
    }
  } catch (err) {
    await stopAll(started)
    throw err
  }
}

async function startSentinelProcess (name, primaryPort, quorum, downAfter, failoverTimeout) {
  const dir = mkdtempSync(join(tmpdir(), 'ws-guard-sentinel-'))
  const file = join(dir, 'sentinel.conf')
  let child = null
  let port = 0
  for (let attempt = 0; child === null; attempt++) {
    port = await freePort()
    // Sentinel rewrites its configuration file as it learns: it must be its own and writable
    writeFileSync(file, [
      `port ${port}`, `bind ${HOST}`, 'protected-mode no', `dir ${dir}`, 'logfile ""',
      `sentinel monitor ${name} ${HOST} ${primaryPort} ${quorum}`,
      `sentinel down-after-milliseconds ${name} ${downAfter}`,
      `sentinel failover-timeout ${name} ${failoverTimeout}`,
      ''
    ].join('\n'))
    try {
      child = await spawnServer(REDIS_SERVER, [file, '--sentinel'], /\+monitor master/)
    } catch (err) {
      if (attempt === 4) throw err
    }
  }
  return {
    host: HOST,
    port,
    get process () { return child },
    command: (...cmd) => command(port, cmd),
    async stop () {
      await killChild(child)
      rmSync(dir, { recursive: true, force: true })
    }
  }
}

// ---------------------------------------------------------------------------------------
// MONITOR.

/**
 * Every command the server on `port` runs, as MONITOR reports it: `seen` holds
 * `{ addr, args }` (addr `lua` for a script's own calls). `settle()` resolves once everything
 * sent before it has been seen; `close()` ends the MONITOR connection.
 */
async function monitor (port) {
  const socket = net.connect(port, HOST)
  const seen = []
  let buffered = ''
  let waiter = null
  await new Promise((resolve, reject) => {
    socket.once('error', reject)
    socket.once('connect', () => socket.write('MONITOR\r\n'))
    socket.on('data', (chunk) => {
      buffered += chunk.toString()
      let end
      while ((end = buffered.indexOf('\r\n')) !== -1) {
        const line = buffered.slice(0, end)
        buffered = buffered.slice(end + 2)
        if (line === '+OK') { resolve(); continue }
        // +1700000000.123456 [0 127.0.0.1:54321] "EVALSHA" "…" …
        const match = /^\+[\d.]+ \[\d+ ([^\]]+)\] (.*)$/.exec(line)
        if (match === null) continue
        const args = [...match[2].matchAll(/"((?:[^"\\]|\\.)*)"/g)].map((m) => m[1])
        seen.push({ addr: match[1], args })
        if (waiter !== null && args[0] === 'ECHO' && args[1] === waiter.marker) waiter.resolve()
      }
    })
  })
  socket.on('error', () => {})
  let markers = 0
  return {
    seen,
    async settle () {
      const marker = `settle-${process.pid}-${++markers}`
      const done = new Promise((resolve) => { waiter = { marker, resolve } })
      await command(port, ['ECHO', marker])
      await done
      waiter = null
    },
    close () {
      socket.destroy()
    }
  }
}

// ---------------------------------------------------------------------------------------
// TCP proxy.

/**
 * A TCP proxy on a free port to `target` (a port of 127.0.0.1), for a link the test holds:
 * a replica's `replicaof`, or the address clients use for a primary that moves.
 * - `pause()`: nothing more is forwarded either way (new connections wait too); bytes sent
 *   meanwhile stay in the proxy, undelivered. `resume()` delivers them.
 * - `cut()`: every current connection is destroyed, with whatever it held undelivered.
 * - `retarget(port)`: new connections go to `port`.
 * - `roundTrips`: bursts of bytes from a client that follow an answer (or open the
 *   connection): one per request/answer exchange, whatever the client batches.
 */
async function startProxy (target) {
  let targetPort = target
  let paused = false
  const pairs = new Set()
  const counter = { roundTrips: 0 }
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, HOST)
    // as Redis does on its own sockets: Nagle's wait for an ACK that the other side delays
    // would add some 40 ms to many small exchanges
    client.setNoDelay(true)
    upstream.setNoDelay(true)
    const pair = { client, upstream }
    pairs.add(pair)
    let answered = true
    client.on('data', (chunk) => {
      if (answered) counter.roundTrips++
      answered = false
      upstream.write(chunk)
    })
    upstream.on('data', (chunk) => {
      answered = true
      client.write(chunk)
    })
    if (paused) {
      client.pause()
      upstream.pause()
    }
    const end = () => {
      pairs.delete(pair)
      client.destroy()
      upstream.destroy()
    }
    client.on('close', end)
    upstream.on('close', end)
    client.on('error', () => {})
    upstream.on('error', () => {})
  })
  await new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, HOST, resolve)
  })
  return {
    port: server.address().port,
    get target () { return targetPort },
    get roundTrips () { return counter.roundTrips },
    get connections () { return pairs.size },
    pause () {
      paused = true
      for (const { client, upstream } of pairs) {
        client.pause()
        upstream.pause()
      }
    },
    resume () {
      paused = false
      for (const { client, upstream } of pairs) {
        client.resume()
        upstream.resume()
      }
    },
    cut () {
      for (const { client, upstream } of pairs) {
        client.destroy()
        upstream.destroy()
      }
      pairs.clear()
    },
    retarget (port) {
      targetPort = port
    },
    close () {
      this.cut()
      return new Promise((resolve) => server.close(() => resolve()))
    }
  }
}

module.exports = {
  REDIS_SERVER,
  REDIS_CLI,
  MISSING,
  freePort,
  command,
  info,
  waitFor,
  replicasOnline,
  startRedis,
  startCluster,
  startSentinel,
  startProxy,
  monitor
}
