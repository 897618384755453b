/**
 * Real Redis for tests, through scripts/redis.js: standalone servers, a Cluster, Sentinels and
 * TCP proxies on free ports of 127.0.0.1, stopped in teardown; clients of each library; app
 * instances as deployed behind a load balancer. Where redis-server is not on PATH the Redis
 * tests are skipped with the reason, except under CI, where its absence fails the run.
 */
import type { Test } from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import cookie from '@fastify/cookie'
import session from '@fastify/session'
import secureSession from '@fastify/secure-session'
import websocket from '@fastify/websocket'
import { RedisStore } from 'connect-redis'
import { createClient, createCluster, createSentinel } from 'redis'
import IORedis, { Cluster as IORedisCluster } from 'ioredis'
import IOValkey, { Cluster as IOValkeyCluster } from 'iovalkey'
import websocketGuard, { type FastifyWebsocketGuardOptions, type RedisClientLike, type TokenStore } from '../../lib/index'
import * as launcher from '../../scripts/redis'
import type { Monitor, Proxy, RedisCluster, RedisSentinel, RedisServer } from '../../scripts/redis'
import { SECRET } from './app'

export type { Proxy, RedisCluster, RedisSentinel, RedisServer }
export const { REDIS_SERVER, REDIS_CLI, command, info, waitFor, replicasOnline } = launcher

function underCI (): boolean {
  return process.env.CI !== undefined && process.env.CI !== '' && process.env.CI !== 'false'
}

/**
 * The `skip` option for a test that needs redis-server (and, with `cli`, redis-cli):
 * `false` when it can run, the reason otherwise. Under CI a missing one is a failure, not a skip.
 */
export function redisSkip (t: Test, { cli = false } = {}): string | false {
  const missing = REDIS_SERVER === null
    ? launcher.MISSING
    : cli && REDIS_CLI === null ? 'redis-cli is not on PATH (Debian: apt-get install redis-tools)' : null
  if (missing === null) return false
  if (underCI()) t.fail(`${missing}; CI requires it`)
  return missing
}

/** Starts a redis-server (with `args` added) for this test; it is killed in the test's teardown. */
export async function startRedis (t: Test, args: string[] = []): Promise<RedisServer> {
  const server = await launcher.startRedis(args)
  t.teardown(() => server.stop())
  return server
}

/** A 3-primary, 3-replica Redis Cluster for this test, stopped in teardown. */
export async function startCluster (t: Test): Promise<RedisCluster> {
  const cluster = await launcher.startCluster({ primaries: 3, replicas: 1 })
  t.teardown(() => cluster.stop())
  return cluster
}

/** A primary, a replica and 3 Sentinels for this test, stopped in teardown. */
export async function startSentinel (t: Test, options?: Parameters<typeof launcher.startSentinel>[0]): Promise<RedisSentinel> {
  const sentinel = await launcher.startSentinel(options)
  t.teardown(() => sentinel.stop())
  return sentinel
}

/** A TCP proxy to `port` for this test, closed in teardown. */
export async function startProxy (t: Test, port: number): Promise<Proxy> {
  const proxy = await launcher.startProxy(port)
  t.teardown(() => proxy.close())
  return proxy
}

export type ClientKind = 'node-redis' | 'ioredis' | 'iovalkey'
export const CLIENT_KINDS: ClientKind[] = ['node-redis', 'ioredis', 'iovalkey']

export interface TestClient {
  client: RedisClientLike
  /** every `error` event the client emitted */
  errors: Error[]
}

/**
 * A connected standalone client of the given library, closed in teardown. Errors are listened
 * to (and kept), as an application must: an `error` event with no listener would crash the
 * process.
 */
export async function redisClient (t: Test, kind: ClientKind, url: string, { reconnectEvery }: { reconnectEvery?: number } = {}): Promise<TestClient & { command (...args: string[]): Promise<unknown> }> {
  const errors: Error[] = []
  if (kind === 'node-redis') {
    const client = createClient({ url, ...(reconnectEvery === undefined ? {} : { socket: { reconnectStrategy: () => reconnectEvery } }) })
    client.on('error', (err: Error) => { errors.push(err) })
    await client.connect()
    t.teardown(() => { client.destroy() })
    return { client, command: (...args) => client.sendCommand(args), errors }
  }
  const Library = kind === 'ioredis' ? IORedis : IOValkey
  const client = new Library(url, { lazyConnect: true, ...(reconnectEvery === undefined ? {} : { retryStrategy: () => reconnectEvery }) })
  client.on('error', (err: Error) => { errors.push(err) })
  await client.connect()
  t.teardown(() => { client.disconnect() })
  return { client, command: (...args) => client.call(args[0] as string, ...args.slice(1)), errors }
}

