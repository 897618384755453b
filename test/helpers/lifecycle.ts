/**
 * Helpers for the socket-lifecycle tests: open a guarded socket with a fresh token and follow
 * its close, call the app's routes with a client's session cookie, and count what the guard
 * still holds.
 */
import WebSocket from 'ws'
import type { FastifyInstance } from 'fastify'
import type { Test } from 'tap'
import { Client, connect, type AppOptions, type ConnectResult } from './app'
import { trackedSockets } from '../../lib/sockets/index'

export interface Closed {
  code: number
  reason: string
}

export interface Opened {
  ws: WebSocket
  /** settles when the socket closes */
  closed: Promise<Closed>
  /** whether it has closed */
  isClosed (): boolean
  result: ConnectResult
}

/** Follows an open socket's close. */
export function follow (result: ConnectResult): Opened {
  const ws = result.socket as WebSocket
  let done = false
  const closed = new Promise<Closed>((resolve) => {
    ws.once('close', (code, reason) => {
      done = true
      resolve({ code, reason: reason.toString() })
    })
  })
  return { ws, closed, isClosed: () => done, result }
}

/** A fresh token bound to `path`, then the upgrade; resolves with the refusal when it does not open. */
export async function tryOpen (client: Client, path = '/chat', token?: string): Promise<Opened | ConnectResult> {
  token ??= await client.token('?path=' + encodeURIComponent(path))
  const result = await client.connect(`${path}?token=${token}`)
  return result.opened ? follow(result) : result
}

/** Like tryOpen, but the socket must open. */
export async function open (client: Client, path = '/chat'): Promise<Opened> {
  const r = await tryOpen(client, path)
  if (!('ws' in r)) throw new Error(`upgrade refused: ${String(r.status)} ${JSON.stringify(r.body)}`)
  return r
}

/** A request to the app with the client's session cookie (and the cookies it sets kept). */
export async function call (client: Client, path: string, method = 'POST', body?: unknown): Promise<{ status: number, body: any }> {
  const res = await fetch(client.base + path, {
    method,
    headers: {
      ...(client.cookie === '' ? {} : { cookie: client.cookie }),
      ...(body === undefined ? {} : { 'content-type': 'application/json' })
    },
    body: body === undefined ? undefined : JSON.stringify(body)
  })
  const setCookie = res.headers.getSetCookie()
  if (setCookie.length > 0) client.cookie = setCookie.map((c) => c.split(';')[0]).join('; ')
  const text = await res.text()
  let parsed: unknown = text
  try { parsed = JSON.parse(text) } catch {}
  return { status: res.status, body: parsed }
}

/** Resolves with the close, or with `null` if the socket is still open after `ms`. */
export async function closedWithin (socket: Opened, ms: number): Promise<Closed | null> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<null>((resolve) => { timer = setTimeout(resolve, ms, null) })
  try {
    return await Promise.race([socket.closed, timeout])
  } finally {
    clearTimeout(timer)
  }
}

/** Sends a message and resolves when the echo comes back: the socket works. */
export async function echoes (socket: Opened, text = 'ping'): Promise<boolean> {
  if (socket.ws.readyState !== WebSocket.OPEN) return false
  return await new Promise<boolean>((resolve) => {
    const onMessage = (data: WebSocket.RawData): void => {
      if (data.toString() !== text) return
      socket.ws.off('message', onMessage)
      resolve(true)
    }
    socket.ws.on('message', onMessage)
    socket.ws.send(text)
    setTimeout(() => { socket.ws.off('message', onMessage); resolve(false) }, 2000).unref()
  })
}

/** The close of a socket whose session ended. */
export const ENDED: Closed = { code: 4401, reason: 'session ended' }

/**
 * The session routes the lifecycle tests call: /login (the session's first write; the user is
 * the body's `user`, or alice), /logout (the session plugin's own end: destroy(), or delete()
 * for @fastify/secure-session), /close-session (the body is its options), and /close-user
 * (`{ id, except?, ...options }`: a failure answers 503 with its code).
 */
export function addSessionRoutes (app: FastifyInstance, secure = false): void {
  app.post('/login', async (request) => {
    const user = (request.body as { user?: string } | undefined)?.user ?? 'alice'
    ;(request.session as unknown as { set: (key: string, value: unknown) => void }).set('user', user)
    return { ok: true }
  })
  app.post('/logout', async (request) => {
    if (secure) (request.session as unknown as { delete: () => void }).delete()
    else await request.session.destroy()
    return { ok: true }
  })
  app.post('/close-session', async (request) => {
    await app.websocketGuard.closeSession(request, request.body as never)
    return { ok: true }
  })
  app.post('/close-user', async (request, reply) => {
    const { id, except, ...options } = request.body as { id: string, except?: boolean }
    try {
      await app.websocketGuard.closeUser(id, { ...options, ...(except === true ? { except: request } : {}) })
      return { ok: true }
    } catch (err) {
      return await reply.code(503).send({ code: (err as { code: string }).code })
    }
  })
}

/** `options` for buildApp, with the session routes added before the options' own setup. */
export function withSessionRoutes (options: AppOptions = {}): AppOptions {
  return {
    ...options,
    async setup (a) {
      addSessionRoutes(a, options.secureSession !== undefined)
      await options.setup?.(a)
    }
  }
}

/** A guarded /chat that echoes what it gets. */
export function addEchoRoute (app: FastifyInstance): void {
  app.get('/chat', { websocket: true, guard: true }, (socket) => {
    socket.on('message', (m) => socket.send(m.toString()))
  })
}

/**
 * The race: `rounds` times, `start(round)` sets off an upgrade and the logout of its session
 * at the same moment and hands back the upgrade; each must be refused, or opened and then
 * closed with 4401, never left open. Returns how many were of each kind.
 */
export async function raceLogout (t: Test, rounds: number, start: (round: number) => Promise<Opened | ConnectResult>): Promise<{ refused: number, closed: number }> {
  const outcomes = { refused: 0, closed: 0 }
  for (let round = 0; round < rounds; round++) {
    const upgrade = await start(round)
    if (!('ws' in upgrade)) {
      outcomes.refused++
      continue
    }
    const closed = await closedWithin(upgrade, 3000)
    if (closed === null) {
      t.fail(`round ${round}: a socket stayed open after its session ended`)
      upgrade.ws.close()
      continue
    }
    t.same(closed, ENDED, `round ${round}`)
    outcomes.closed++
  }
  t.equal(outcomes.refused + outcomes.closed, rounds, `refused ${outcomes.refused}, opened then closed ${outcomes.closed}`)
  return outcomes
}

/** What the guard of `app` still holds. */
export function held (app: FastifyInstance): ReturnType<typeof trackedSockets> {
  return trackedSockets(app.websocketGuard)
}

/** Waits until `check` holds (polling), or fails after `limit` ms. */
export async function until (check: () => boolean | Promise<boolean>, limit = 5000): Promise<boolean> {
  const end = Date.now() + limit
  while (!(await check())) {
    if (Date.now() > end) return false
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
  return true
}

export { Client, connect }
