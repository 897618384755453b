/**
 * Shared test plumbing: a real Fastify app with cookies, @fastify/session and
 * @fastify/websocket on 127.0.0.1:0, and a real `ws` client. One app per test.
 */
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import cookie from '@fastify/cookie'
import session from '@fastify/session'
import websocket from '@fastify/websocket'
import WebSocket from 'ws'
import type { Test } from 'tap'
import websocketGuard, { type FastifyWebsocketGuardOptions, type GuardRouteOptions } from '../../lib/index'

export const SECRET = 'a-secret-with-at-least-32-characters-for-tests'

export interface AppOptions {
  guard?: FastifyWebsocketGuardOptions
  session?: Record<string, unknown>
  fastify?: FastifyServerOptions
  /** route option `guard` of `/chat`; default `true` */
  route?: boolean | GuardRouteOptions
  /** runs before `listen`, to add routes */
  setup?: (app: FastifyInstance) => void | Promise<void>
}

export interface TestApp {
  app: FastifyInstance
  /** `http://127.0.0.1:PORT` */
  base: string
  /** the app's own origin as a browser would send it */
  origin: string
  /** `ws://127.0.0.1:PORT` */
  wsBase: string
  /** every `onReject` call */
  rejections: Array<{ code: string, statusCode: number, url: string }>
  /** what the `/chat` handler saw, one entry per opened socket */
  opened: Array<{ websocketGuard: unknown, protocol: string }>
}

export async function buildApp (t: Test, options: AppOptions = {}): Promise<TestApp> {
  const app = Fastify({ logger: false, ...options.fastify })
  t.teardown(() => app.close())
  const rejections: TestApp['rejections'] = []
  const opened: TestApp['opened'] = []
  await app.register(cookie)
  await app.register(session, { secret: SECRET, cookie: { secure: false }, ...options.session })
  await app.register(websocket)
  await app.register(websocketGuard, {
    onReject (error, request) {
      rejections.push({ code: error.code, statusCode: error.statusCode, url: request.url })
    },
    ...options.guard
  })
  app.get('/chat', { websocket: true, guard: options.route ?? true }, (socket, request) => {
    opened.push({ websocketGuard: request.websocketGuard, protocol: socket.protocol })
    socket.send('hello')
    socket.on('message', (message) => socket.send(message.toString()))
  })
  await options.setup?.(app)
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as { port: number }
  const base = `http://127.0.0.1:${port}`
  return { app, base, origin: base, wsBase: `ws://127.0.0.1:${port}`, rejections, opened }
}

/** A browser-like session: keeps the session cookie between requests. */
export class Client {
  cookie = ''
  constructor (readonly base: string, readonly origin: string | undefined = base) {}

  async getToken (query = '', headers: Record<string, string> = {}): Promise<{ status: number, body: any, headers: Headers }> {
    const res = await fetch(`${this.base}/websocket-token${query}`, {
      headers: { ...(this.cookie === '' ? {} : { cookie: this.cookie }), ...headers }
    })
    const setCookie = res.headers.getSetCookie()
    if (setCookie.length > 0) this.cookie = setCookie.map((c) => c.split(';')[0]).join('; ')
    const text = await res.text()
    return { status: res.status, body: text === '' ? null : JSON.parse(text), headers: res.headers }
  }

  async token (query = ''): Promise<string> {
    const res = await this.getToken(query)
    if (res.status !== 200) throw new Error(`token route answered ${res.status}`)
    return res.body.token
  }

  connect (path: string, options: ConnectOptions = {}): Promise<ConnectResult> {
    const wsUrl = this.base.replace(/^http/, 'ws') + path
    const headers: Record<string, string> = { ...options.headers }
    if (this.cookie !== '' && options.cookie !== false) headers.cookie = this.cookie
    const origin = 'origin' in options ? options.origin : this.origin
    return connect(wsUrl, { ...options, headers, origin })
  }
}

export interface ConnectOptions {
  protocols?: string[]
  headers?: Record<string, string>
  origin?: string | undefined
  cookie?: boolean
}

export interface ConnectResult {
  opened: boolean
  status: number | null
  body: any
  protocol: string | null
  socket: WebSocket | null
}

/** Opens a socket and reports whether the upgrade succeeded, or the refusal's status and body. */
export function connect (url: string, options: ConnectOptions = {}): Promise<ConnectResult> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { ...options.headers }
    if (options.origin !== undefined) headers.origin = options.origin
    const ws = new WebSocket(url, options.protocols ?? [], { headers })
    ws.on('open', () => {
      resolve({ opened: true, status: 101, body: null, protocol: ws.protocol, socket: ws })
    })
    ws.on('unexpected-response', (_req, res) => {
      let data = ''
      res.on('data', (chunk) => { data += chunk })
      res.on('end', () => {
        ws.terminate()
        resolve({ opened: false, status: res.statusCode ?? null, body: data === '' ? null : JSON.parse(data), protocol: null, socket: null })
      })
    })
    ws.on('error', (err) => {
      if (ws.readyState !== WebSocket.CLOSED) ws.terminate()
      reject(err)
    })
  })
}

/** Closes a result's socket, if it opened. */
export async function close (result: ConnectResult): Promise<void> {
  const socket = result.socket
  if (socket === null || socket.readyState === WebSocket.CLOSED) return
  await new Promise<void>((resolve) => {
    socket.once('close', () => resolve())
    socket.close()
  })
}
