/**
 * Shared test plumbing: a real Fastify app with cookies, @fastify/session and
 * @fastify/websocket on 127.0.0.1:0, and a real `ws` client. One app per test.
 */
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import cookie from '@fastify/cookie'
import session from '@fastify/session'
import secureSession from '@fastify/secure-session'
import websocket from '@fastify/websocket'
import { request as httpRequest } from 'node:http'
import WebSocket from 'ws'
import type { Test } from 'tap'
import websocketGuard, { type FastifyWebsocketGuardOptions, type GuardRouteOptions } from '../../lib/index'

export const SECRET = 'a-secret-with-at-least-32-characters-for-tests'

export interface AppOptions {
  guard?: FastifyWebsocketGuardOptions
  session?: Record<string, unknown>
  /** use @fastify/secure-session (with these options, merged over a fixed test key) instead of @fastify/session */
  secureSession?: Record<string, unknown>
  fastify?: FastifyServerOptions
  /** options of @fastify/websocket */
  websocket?: Record<string, unknown>
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
  if (options.secureSession === undefined) {
    await app.register(session, { secret: SECRET, cookie: { secure: false }, ...options.session })
  } else {
    await app.register(secureSession, { key: Buffer.from(SECRET).subarray(0, 32), cookie: { path: '/' }, ...options.secureSession })
  }
  await app.register(websocket, options.websocket ?? {})
  await app.register(websocketGuard, {
    onReject (error, request) {
      rejections.push({ code: error.code, statusCode: error.statusCode, url: request.url })
    },
    ...(options.secureSession === undefined ? {} : { sessionPlugin: '@fastify/secure-session' }),
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
  /** path of the token route */
  tokenPath = '/websocket-token'
  /** `origin` is sent as the upgrade's Origin header; `null` sends none */
  constructor (readonly base: string, readonly origin: string | null | undefined = base) {}

  async getToken (query = '', headers: Record<string, string> = {}): Promise<{ status: number, body: any, headers: Headers }> {
    const res = await fetch(`${this.base}${this.tokenPath}${query}`, {
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
    const origin = 'origin' in options ? options.origin : (this.origin ?? undefined)
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
  /** messages received so far (collected from the start, so none is missed) */
  messages?: string[]
}

/** Opens a socket and reports whether the upgrade succeeded, or the refusal's status and body. */
export function connect (url: string, options: ConnectOptions = {}): Promise<ConnectResult> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { ...options.headers }
    if (options.origin !== undefined) headers.origin = options.origin
    const ws = new WebSocket(url, options.protocols ?? [], { headers })
    const messages: string[] = []
    ws.on('message', (data) => { messages.push(data.toString()) })
    ws.on('open', () => {
      resolve({ opened: true, status: 101, body: null, protocol: ws.protocol, socket: ws, messages })
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

export interface RawResponse {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: any
}

/** A plain HTTP request with exactly the given headers (no Origin unless given). */
export function rawRequest (url: string, options: { method?: string, headers?: Record<string, string> } = {}): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { method: options.method ?? 'GET', headers: options.headers }, (res) => {
      let data = ''
      res.setEncoding('utf8')
      res.on('data', (chunk) => { data += chunk })
      res.on('end', () => {
        let body: any = data === '' ? null : data
        try { body = data === '' ? null : JSON.parse(data) } catch {}
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body })
      })
    })
    req.on('error', reject)
    req.end()
  })
}