/** A connected cluster client (node-redis `createCluster`, ioredis / iovalkey `Cluster`), closed in teardown. */
export async function clusterClient (t: Test, kind: ClientKind, cluster: RedisCluster, ioredisOptions: Record<string, unknown> = {}): Promise<TestClient> {
  const errors: Error[] = []
  if (kind === 'node-redis') {
    const client = createCluster({ rootNodes: cluster.startNodes.map((n) => ({ url: `redis://${n.host}:${n.port}` })) })
    client.on('error', (err: Error) => { errors.push(err) })
    await client.connect()
    t.teardown(() => { client.destroy() })
    return { client, errors }
  }
  const Library = kind === 'ioredis' ? IORedisCluster : IOValkeyCluster
  const client = new Library(cluster.startNodes, { lazyConnect: true, ...ioredisOptions })
  client.on('error', (err: Error) => { errors.push(err) })
  await client.connect()
  t.teardown(() => { client.disconnect() })
  return { client, errors }
}

/**
 * A connected cluster client whose every connection runs through a counting proxy in front of
 * its node (the nodes' own addresses mapped to the proxies': node-redis `nodeAddressMap`,
 * ioredis `natMap`); `roundTrips()` is the total of request/answer exchanges so far.
 */
export async function proxiedClusterClient (t: Test, kind: ClientKind, cluster: RedisCluster): Promise<TestClient & { roundTrips (): number }> {
  const proxies = new Map<number, Proxy>()
  for (const node of cluster.nodes) proxies.set(node.port, await startProxy(t, node.port))
  const via = (port: number): number => (proxies.get(port) as Proxy).port
  const roundTrips = (): number => [...proxies.values()].reduce((n, p) => n + p.roundTrips, 0)
  const errors: Error[] = []
  const first = cluster.nodes[0] as RedisServer
  if (kind === 'node-redis') {
    const client = createCluster({
      rootNodes: [{ url: `redis://127.0.0.1:${via(first.port)}` }],
      nodeAddressMap: (address: string) => ({ host: '127.0.0.1', port: via(Number(address.split(':').pop())) })
    })
    client.on('error', (err: Error) => { errors.push(err) })
    await client.connect()
    t.teardown(() => { client.destroy() })
    return { client, errors, roundTrips }
  }
  const Library = kind === 'ioredis' ? IORedisCluster : IOValkeyCluster
  const natMap = Object.fromEntries(cluster.nodes.map((n) => [`127.0.0.1:${n.port}`, { host: '127.0.0.1', port: via(n.port) }]))
  const client = new Library([{ host: '127.0.0.1', port: via(first.port) }], { lazyConnect: true, natMap })
  client.on('error', (err: Error) => { errors.push(err) })
  await client.connect()
  t.teardown(() => { client.disconnect() })
  return { client, errors, roundTrips }
}

/** A connected client that finds the primary through the Sentinels, closed in teardown. */
export async function sentinelClient (t: Test, kind: ClientKind, sentinel: RedisSentinel): Promise<TestClient> {
  const errors: Error[] = []
  if (kind === 'node-redis') {
    const client = createSentinel({ name: sentinel.name, sentinelRootNodes: sentinel.sentinelNodes })
    client.on('error', (err: Error) => { errors.push(err) })
    await client.connect()
    t.teardown(() => client.destroy())
    return { client, errors }
  }
  const Library = kind === 'ioredis' ? IORedis : IOValkey
  const client = new Library({ sentinels: sentinel.sentinelNodes, name: sentinel.name, lazyConnect: true })
  client.on('error', (err: Error) => { errors.push(err) })
  await client.connect()
  t.teardown(() => { client.disconnect() })
  return { client, errors }
}

/**
 * Every command the server on `port` runs, as MONITOR reports it: `{ addr, args }`.
 * `settle()` waits until everything sent before it has been seen. Closed in teardown.
 */
export async function monitor (t: Test, port: number): Promise<Monitor> {
  const mon = await launcher.monitor(port)
  t.teardown(() => { mon.close() })
  return mon
}

