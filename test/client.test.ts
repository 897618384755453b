/**
 * The browser client (dist/client.mjs, as built) in real headless Chromium against a real
 * Fastify server with the guard. The server counts every token request and every upgrade, and
 * the tests close its sockets with the guard's close codes, so each reconnection rule is
 * checked where it matters: what reached the server. In the page, the delays the client asks
 * of setTimeout are recorded (and Math.random pinned where a test needs exact waits), so the
 * backoff is checked by its values, never by how long anything took.
 */
import t, { type Test } from 'tap'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import Fastify, { type FastifyInstance } from 'fastify'
import cookie from '@fastify/cookie'
import session from '@fastify/session'
import websocket from '@fastify/websocket'
import type { WebSocket as ServerSocket } from 'ws'
import type { Browser, Page } from 'playwright-core'
import websocketGuard from '../lib/index'
import { SECRET } from './helpers/app'
import { chromiumAvailable, launchChromium } from './helpers/browser'
import { builtPackage } from './helpers/util'

const CLIENT = join(__dirname, '..', 'dist', 'client.mjs')
// short waits keep the tests quick; the page records them, nothing measures them
const MIN_DELAY = 40
const MAX_DELAY = 160

interface Upgrade {
  url: string
  protocol: string
  token: string | null
  socket: ServerSocket
  /** the close code and reason the client sent, once it closed */
  closed?: { code: number, reason: string }
}

interface Server {
  app: FastifyInstance
  base: string
  port: number
  /** every request to the token route: the `path` it asked for (`null`: none) and the status answered */
  tokenRequests: Array<{ path: string | null, status: number }>
  upgrades: Upgrade[]
  /** every refusal of the guard */
  rejections: Array<{ code: string, url: string }>
  /** while set, the token route answers this status and no token */
  tokenStatus: number | null
}

/**
 * The app: sessions, the guard with its defaults (same-origin), a guarded `/chat` that echoes,
 * the page and the client module. `rewriteUrl` plays a proxy that maps `/app/…` to `/…`.
 */
