/**
 * A real redis-server for tests: started on a free port of 127.0.0.1 with no persistence,
 * stopped in teardown. Where redis-server is not on PATH the Redis tests are skipped with the
 * reason, except under CI, where its absence fails the run.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { accessSync, constants } from 'node:fs'
import { connect as connectSocket, createServer } from 'node:net'
import { delimiter, join } from 'node:path'
import type { Test } from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import cookie from '@fastify/cookie'
import session from '@fastify/session'
import secureSession from '@fastify/secure-session'
import websocket from '@fastify/websocket'
import { RedisStore } from 'connect-redis'
import { createClient } from 'redis'
import IORedis from 'ioredis'
import websocketGuard, { type FastifyWebsocketGuardOptions, type RedisClientLike, type TokenStore } from '../../lib/index'
import { SECRET } from './app'

function onPath (name: string): string | null {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir === '') continue
    try {
      accessSync(join(dir, name), constants.X_OK)
      return join(dir, name)
    } catch {}
  }
  return null
}

export const REDIS_SERVER = onPath('redis-server')
const MISSING = 'redis-server is not on PATH (Debian: apt-get install redis-server)'

/**
 * The `skip` option for a test that needs redis-server: `false` when it can run, the reason
 * otherwise. Under CI a missing redis-server is a failure, not a skip.
 */
export function redisSkip (t: Test): string | false {
  if (REDIS_SERVER !== null) return false
  if (process.env.CI !== undefined && process.env.CI !== '' && process.env.CI !== 'false') {
    t.fail(`${MISSING}; CI requires it`)
  }
  return MISSING
}

async function freePort (): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', resolve)
  })
  const { port } = server.address() as { port: number }
  await new Promise((resolve) => server.close(resolve))
  return port
}

export interface RedisServer {
  port: number
  /** `redis://127.0.0.1:PORT` */
  url: string
  /** SIGKILL: the server is gone, connections are reset */
  kill (): Promise<void>
  /** starts it again on the same port, empty */
  restart (): Promise<void>
  /** SIGSTOP: connections stay open but nothing answers */
  pause (): void
  /** SIGCONT */
  resume (): void
}

// servers still running when this process exits (a test that timed out, a crash): killed then
const running = new Set<ChildProcess>()
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL')
})

function launch (port: number): Promise<ChildProcess> {
  return new Promise((resolve, reject) => {
    const child = spawn(REDIS_SERVER as string, [
      '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
      '--protected-mode', 'no', '--loglevel', 'notice', '--logfile', ''
    ], { stdio: ['ignore', 'pipe', 'pipe'] })
    running.add(child)
    child.once('exit', () => { running.delete(child) })
    let output = ''
    const onData = (chunk: Buffer): void => {
      output += chunk.toString()
      if (output.includes('Ready to accept connections')) {
        child.stdout?.off('data', onData)
        child.stdout?.resume()
        child.off('exit', onExit)
        resolve(child)
      }
    }
    const onExit = (code: number | null): void => {
      reject(new Error(`redis-server exited (${String(code)}) before it was ready: ${output.slice(-500)}`))
    }
    child.stdout?.on('data', onData)
    child.stderr?.on('data', (chunk: Buffer) => { output += chunk.toString() })
    child.once('exit', onExit)
    child.once('error', reject)
  })
}

function stop (child: ChildProcess | null): Promise<void> {
  if (child === null || child.exitCode !== null || child.signalCode !== null) return Promise.resolve()
  return new Promise((resolve) => {
    child.once('exit', () => resolve())
    // a stopped process takes SIGKILL too, but SIGCONT first keeps it tidy
    child.kill('SIGCONT')
    child.kill('SIGKILL')
  })
}

/** Starts a redis-server for this test; it is killed in the test's teardown. */
export async function startRedis (t: Test): Promise<RedisServer> {
  let child: ChildProcess | null = null
  let port = 0
  for (let attempt = 0; child === null; attempt++) {
    port = await freePort()
    try {
      child = await launch(port)
    } catch (err) {
      // another process may have taken the port in between; try another one
      if (attempt === 4) throw err
    }
  }
  t.teardown(() => stop(child))
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    async kill () {
      await stop(child)
      child = null
    },
    async restart () {
      await stop(child)
      child = await launch(port)
    },
    pause () {
      child?.kill('SIGSTOP')
    },
    resume () {
      child?.kill('SIGCONT')
    }
  }
}

export type ClientKind = 'node-redis' | 'ioredis'
export const CLIENT_KINDS: ClientKind[] = ['node-redis', 'ioredis']

/**
 * A connected client of either library, closed in teardown. Errors are listened to (and
 * kept), as an application must: an `error` event with no listener would crash the process.
 */
export async function redisClient (t: Test, kind: ClientKind, url: string): Promise<{ client: RedisClientLike, command (...args: string[]): Promise<unknown>, errors: Error[] }> {
  const errors: Error[] = []
  if (kind === 'node-redis') {
    const client = createClient({ url })
    client.on('error', (err: Error) => { errors.push(err) })
    await client.connect()
    t.teardown(() => { client.destroy() })
    return { client, command: (...args) => client.sendCommand(args), errors }
  }
  const client = new IORedis(url, { lazyConnect: true })
  client.on('error', (err: Error) => { errors.push(err) })
  await client.connect()
  t.teardown(() => { client.disconnect() })
  return { client, command: (...args) => client.call(args[0] as string, ...args.slice(1)), errors }
}

/**
 * Every command Redis runs, as MONITOR reports it: `{ addr, args }`. `settle()` waits until
 * everything sent before it has been seen.
 */
export async function monitor (t: Test, port: number): Promise<{ seen: Array<{ addr: string, args: string[] }>, settle (): Promise<void> }> {
  const socket = connectSocket(port, '127.0.0.1')
  t.teardown(() => { socket.destroy() })
  const seen: Array<{ addr: string, args: string[] }> = []
  let buffered = ''
  let waiter: { marker: string, resolve: () => void } | null = null
  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject)
    socket.once('connect', () => { socket.write('MONITOR\r\n') })
    socket.on('data', (chunk: Buffer) => {
      buffered += chunk.toString()
      let end
      while ((end = buffered.indexOf('\r\n')) !== -1) {
        const line = buffered.slice(0, end)
        buffered = buffered.slice(end + 2)
        if (line === '+OK') { resolve(); continue }
        // +1700000000.123456 [0 127.0.0.1:54321] "EVALSHA" "…" …
        const match = /^\+[\d.]+ \[\d+ ([^\]]+)\] (.*)$/.exec(line)
        if (match === null) continue
        const args = [...(match[2] as string).matchAll(/"((?:[^"\\]|\\.)*)"/g)].map((m) => m[1] as string)
        seen.push({ addr: match[1] as string, args })
        if (waiter !== null && args[0] === 'ECHO' && args[1] === waiter.marker) waiter.resolve()
      }
    })
  })
  const pinger = createClient({ url: `redis://127.0.0.1:${port}` })
  pinger.on('error', () => {})
  await pinger.connect()
  t.teardown(() => { pinger.destroy() })
  let markers = 0
  return {
    seen,
    async settle () {
      const marker = `settle-${++markers}`
      const done = new Promise<void>((resolve) => { waiter = { marker, resolve } })
      await pinger.sendCommand(['ECHO', marker])
      await done
      waiter = null
    }
  }
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