export interface Traced {
  /** the commands the server ran for this connection, upper-cased names only */
  commands: string[]
  /** request/answer exchanges on the wire */
  roundTrips: number
  /** what `fn` resolved with, or `undefined` */
  value: unknown
  /** what `fn` rejected with, or `undefined` */
  error: unknown
}

/**
 * A client of `kind` whose connection to `server` runs through a counting proxy, and
 * `trace(fn)`: what `fn` made that connection do, as MONITOR saw it on the server and as the
 * proxy counted it on the wire.
 */
export async function tracedClient (t: Test, kind: ClientKind, server: RedisServer): Promise<TestClient & { command (...args: string[]): Promise<unknown>, trace (fn: () => Promise<unknown>): Promise<Traced> }> {
  const proxy = await startProxy(t, server.port)
  const traced = await redisClient(t, kind, `redis://127.0.0.1:${proxy.port}`)
  // the server sees the proxy's side of the connection
  const addr = /addr=(\S+)/.exec(String(await traced.command('CLIENT', 'INFO')))?.[1] as string
  const mon = await monitor(t, server.port)
  return {
    ...traced,
    async trace (fn) {
      await mon.settle()
      const from = mon.seen.length
      const trips = proxy.roundTrips
      let value: unknown
      let error: unknown
      try {
        value = await fn()
      } catch (err) {
        error = err
      }
      const roundTrips = proxy.roundTrips - trips
      await mon.settle()
      const commands = mon.seen.slice(from).filter((c) => c.addr === addr).map((c) => (c.args[0] as string).toUpperCase())
      return { commands, roundTrips, value, error }
    }
  }
}

/** Waits until `replica` has applied everything `primary` has written so far. */
export async function inSync (primary: { port: number }, replica: { port: number }): Promise<void> {
  await waitFor(`${replica.port} in sync with ${primary.port}`, async () => {
    const offset = (await info(primary.port, 'replication')).master_repl_offset
    return offset !== undefined && (await info(replica.port, 'replication')).slave_repl_offset === offset
  })
}

/** What a browser on the app's page sends as `Origin`, whichever instance it reaches. */
export const APP_ORIGIN = 'http://app.test'
/** 32 bytes shared by every instance's @fastify/secure-session, as in a real deployment */
export const SECURE_SESSION_KEY = Buffer.alloc(32, 'k')

export interface InstanceOptions {
  /** @fastify/session with connect-redis on this URL, or @fastify/secure-session */
  sessions: { redisUrl: string } | 'secure-session'
  store: TokenStore
  guard?: FastifyWebsocketGuardOptions
}

export interface Instance {
  app: FastifyInstance
  base: string
  /** one entry per socket that opened */
  opened: unknown[]
  /** Fastify's log lines at level error and above */
  errors: Array<Record<string, unknown>>
}

/**
 * One app instance as deployed behind a load balancer: sessions shared through Redis
 * (connect-redis on its own node-redis client) or in the cookie (secure-session), and the
 * given token store. Guarded routes `/chat` and `/other`; allowed origin `APP_ORIGIN`.
 */
export async function buildInstance (t: Test, options: InstanceOptions): Promise<Instance> {
  const errors: Instance['errors'] = []
  const app = Fastify({
    logger: { level: 'error', stream: { write (line: string) { errors.push(JSON.parse(line)) } } }
  })
  t.teardown(() => app.close())
  await app.register(cookie)
  if (options.sessions === 'secure-session') {
    await app.register(secureSession, { key: SECURE_SESSION_KEY, cookie: { path: '/', secure: false } })
  } else {
    const sessionClient = createClient({ url: options.sessions.redisUrl })
    sessionClient.on('error', () => {})
    await sessionClient.connect()
    t.teardown(() => { sessionClient.destroy() })
    await app.register(session, {
      secret: SECRET,
      cookie: { secure: false },
      store: new RedisStore({ client: sessionClient, prefix: 'sess:' })
    })
  }
  await app.register(websocket)
  await app.register(websocketGuard, {
    origins: [APP_ORIGIN],
    sessionPlugin: options.sessions === 'secure-session' ? '@fastify/secure-session' : '@fastify/session',
    store: options.store,
    ...options.guard
  })
  const opened: unknown[] = []
  for (const url of ['/chat', '/other']) {
    app.get(url, { websocket: true, guard: true }, (socket, request) => {
      opened.push(request.websocketGuard)
      socket.send('hello')
    })
  }
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as { port: number }
  return { app, base: `http://127.0.0.1:${port}`, opened, errors }
}