async function startServer (t: Test, port = 0): Promise<Server> {
  const app = Fastify({
    logger: false,
    rewriteUrl: (request) => (request.url ?? '/').replace(/^\/app\//, '/')
  })
  const server: Server = { app, base: '', port: 0, tokenRequests: [], upgrades: [], rejections: [], tokenStatus: null }
  t.teardown(() => app.close())
  await app.register(cookie)
  await app.register(session, { secret: SECRET, cookie: { secure: false } })
  await app.register(websocket)
  await app.register(websocketGuard, {
    onReject (error, request) { server.rejections.push({ code: error.code, url: request.url }) }
  })
  app.addHook('onRequest', async (request, reply) => {
    if (request.routeOptions.url !== '/websocket-token' || server.tokenStatus === null) return
    await reply.code(server.tokenStatus).send({ statusCode: server.tokenStatus, code: 'TEST_REFUSAL', error: 'Test', message: 'refused by the test' })
  })
  app.addHook('onResponse', async (request, reply) => {
    if (request.routeOptions.url !== '/websocket-token') return
    const path = (request.query as { path?: string }).path
    server.tokenRequests.push({ path: path ?? null, status: reply.statusCode })
  })
  app.get('/chat', { websocket: true, guard: true }, (socket, request) => {
    const upgrade: Upgrade = { url: request.url, protocol: socket.protocol, token: request.websocketGuard?.token ?? null, socket }
    server.upgrades.push(upgrade)
    socket.on('message', (data) => socket.send(data.toString()))
    socket.on('close', (code, reason) => { upgrade.closed = { code, reason: reason.toString() } })
  })
  app.get('/', async (_request, reply) => reply.type('text/html; charset=utf-8').send('<!doctype html><title>client</title>'))
  app.get('/client.mjs', async (_request, reply) => reply.type('text/javascript; charset=utf-8').header('cache-control', 'no-store').send(readFileSync(CLIENT)))
  await app.listen({ port, host: '127.0.0.1' })
  server.port = (app.server.address() as { port: number }).port
  server.base = `http://127.0.0.1:${server.port}`
  return server
}

// What the page's functions use; the project compiles without the DOM lib.
interface LogEntry { type: string, code?: number, reason?: string, wasClean?: boolean, data?: string, error?: { code: string, status?: number } | null }
interface PageClient {
  GuardedWebSocket: new (url: string, options?: object) => PageGuarded
  GuardedWebSocketError: new (...args: unknown[]) => Error
  openGuardedWebSocket: (url: string, options?: object) => Promise<{ protocol: string, close: () => void }>
}
interface PageGuarded {
  readyState: number
  protocol: string
  socket: { url: string } | null
  send (data: string): void
  close (code?: number, reason?: string): void
  addEventListener (type: string, listener: (event: any) => void): void
}
interface PageWindow {
  client: PageClient
  /** every delay the page asked of setTimeout, in order */
  delays: number[]
  /** the events of `window.ws` */
  log: LogEntry[]
  ws: PageGuarded
  track (ws: PageGuarded): PageGuarded
  setTimeout: (fn: () => void, ms?: number) => unknown
  WebSocket: new (...args: any[]) => unknown
}
declare const window: PageWindow

let browser: Browser | undefined

/** A page of the server with the client imported, its timers and the events of `window.ws` recorded. */
async function openPage (t: Test, server: Server): Promise<Page> {
  const context = await (browser as Browser).newContext()
  t.teardown(() => context.close())
  const page = await context.newPage()
  await page.goto(server.base + '/')
  await page.addScriptTag({ type: 'module', content: "import * as client from '/client.mjs'; window.client = client" })
  await page.waitForFunction(() => window.client !== undefined)
  await page.evaluate(() => {
    window.delays = []
    const realSetTimeout = window.setTimeout
    // only the client's timers: Playwright's own polling may use setTimeout too
    window.setTimeout = (fn: () => void, ms?: number) => {
      if (new Error().stack?.includes('/client.mjs') === true) window.delays.push(ms ?? 0)
      return realSetTimeout(fn, ms)
    }
    window.log = []
    window.track = (ws) => {
      for (const type of ['open', 'close', 'message', 'ended']) {
        ws.addEventListener(type, (event) => {
          const entry: LogEntry = { type }
          if (type === 'close') Object.assign(entry, { code: event.code, reason: event.reason, wasClean: event.wasClean })
          if (type === 'message') entry.data = event.data
          if (type === 'ended') entry.reason = event.reason
          if (event.error !== undefined) entry.error = { code: event.error.code, status: event.error.status }
          window.log.push(entry)
        })
      }
      return ws
    }
  })
  return page
}

/** Waits for `condition` (checked every 10 ms); fails the test with `what` if it never holds. */
async function until (t: Test, what: string, condition: () => boolean, timeout = 10_000): Promise<void> {
  const deadline = Date.now() + timeout
  while (!condition()) {
    if (Date.now() > deadline) {
      t.fail(`timed out waiting for ${what}`)
      throw new Error(`timed out waiting for ${what}`)
    }
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

/** Lets several times the longest backoff wait pass, for checking that nothing more happens. */
async function quiet (): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, MAX_DELAY * 4))
}

async function events (page: Page): Promise<LogEntry[]> {
  return await page.evaluate(() => window.log)
}

/** Opens `window.ws` on /chat, tracked, with the test's delays and `options`. */
async function guarded (page: Page, options: Record<string, unknown> = {}, url = '/chat'): Promise<void> {
  await page.evaluate(({ url, options }) => {
    window.ws = window.track(new window.client.GuardedWebSocket(url, options))
  }, { url, options: { minDelay: MIN_DELAY, maxDelay: MAX_DELAY, ...options } })
}

async function waitForEvent (page: Page, type: string, count = 1): Promise<void> {
  await page.waitForFunction(([type, count]) => window.log.filter((e) => e.type === type).length >= (count as number), [type, count] as const)
}

if (chromiumAvailable(t) && builtPackage(t, 'the browser client tests', ['dist/index.js', 'dist/client.mjs'])) {
  t.before(async () => {
    browser = await launchChromium()
  })
  t.teardown(async () => { await browser?.close() })

  t.test('GuardedWebSocket opens with a token bound to its path, sends and receives', async (t) => {
    const server = await startServer(t)
    const page = await openPage(t, server)
    const before = await page.evaluate(() => {
      const ws = window.track(new window.client.GuardedWebSocket('/chat', {}))
      window.ws = ws
      let sendError = ''
      try { ws.send('too early') } catch (err) { sendError = (err as Error).name }
      return { readyState: ws.readyState, protocol: ws.protocol, socket: ws.socket, sendError }
    })
    t.same(before, { readyState: 0, protocol: '', socket: null, sendError: 'InvalidStateError' }, 'connecting: nothing to send on yet')
    await waitForEvent(page, 'open')
    const state = await page.evaluate(() => ({
      readyState: window.ws.readyState,
      protocol: window.ws.protocol,
      socketUrl: window.ws.socket?.url,
      isWebSocket: window.ws.socket instanceof window.WebSocket,
      constants: [0, 1, 2, 3].map((n) => Object.entries(window.client.GuardedWebSocket).find(([, v]) => v === n)?.[0])
    }))
    t.same(state, {
      readyState: 1,
      protocol: 'websocket-guard',
      socketUrl: server.base.replace('http', 'ws') + '/chat',
      isWebSocket: true,
      constants: ['CONNECTING', 'OPEN', 'CLOSING', 'CLOSED']
    })
    await page.evaluate(() => window.ws.send('ping'))
    await waitForEvent(page, 'message')
    t.same((await events(page)).map((e) => [e.type, e.data]), [['open', undefined], ['message', 'ping']])
    t.same(server.tokenRequests, [{ path: '/chat', status: 200 }], 'one token request, bound to /chat')
    t.equal(server.upgrades.length, 1)
    t.equal(server.upgrades[0]?.protocol, 'websocket-guard')
    t.equal(server.upgrades[0]?.url, '/chat', 'no token in the URL')
    t.same(server.rejections, [])
    const token = server.upgrades[0]?.token as string
    t.notOk(JSON.stringify(await events(page)).includes(token), 'no token in any event')
  })

  t.test('after 4401 (session ended) the client ends: no further token request or upgrade', async (t) => {
    const server = await startServer(t)
    const page = await openPage(t, server)
    await guarded(page)
    await waitForEvent(page, 'open')
    server.upgrades[0]?.socket.close(4401, 'session ended')
    await waitForEvent(page, 'ended')
    await quiet()
    t.same((await events(page)).map((e) => [e.type, e.code, e.reason]), [
      ['open', undefined, undefined],
      ['close', 4401, 'session ended'],
      ['ended', undefined, 'session-ended']
    ])
    t.same(await page.evaluate(() => [window.ws.readyState, window.ws.socket, window.ws.protocol, window.delays]), [3, null, '', []], 'ended, no timer asked for')
    t.equal(server.tokenRequests.length, 1, 'no token request after 4401')
    t.equal(server.upgrades.length, 1, 'no upgrade after 4401')
    const sendAfter = await page.evaluate(() => { try { window.ws.send('x'); return 'sent' } catch (err) { return (err as Error).name } })
    t.equal(sendAfter, 'InvalidStateError')
  })

  t.test('after 4408 (lifetime) the client reconnects at once: exactly one token request and one upgrade', async (t) => {
    const server = await startServer(t)
    const page = await openPage(t, server)
    await guarded(page)
    await waitForEvent(page, 'open')
    server.upgrades[0]?.socket.close(4408, 'socket lifetime reached')
    await waitForEvent(page, 'open', 2)
    await quiet()
    t.equal(server.tokenRequests.length, 2, 'one more token request')
    t.equal(server.upgrades.length, 2, 'one more upgrade')
    t.not(server.upgrades[1]?.token, server.upgrades[0]?.token, 'with a fresh token')
    t.same((await events(page)).map((e) => [e.type, e.code]), [['open', undefined], ['close', 4408], ['open', undefined]])
    t.same(await page.evaluate(() => window.delays), [], 'at once: no backoff wait')
    t.equal(await page.evaluate(() => window.ws.readyState), 1)
    t.same(server.rejections, [])
  })

  t.test('any other close: the client reconnects after a wait between minDelay and the cap', async (t) => {
    const server = await startServer(t)
    const page = await openPage(t, server)
    await guarded(page)
    await waitForEvent(page, 'open')
    for (const [i, code] of [1011, 4000, 1000].entries()) {
      server.upgrades[i]?.socket.close(code)
      await waitForEvent(page, 'open', i + 2)
    }
    t.equal(server.upgrades.length, 4)
    t.equal(server.tokenRequests.length, 4)
    t.same(await page.evaluate(() => window.delays), [MIN_DELAY, MIN_DELAY, MIN_DELAY], 'each open resets the cap to minDelay')
    t.same((await events(page)).filter((e) => e.type === 'close').map((e) => e.code), [1011, 4000, 1000])
  })

  t.test('backoff while the server is gone (full jitter, doubling cap), then it reconnects and the cap resets', async (t) => {
    const first = await startServer(t)
    const page = await openPage(t, first)
    // the highest draw: each wait is then exactly the cap
    await page.evaluate(() => { Math.random = () => 1 })
    await guarded(page)
    await waitForEvent(page, 'open')
    await first.app.close()
    await waitForEvent(page, 'close')
    // the token requests now fail with a network error, each followed by a longer wait
    await page.waitForFunction(() => window.delays.length >= 5)
    const second = await startServer(t, first.port)
    await waitForEvent(page, 'open', 2)
    const delays = await page.evaluate(() => window.delays)
    t.same(delays.slice(0, 5), [MIN_DELAY, MIN_DELAY * 2, MIN_DELAY * 4, MAX_DELAY, MAX_DELAY], 'the cap doubles up to maxDelay')
    t.equal(second.upgrades.length, 1, 'connected to the new server')
    t.equal(second.tokenRequests.length, 1, 'with one token request there')

    // the open reset the cap: the next wait is minDelay again
    const count = delays.length
    second.upgrades[0]?.socket.close(1011)
    await waitForEvent(page, 'open', 3)
    t.same((await page.evaluate(() => window.delays)).slice(count), [MIN_DELAY])

    // draws in between: a wait lies between minDelay and the cap
    await page.evaluate(() => { Math.random = () => 0.5 })
    await second.app.close()
    await page.waitForFunction((n) => window.delays.length >= n + 3, count + 1)
    t.same((await page.evaluate(() => window.delays)).slice(count + 1, count + 4),
      [MIN_DELAY, MIN_DELAY + 0.5 * MIN_DELAY, MIN_DELAY + 0.5 * 3 * MIN_DELAY], 'minDelay + random × (cap − minDelay)')
    const closes = (await events(page)).filter((e) => e.type === 'close')
    t.notOk(closes.some((e) => e.code === 4401 || e.code === 4408), 'a server shutdown is an ordinary close')
  })

  t.test('a token request failing with 5xx is retried with backoff', async (t) => {
    const server = await startServer(t)
    const page = await openPage(t, server)
    await page.evaluate(() => { Math.random = () => 1 })
    server.tokenStatus = 503
    await guarded(page)
    await until(t, 'three refused token requests', () => server.tokenRequests.length >= 3)
    server.tokenStatus = null
    await waitForEvent(page, 'open')
    const statuses = server.tokenRequests.map((r) => r.status)
    t.same(statuses.slice(0, 3), [503, 503, 503])
    t.equal(statuses[statuses.length - 1], 200)
    const delays = await page.evaluate(() => window.delays)
    t.same(delays.slice(0, 3), [MIN_DELAY, MIN_DELAY * 2, MIN_DELAY * 4])
    t.equal(delays.length, statuses.length - 1, 'one wait after each failure')
    t.same((await events(page)).map((e) => e.type), ['open'], 'failed attempts dispatch nothing')
  })

  t.test('401 or 403 from the token route ends the client with "unauthorized", without a retry', async (t) => {
    const server = await startServer(t)
    const page = await openPage(t, server)
    for (const status of [401, 403]) {
      server.tokenStatus = status
      const before = server.tokenRequests.length
      await guarded(page)
      await page.waitForFunction(() => window.log.some((e) => e.type === 'ended'))
      await quiet()
      t.same(await events(page), [{ type: 'ended', reason: 'unauthorized', error: { code: 'WS_GUARD_TOKEN_REQUEST_FAILED', status } }], `${status}: ended`)
      t.same(await page.evaluate(() => [window.ws.readyState, window.delays]), [3, []], 'no wait, no retry')
      t.equal(server.tokenRequests.length - before, 1, `${status}: one token request only`)
      await page.evaluate(() => { window.log = [] })
    }
    t.equal(server.upgrades.length, 0)
  })

  t.test('maxRetries: after that many reconnections without an open, "retries-exhausted"', async (t) => {
    const server = await startServer(t)
    const page = await openPage(t, server)
    server.tokenStatus = 500
    await guarded(page, { maxRetries: 2 })
    await waitForEvent(page, 'ended')
    await quiet()
    t.same(await events(page), [{ type: 'ended', reason: 'retries-exhausted', error: { code: 'WS_GUARD_TOKEN_REQUEST_FAILED', status: 500 } }])
    t.equal(server.tokenRequests.length, 3, 'the first attempt and two retries')
    t.equal((await page.evaluate(() => window.delays)).length, 2)

    // maxRetries: 0 never reconnects, not even after 4408
    server.tokenStatus = null
    await page.evaluate(() => { window.log = [] })
    await guarded(page, { maxRetries: 0 })
    await waitForEvent(page, 'open')
    server.upgrades[0]?.socket.close(4408, 'socket lifetime reached')
    await waitForEvent(page, 'ended')
    t.same((await events(page)).map((e) => [e.type, e.code ?? e.reason]), [['open', undefined], ['close', 4408], ['ended', 'retries-exhausted']])
    await quiet()
    t.equal(server.upgrades.length, 1)
  })

  t.test('close(): while open, while waiting to retry, while fetching the token; never reconnects', async (t) => {
    const server = await startServer(t)
    const page = await openPage(t, server)
    await guarded(page)
    await waitForEvent(page, 'open')
    const closing = await page.evaluate(() => {
      window.ws.close(4000, 'bye')
      const state = window.ws.readyState
      window.ws.close()
      return state
    })
    t.equal(closing, 2, 'CLOSING until the socket has closed')
    await waitForEvent(page, 'ended')
    await quiet()
    t.same((await events(page)).map((e) => [e.type, e.code ?? e.reason]), [['open', undefined], ['close', 4000], ['ended', 'closed']])
    t.same(server.upgrades[0]?.closed, { code: 4000, reason: 'bye' }, 'the server got the code and reason')
    t.equal(server.tokenRequests.length, 1)
    t.equal(await page.evaluate(() => window.ws.readyState), 3)

    // a bad close code is refused as a WebSocket refuses it, and changes nothing
    await page.evaluate(() => { window.log = [] })
    await guarded(page)
    await waitForEvent(page, 'open')
    const bad = await page.evaluate(() => { try { window.ws.close(1006); return 'closed' } catch (err) { return (err as Error).name } })
    t.equal(bad, 'InvalidAccessError')
    t.equal(await page.evaluate(() => window.ws.readyState), 1, 'still open')
    await page.evaluate(() => window.ws.close())
    // its close and end arrive later: had they come after the log below was cleared, they
    // would be read as the next part's (seen under load: a close 1005 and a second ended)
    await waitForEvent(page, 'ended')

    // during a backoff wait
    server.tokenStatus = 503
    await page.evaluate(() => { window.log = []; window.delays = [] })
    const requests = server.tokenRequests.length
    // a long wait, so that a loaded machine cannot reach the retry before close() does
    await guarded(page, { minDelay: 10_000, maxDelay: 10_000 })
    await page.waitForFunction(() => window.delays.length === 1)
    const sync = await page.evaluate(() => {
      window.ws.close()
      return [window.ws.readyState, window.log.length]
    })
    t.same(sync, [3, 0], 'CLOSED at once; ended comes after close() returns')
    await waitForEvent(page, 'ended')
    await quiet()
    t.same(await events(page), [{ type: 'ended', reason: 'closed' }])
    t.equal(server.tokenRequests.length - requests, 1, 'no token request after close()')

    // during the token request: the socket is never made
    server.tokenStatus = null
    await page.evaluate(() => { window.log = [] })
    const upgrades = server.upgrades.length
    await page.evaluate(() => {
      window.ws = window.track(new window.client.GuardedWebSocket('/chat'))
      window.ws.close()
    })
    await waitForEvent(page, 'ended')
    await quiet()
    t.same(await events(page), [{ type: 'ended', reason: 'closed' }])
    t.equal(server.upgrades.length, upgrades, 'no upgrade')

    // from a close listener: the reconnection it would have made is not made
    await page.evaluate(() => { window.log = [] })
    await guarded(page)
    await waitForEvent(page, 'open')
    await page.evaluate(() => { window.ws.addEventListener('close', () => window.ws.close()) })
    server.upgrades[server.upgrades.length - 1]?.socket.close(1011)
    await waitForEvent(page, 'ended')
    await quiet()
    t.same((await events(page)).map((e) => [e.type, e.code ?? e.reason]), [['open', undefined], ['close', 1011], ['ended', 'closed']])
    t.equal(server.upgrades.length, upgrades + 1)
  })

  t.test('path: binds the token to another path (a proxy that rewrites paths), or to none', async (t) => {
    const server = await startServer(t)
    const page = await openPage(t, server)
    const results = await page.evaluate(async () => {
      const { openGuardedWebSocket } = window.client
      const outcome = async (options?: object) => {
        try {
          const socket = await openGuardedWebSocket('/app/chat', options)
          const protocol = socket.protocol
          socket.close()
          return 'opened ' + protocol
        } catch (err) {
          return (err as { code: string }).code
        }
      }
      return [await outcome(), await outcome({ path: '/chat' }), await outcome({ path: null })]
    })
    t.same(results, ['WS_GUARD_UPGRADE_FAILED', 'opened websocket-guard', 'opened websocket-guard'])
    t.same(server.tokenRequests.map((r) => r.path), ['/app/chat', '/chat', null], 'the page path, the given path, no path')
    t.same(server.rejections.map((r) => r.code), ['WS_GUARD_TOKEN_MISMATCH'], 'the page path\'s token is not valid on /chat')
    t.same(server.upgrades.map((u) => u.url), ['/chat', '/chat'])

    await guarded(page, { path: '/chat' }, '/app/chat')
    await waitForEvent(page, 'open')
    await page.evaluate(() => window.ws.close())
    await guarded(page, { path: null, transport: 'query' }, '/app/chat')
    await waitForEvent(page, 'open', 2)
    t.same(server.tokenRequests.slice(3).map((r) => r.path), ['/chat', null])
    t.equal(server.upgrades.length, 4)
    t.match(server.upgrades[3]?.url, /^\/chat\?token=[A-Za-z0-9_-]{43}$/, 'the query transport')
  })

  t.test('bad URLs and options throw WS_GUARD_CLIENT_OPTIONS from the constructor, before any request', async (t) => {
    const server = await startServer(t)
    const page = await openPage(t, server)
    const cases: Array<[string, Record<string, unknown> | null]> = [
      ['ftp://example.com/chat', {}],
      ['http://[bad', {}],
      ['/chat', null],
      ['/chat', { maxRetry: 3 }],
      ['/chat', { signal: null }],
      ['/chat', { transport: 'header' }],
      ['/chat', { protocols: ['websocket-guard.x'] }],
      ['/chat', { tokenUrl: 'http://[bad' }],
      ['/chat', { tokenUrl: 42 }],
      ['/chat', { path: 'chat' }],
      ['/chat', { path: '/chat?x=1' }],
      ['/chat', { path: 42 }],
      ['/chat', { minDelay: 0 }],
      ['/chat', { minDelay: '500' }],
      ['/chat', { minDelay: Number.NaN }],
      ['/chat', { maxDelay: 100, minDelay: 200 }],
      ['/chat', { maxDelay: 2 ** 31 }],
      ['/chat', { maxRetries: -1 }],
      ['/chat', { maxRetries: 1.5 }],
      ['/chat', { maxRetries: '3' }]
    ]
    const outcomes = await page.evaluate((cases) => cases.map(([url, options]) => {
      try {
        const ws = new window.client.GuardedWebSocket(url, options as object)
        ws.close()
        return 'constructed'
      } catch (err) {
        return [(err as Error).name, (err as { code: string }).code, err instanceof window.client.GuardedWebSocketError, (err as Error).message]
      }
    }), cases)
    for (const [i, outcome] of outcomes.entries()) {
      t.match(outcome, ['GuardedWebSocketError', 'WS_GUARD_CLIENT_OPTIONS', true, /^GuardedWebSocket: /], JSON.stringify(cases[i]))
    }
    t.match(outcomes[3], [String, String, true, /unknown option "maxRetry"/])
    t.match(outcomes[4], [String, String, true, /unknown option "signal"/], 'close() stops a GuardedWebSocket, not a signal')
    const open = await page.evaluate(async () => window.client.openGuardedWebSocket('/chat', { maxRetries: 1 }).then(() => 'opened', (err: { code: string, message: string }) => [err.code, err.message]))
    t.same(open, ['WS_GUARD_CLIENT_OPTIONS', 'openGuardedWebSocket: unknown option "maxRetries"'])
    await quiet()
    t.same(server.tokenRequests, [], 'no request made')
  })
}
