/**
 * The demo that `npm start` runs, in real headless Chromium: the chat page connects through
 * fastify-websocket-guard/client, and the attacker's page on another origin (same host,
 * another port: the browser sends it the chat's session cookie) tries to hijack the socket.
 * Every refusal is checked where it happens, in the server's `onReject`, so a test cannot pass
 * because the browser, rather than the guard, stopped something.
 */
import t, { type Test } from 'tap'
import { mkdirSync, writeFileSync } from 'node:fs'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { createServer } from 'node:net'
import { dirname, join } from 'node:path'
import type { Browser, BrowserContext, Page } from 'playwright-core'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { WebSocket as ServerSocket } from 'ws'
import { chromiumAvailable, launchChromium } from './helpers/browser'
import { builtPackage, sleep } from './helpers/util'

interface Demo {
  chat: FastifyInstance
  attacker: FastifyInstance
  chatUrl: string
  attackerUrl: string
  close (): Promise<void>
}
interface Connect {
  url: string
  protocol: string
  websocketGuard: { origin: string | null, token: string | null }
  name: string
  socket: ServerSocket
}
interface DemoOptions {
  port?: number
  attackerPort?: number
  guard?: Record<string, unknown>
  onReject?: (error: Error & { code: string }, request: FastifyRequest, details: { url: string }) => void
  onConnect?: (connect: Connect) => void
  onRequest?: (request: FastifyRequest) => void
}
// examples/app.js is plain CommonJS, as users run it
const { startDemo } = require('../examples/app.js') as { startDemo: (options: DemoOptions) => Promise<Demo> }

interface Rejection {
  code: string
  route: string | undefined
  url: string
  /** onReject's `details.url`, which the demo reports from */
  redactedUrl: string
  origin: string | undefined
  cookie: string | undefined
  sessionId: string | undefined
}

/** A request the chat received, as its `onRequest` hook saw it. */
interface Received {
  route: string | undefined
  upgrade: boolean
}

interface Setup {
  demo: Demo
  context: BrowserContext
  rejections: Rejection[]
  connects: Connect[]
  /** every request the chat received, in order */
  received: Received[]
  /** every token the browser was handed by the token route */
  issued: string[]
  /** every console message of every page, to check that none shows a token */
  consoleLines: string[]
  /** `name=value` of the chat's session cookie, once a page of the chat has set it */
  sessionCookie (): Promise<string>
  /** the chat page, connected */
  openChat (): Promise<Page>
  /** the attacker's page; `manual`: attempts run only when the test calls them */
  openAttacker (manual?: boolean): Promise<Page>
  /** a blank document on the chat's origin (no socket of its own), logged in, to call the client from */
  openChatOrigin (): Promise<Page>
  /** everything the attacker's event stream sent so far, read from Node (not from a page) */
  streamText (): string
}

// The functions given to page.evaluate run in Chromium. The project compiles without the DOM
// lib, so these declare the little of the page that they use.
interface PageSocket {
  readonly protocol: string
  readonly url: string
  readonly readyState: number
  send (data: string): void
  close (): void
  addEventListener (type: 'message', listener: (event: { data: string }) => void): void
}
interface AttemptResult {
  outcome: 'refused' | 'opened' | 'skipped'
  detail: string
  /** from the server's report of a refusal: `null` when none came */
  code?: string | null
  statusCode?: number
  origin?: string | null
}
interface PageGuardedWebSocket {
  readonly readyState: number
}
interface PageWindow {
  /** examples/public/chat.js */
  demo: {
    connect (transport?: 'protocol' | 'query'): Promise<PageSocket>
    login (): Promise<string>
    logout (): Promise<void>
    leakToken (): Promise<string>
    useLeakedToken (): Promise<boolean>
    socket: PageGuardedWebSocket | null
  }
  /** examples/attacker/attacker.js */
  attack: {
    plainSocket (): Promise<AttemptResult>
    readToken (): Promise<AttemptResult>
    leakedInQuery (token: string): Promise<AttemptResult>
    leakedInProtocol (token: string): Promise<AttemptResult>
    replaySpent (): Promise<AttemptResult>
    unguarded (): Promise<AttemptResult>
    leakedToken (): Promise<string | null>
    ready: Promise<void>
    done: Promise<Record<string, AttemptResult> | null>
    runs: number
    loot: { leaked: boolean, used: boolean, version: number }
  }
  /** dist/client.js, put there by loadClient() */
  client?: {
    openGuardedWebSocket (url: unknown, options?: unknown): Promise<PageSocket>
    GuardedWebSocket: new (url: unknown, options?: unknown) => PageGuardedWebSocket & { addEventListener (type: 'ended', listener: (event: { reason: string }) => void): void }
  }
  fetch: typeof fetch
  WebSocket: any
}
declare const window: PageWindow
declare const document: {
  getElementById (id: string): { textContent: string | null } | null
  images: ArrayLike<{ complete: boolean, naturalWidth: number }>
  documentElement: { outerHTML: string }
}
declare const location: { href: string }

/** Imports the client in the page, as a page's own `<script type="module">` would. */
async function loadClient (page: Page): Promise<void> {
  await page.addScriptTag({ type: 'module', content: "import * as client from '/client.js'; window.client = client" })
  await page.waitForFunction(() => window.client !== undefined)
}

/** A port nothing listens on. */
async function closedPort (): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as { port: number }
  await new Promise((resolve) => server.close(resolve))
  return port
}

const VIEWPORT = { width: 640, height: 760 }

let browser: Browser | undefined

interface SetupOptions {
  /** plugin options beyond the demo's */
  guard?: Record<string, unknown>
  /** fixed ports, for the screenshot only (the ports the README names); tests use free ones */
  ports?: { port: number, attackerPort: number }
}

async function setup (t: Test, { guard = {}, ports }: SetupOptions = {}): Promise<Setup> {
  const rejections: Rejection[] = []
  const connects: Connect[] = []
  const received: Received[] = []
  const issued: string[] = []
  const consoleLines: string[] = []
  const demo = await startDemo({
    ...ports,
    guard,
    onReject (error, request, details) {
      const session = (request as unknown as { session?: { sessionId?: string } }).session
      rejections.push({
        code: error.code,
        route: request.routeOptions.url,
        url: request.url,
        redactedUrl: details.url,
        origin: request.headers.origin,
        cookie: request.headers.cookie,
        sessionId: session?.sessionId
      })
    },
    onConnect (connect) { connects.push(connect) },
    onRequest (request) {
      received.push({ route: request.routeOptions.url, upgrade: request.headers.upgrade?.toLowerCase() === 'websocket' })
    }
  })
  // the attacker's event stream, as any client of it gets it
  const streamAbort = new AbortController()
  let stream = ''
  const streamDone = fetch(demo.attackerUrl + '/events', { signal: streamAbort.signal }).then(async (res) => {
    const decoder = new TextDecoder()
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) stream += decoder.decode(chunk, { stream: true })
  }).catch(() => {})
  const context = await (browser as Browser).newContext({ viewport: VIEWPORT })
  const reading: Array<Promise<void>> = []
  context.on('response', (response) => {
    if (new URL(response.url()).pathname !== '/websocket-token') return
    reading.push(response.json().then((body: { token?: unknown }) => {
      if (typeof body.token === 'string') issued.push(body.token)
    }, () => {}))
  })
  // the pages first: the chat page reconnects whenever its server goes away
  t.teardown(async () => {
    await context.close()
    await Promise.all(reading)
    streamAbort.abort()
    await demo.close()
    await streamDone
  })

  async function page (url: string): Promise<Page> {
    const p = await context.newPage()
    p.on('console', (message) => { consoleLines.push(message.text()) })
    p.on('pageerror', (err) => { consoleLines.push(String(err)) })
    await p.goto(url)
    return p
  }

  return {
    demo,
    context,
    rejections,
    connects,
    received,
    issued,
    consoleLines,
    async sessionCookie () {
      const cookies = await context.cookies(demo.chatUrl)
      const found = cookies.find((c) => c.name === 'sessionId')
      if (found === undefined) throw new Error('no session cookie')
      return `${found.name}=${found.value}`
    },
    async openChat () {
      const p = await page(demo.chatUrl + '/')
      await p.waitForFunction(() => document.getElementById('status')?.textContent === 'connected')
      return p
    },
    async openAttacker (manual = false) {
      const p = await page(demo.attackerUrl + (manual ? '/?manual' : '/'))
      // the page's module awaits its config first: 'load' may come before it has run
      await p.waitForFunction(() => window.attack !== undefined)
      // and its event stream must be open before an attempt, or the report would be missed
      await p.evaluate(() => window.attack.ready)
      return p
    },
    async openChatOrigin () {
      const p = await page(demo.chatUrl + '/demo.json')
      // logged in once a second login finds the first one's name (it is a no-op then); a
      // session that did not keep it is logged in afresh, at most five times
      const loggedIn = await p.evaluate(async () => {
        const login = async (): Promise<unknown> => ((await (await window.fetch('/login', { method: 'POST' })).json()) as { name?: unknown }).name
        let name = await login()
        for (let i = 0; i < 5; i++) {
          const again = await login()
          if (again === name && typeof name === 'string') return true
          name = again
        }
        return false
      })
      if (!loggedIn) throw new Error('the demo never logged the chat page in')
      await loadClient(p)
      return p
    },
    streamText: () => stream
  }
}

/** The session id inside a signed `sessionId=<id>.<signature>` cookie. */
function sessionIdOf (cookie: string): string {
  return decodeURIComponent(cookie.slice(cookie.indexOf('=') + 1)).split('.')[0] as string
}

if (chromiumAvailable(t) && builtPackage(t, 'the browser demo (examples/app.js)', ['dist/index.js', 'dist/client.mjs'])) {
  t.before(async () => {
    browser = await launchChromium()
  })
  t.teardown(async () => { await browser?.close() })

  t.test('npm start: examples/app.js prints the chat\'s and the attacker\'s URLs and serves both', async (t) => {
    const child = spawn(process.execPath, [join(__dirname, '..', 'examples', 'app.js')], {
      env: { ...process.env, PORT: '0', ATTACKER_PORT: '0' },
      stdio: ['ignore', 'pipe', 'inherit']
    })
    t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL') })
    let out = ''
    child.stdout.setEncoding('utf8')
    // until the last line of the banner, or until it exits if it dies first
    await new Promise<void>((resolve) => {
      child.stdout.on('data', (chunk: string) => {
        out += chunk
        if (out.includes('Ctrl-C')) resolve()
      })
      child.once('exit', () => resolve())
    })
    const urls = [...out.matchAll(/^(chat \(the victim\)|attacker): +(http:\/\/127\.0\.0\.1:\d+\/)$/gm)].map((m) => m[2] as string)
    t.equal(urls.length, 2, 'two URLs')
    t.not(urls[0], urls[1], 'two origins')
    for (const url of urls) {
      const res = await fetch(url)
      t.equal(res.status, 200)
      t.match(await res.text(), /<script type="module"/)
    }
    child.kill('SIGTERM')
    const [code] = await once(child, 'exit')
    t.equal(code, 0, 'SIGTERM closes both servers and exits')
  })

  t.test('the chat page connects through the client with the subprotocol transport', async (t) => {
    const s = await setup(t)
    const chat = await s.openChat()
    t.equal(s.connects.length, 1, 'the page opened one socket')
    const first = s.connects[0] as Connect
    t.equal(first.url, '/chat', 'no token in the URL')
    t.equal(first.protocol, 'websocket-guard', 'the server selected the bare protocol, not the token entry')
    t.equal(first.websocketGuard.origin, s.demo.chatUrl)
    t.match(first.websocketGuard.token, /^[A-Za-z0-9_-]{43}$/)

    const opened = await chat.evaluate(async () => {
      const socket = await window.demo.connect('protocol')
      return { protocol: socket.protocol, url: socket.url, readyState: socket.readyState }
    })
    t.same(opened, { protocol: 'websocket-guard', url: s.demo.chatUrl.replace('http', 'ws') + '/chat', readyState: 1 })

    // the user's own protocols are offered too; ws's default selects the first offered one
    await loadClient(chat)
    const withOwn = await chat.evaluate(async () => {
      const socket = await window.client!.openGuardedWebSocket('/chat', { protocols: ['chat.v1'] })
      return socket.protocol
    })
    t.equal(withOwn, 'websocket-guard')
    t.equal(s.connects.length, 3)
    t.equal(new Set(s.connects.map((c) => c.websocketGuard.token)).size, 3, 'a fresh token for each socket')
    t.same(s.rejections, [], 'nothing refused')
    const tokens = s.connects.map((c) => c.websocketGuard.token as string)
    t.notOk(s.consoleLines.some((line) => tokens.some((token) => line.includes(token))), 'no token in the console')
  })

  t.test('the chat page connects through the client with the query transport', async (t) => {
    const s = await setup(t)
    const chat = await s.openChat()
    const opened = await chat.evaluate(async () => {
      const socket = await window.demo.connect('query')
      return { protocol: socket.protocol, readyState: socket.readyState }
    })
    t.same(opened, { protocol: '', readyState: 1 }, 'no subprotocol offered, none selected')
    const last = s.connects[s.connects.length - 1] as Connect
    t.equal(last.url, '/chat?token=' + last.websocketGuard.token, 'the token came in the query')
    t.equal(s.connects.length, 2)
    t.same(s.rejections, [])
  })

  t.test('several connections from one session at once all open', async (t) => {
    const s = await setup(t)
    const chat = await s.openChat()
    const count = 6
    const results = await chat.evaluate(async (count) => {
      const settled = await Promise.allSettled(Array.from({ length: count }, (_, i) => window.demo.connect(i % 2 === 0 ? 'protocol' : 'query')))
      const sockets = settled.flatMap((r) => r.status === 'fulfilled' ? [r.value] : [])
      // each open socket hears a message one of them sends: they are all really open
      const heard = sockets.map((socket) => new Promise<boolean>((resolve) => {
        socket.addEventListener('message', (event) => { if (JSON.parse(event.data).text === 'all here') resolve(true) })
      }))
      sockets[0]?.send('all here')
      await Promise.all(heard)
      return settled.map((r) => r.status === 'fulfilled' ? 'open' : (r.reason as { code?: string }).code)
    }, count)
    t.same(results, Array(count).fill('open'))
    t.equal(s.connects.length, 1 + count, 'the server opened every one')
    t.equal(new Set(s.connects.map((c) => c.name)).size, 1, 'all in one session')
    t.equal(new Set(s.connects.map((c) => c.websocketGuard.token)).size, 1 + count, 'each with its own token')
    t.same(s.rejections, [])
  })

  t.test('the chat reconnects with a fresh token when its socket closes', async (t) => {
    const s = await setup(t)
    const chat = await s.openChat()
    const first = s.connects[0] as Connect
    first.socket.close(1012, 'restart')
    await chat.waitForFunction(() => document.getElementById('status')?.textContent !== 'connected')
    t.equal(await chat.locator('#last-close').textContent(), 'last close: 1012 restart', 'the page shows the close')
    await chat.waitForFunction(() => document.getElementById('status')?.textContent === 'connected')
    t.equal(s.connects.length, 2, 'connected again')
    t.not((s.connects[1] as Connect).websocketGuard.token, first.websocketGuard.token, 'with a new token')
    t.same(s.rejections, [])
  })

  t.test('logging out in one tab closes both tabs\' sockets with 4401; neither asks for a token or upgrades again', async (t) => {
    const s = await setup(t)
    const tabA = await s.openChat()
    const tabB = await s.openChat()
    t.equal(s.connects.length, 2, 'one socket per tab')
    t.equal((s.connects[0] as Connect).name, (s.connects[1] as Connect).name, 'one session, two tabs')
    const cookie = await s.sessionCookie()

    const before = s.received.length
    // a background tab gets no animation frames, and Playwright's click waits for them
    await tabA.bringToFront()
    await tabA.click('#logout')
    const ended = async (tab: Page): Promise<boolean> => await tab.waitForFunction(
      () => document.getElementById('status')?.textContent === 'logged out (session-ended)', undefined, { timeout: 5000 }
    ).then(() => true, () => false)
    const [endedA, endedB] = await Promise.all([ended(tabA), ended(tabB)])
    t.ok(endedA, 'tab A (the one that logged out) ended with session-ended')
    t.ok(endedB, 'tab B ended with session-ended')
    for (const [name, tab] of [['A', tabA], ['B', tabB]] as const) {
      t.equal(await tab.locator('#last-close').textContent(), 'last close: 4401 session ended', `tab ${name} shows the close code and reason`)
      t.equal(await tab.locator('#messages li.life').last().textContent(), 'ended: session-ended, not reconnecting', `tab ${name} says it stops`)
      t.equal(await tab.evaluate(() => window.demo.socket?.readyState), 3, `tab ${name}'s GuardedWebSocket is closed`)
      t.ok(await tab.locator('#login').isVisible(), `tab ${name} offers to log in again`)
    }
    t.ok(s.connects.every((c) => c.socket.readyState === c.socket.CLOSED), 'the server closed both sockets')

    // longer than GuardedWebSocket's first backoff wait (minDelay, 500 ms): a reconnection would show here
    await sleep(1500)
    const after = s.received.slice(before)
    t.same(after.map((r) => r.route), ['/logout'], 'after the logout, the chat received no token request and no upgrade')
    t.equal(after.filter((r) => r.upgrade).length, 0)
    t.equal(s.connects.length, 2, 'no socket opened')
    t.same(s.rejections, [], 'nothing refused either: nothing was tried')
    const cookies = await s.context.cookies(s.demo.chatUrl)
    t.notOk(cookies.some((c) => c.name === 'sessionId'), `the session cookie is gone (it was ${cookie.length} characters)`)
  })

  t.test('"Log in again" starts a fresh session and reconnects', async (t) => {
    const s = await setup(t)
    const tabA = await s.openChat()
    const tabB = await s.openChat()
    const oldSession = sessionIdOf(await s.sessionCookie())
    const oldName = (s.connects[0] as Connect).name
    await tabA.bringToFront()
    await tabA.click('#logout')
    const ended = await Promise.all([tabA, tabB].map(async (tab) => await tab.waitForFunction(
      () => document.getElementById('status')?.textContent === 'logged out (session-ended)', undefined, { timeout: 5000 }
    ).then(() => true, () => false)))
    t.same(ended, [true, true], 'both tabs logged out')
    if (!ended.every(Boolean)) return

    await tabA.bringToFront()

    await tabA.click('#login')
    await tabA.waitForFunction(() => document.getElementById('status')?.textContent === 'connected')
    const newSession = sessionIdOf(await s.sessionCookie())
    t.not(newSession, oldSession, 'a new session id')
    t.equal(s.connects.length, 3, 'tab A opened a socket again')
    const again = s.connects[2] as Connect
    t.not(again.name, oldName, 'as a new guest')
    t.not(again.websocketGuard.token, (s.connects[0] as Connect).websocketGuard.token, 'with a fresh token')
    t.equal(await tabA.evaluate(() => window.demo.socket?.readyState), 1)
    t.equal(await tabB.evaluate(() => window.demo.socket?.readyState), 3, 'tab B stays logged out until asked')

    // tab B joins the new session: the browser holds its cookie now
    await tabB.bringToFront()
    await tabB.click('#login')
    await tabB.waitForFunction(() => document.getElementById('status')?.textContent === 'connected')
    t.equal(s.connects.length, 4)
    t.equal((s.connects[3] as Connect).name, again.name, 'tab B is in the same new session')
    t.equal(sessionIdOf(await s.sessionCookie()), newSession, 'logging in while logged in keeps the session')
    t.ok((s.connects[2] as Connect).socket.readyState === 1, 'and leaves tab A connected')
    t.same(s.rejections, [])
  })

  t.test('logged out, the token route answers 401 and the page\'s client stops ("unauthorized")', async (t) => {
    const s = await setup(t)
    const page = await s.openChatOrigin()
    const outcome = await page.evaluate(async () => {
      await window.fetch('/logout', { method: 'POST' })
      const res = await window.fetch('/websocket-token?path=/chat')
      const body = await res.json() as Record<string, unknown>
      const socket = new window.client!.GuardedWebSocket('/chat')
      const reason = await new Promise<string>((resolve) => socket.addEventListener('ended', (event: { reason: string }) => resolve(event.reason)))
      return { status: res.status, body, reason }
    })
    t.equal(outcome.status, 401)
    t.equal(outcome.body.code, 'DEMO_LOGGED_OUT')
    t.notOk('token' in outcome.body)
    t.equal(outcome.reason, 'unauthorized')
    t.same(s.received.filter((r) => r.route === '/websocket-token').length, 2, 'one token request each, no retry')
    t.same(s.connects, [])
  })

  t.test('logging in or out from another origin is refused', async (t) => {
    const s = await setup(t)
    const chat = await s.openChat()
    const attacker = await s.openAttacker(true)
    const statuses = await attacker.evaluate(async (chatUrl) => {
      const out = []
      for (const path of ['/logout', '/login']) {
        // a no-cors POST, as a cross-site form would send: the page cannot read the answer
        await fetch(chatUrl + path, { method: 'POST', mode: 'no-cors', credentials: 'include' })
        out.push(path)
      }
      return out
    }, s.demo.chatUrl)
    t.same(statuses, ['/logout', '/login'])
    await sleep(200)
    t.equal(await chat.evaluate(() => window.demo.socket?.readyState), 1, 'the chat is still connected: no logout')
    t.equal(s.connects.length, 1)
    const res = await fetch(s.demo.chatUrl + '/logout', { method: 'POST', headers: { origin: s.demo.attackerUrl, cookie: await s.sessionCookie() } })
    t.equal(res.status, 403)
    t.equal(((await res.json()) as { code?: string }).code, 'DEMO_CROSS_ORIGIN')
  })

  t.test('the attacker\'s plain socket, with the victim\'s cookie, is refused by the server, and its page shows the code', async (t) => {
    const s = await setup(t)
    const chat = await s.openChat()
    const cookie = await s.sessionCookie()
    const attacker = await s.openAttacker(true)

    const plain = await attacker.evaluate(() => window.attack.plainSocket())
    t.equal(plain.outcome, 'refused')
    t.equal(s.rejections.length, 1, 'the server refused it')
    const rejection = s.rejections[0] as Rejection
    t.equal(rejection.code, 'WS_GUARD_ORIGIN_NOT_ALLOWED')
    t.equal(rejection.route, '/chat')
    t.equal(rejection.origin, s.demo.attackerUrl, 'the browser set the attacker\'s Origin')
    t.ok(rejection.cookie?.includes(cookie), 'the browser sent the victim\'s session cookie with it')
    t.equal(rejection.sessionId, sessionIdOf(cookie), 'so the server saw the victim\'s session')
    t.match(plain, { code: 'WS_GUARD_ORIGIN_NOT_ALLOWED', statusCode: 403, origin: s.demo.attackerUrl }, 'the page got the server\'s code over its event stream')
    t.match(plain.detail, /code 1006/, 'while the page itself saw only a 1006')

    // the control: without the guard, the very same socket opens as the victim
    const control = await attacker.evaluate(() => window.attack.unguarded())
    t.equal(control.outcome, 'opened', 'the browser itself does not stop a cross-origin socket')
    const name = await chat.evaluate(() => document.getElementById('who')?.textContent)
    t.equal('as ' + /for (guest-[0-9a-f]+)/.exec(control.detail)?.[1], name, 'it opened as the victim')
    t.equal(s.connects.length, 1, 'the attacker opened no chat socket')
    t.equal(await chat.evaluate(() => window.demo.socket?.readyState), 1, 'the chat is still connected')
  })

  t.test('the attacker cannot read a token from the token route', async (t) => {
    const s = await setup(t)
    await s.openChat()
    const cookie = await s.sessionCookie()
    const attacker = await s.openAttacker(true)

    const read = await attacker.evaluate(() => window.attack.readToken())
    t.equal(read.outcome, 'refused')
    t.match(read.detail, /^the page saw: TypeError/, 'the fetch failed in the page')
    t.equal(read.code, 'WS_GUARD_ORIGIN_NOT_ALLOWED', 'the page got the server\'s code')
    t.equal(s.rejections.length, 1, 'the server refused to issue a token, not only CORS')
    const rejection = s.rejections[0] as Rejection
    t.equal(rejection.code, 'WS_GUARD_ORIGIN_NOT_ALLOWED')
    t.equal(rejection.route, '/websocket-token')
    t.equal(rejection.origin, s.demo.attackerUrl)
    t.ok(rejection.cookie?.includes(cookie), 'with the victim\'s cookie')

    // A no-cors fetch sends neither Origin nor a readable answer back: whatever the server
    // does with it, the page gets an opaque response and no token.
    const opaque = await attacker.evaluate(async (chatUrl) => {
      const res = await fetch(chatUrl + '/websocket-token?path=/chat', { mode: 'no-cors', credentials: 'include' })
      return { type: res.type, status: res.status, body: await res.text() }
    }, s.demo.chatUrl)
    t.same(opaque, { type: 'opaque', status: 0, body: '' }, 'nothing readable')
    t.equal(s.rejections.length, 2, 'the server refused the no-cors request too: it issued nothing')
    t.equal((s.rejections[1] as Rejection).code, 'WS_GUARD_ORIGIN_NOT_ALLOWED')
    t.equal(s.connects.length, 1)
  })

  t.test('a leaked token is refused to the attacker, in the query and as a subprotocol, and still works once for the victim', async (t) => {
    const s = await setup(t)
    const chat = await s.openChat()
    const cookie = await s.sessionCookie()
    const token = await chat.evaluate(() => window.demo.leakToken())
    const attacker = await s.openAttacker(true)
    t.equal(await attacker.evaluate(() => window.attack.leakedToken()), token, 'the attacker has the token')

    const inQuery = await attacker.evaluate((token) => window.attack.leakedInQuery(token), token)
    t.match(inQuery, { outcome: 'refused', code: 'WS_GUARD_ORIGIN_NOT_ALLOWED' })
    const inProtocol = await attacker.evaluate((token) => window.attack.leakedInProtocol(token), token)
    t.match(inProtocol, { outcome: 'refused', code: 'WS_GUARD_ORIGIN_NOT_ALLOWED' })

    t.equal(s.rejections.length, 2, 'the server refused both')
    const [query, protocol] = s.rejections as [Rejection, Rejection]
    t.equal(query.code, 'WS_GUARD_ORIGIN_NOT_ALLOWED')
    t.match(query.url, new RegExp(`^/chat\\?token=${token}&attempt=[\\w-]+$`), 'the query attempt carried the token')
    t.notOk(query.redactedUrl.includes(token), 'onReject\'s details.url, which the demo reports from, does not')
    t.equal(protocol.code, 'WS_GUARD_ORIGIN_NOT_ALLOWED')
    t.match(protocol.url, /^\/chat\?attempt=[\w-]+$/)
    for (const r of s.rejections) {
      t.equal(r.origin, s.demo.attackerUrl)
      t.ok(r.cookie?.includes(cookie), 'with the victim\'s cookie')
    }

    // refused at the origin check, the token was never looked at: it is still there
    t.equal(await chat.evaluate(() => window.demo.useLeakedToken()), true, 'the victim can still use it')
    const used = s.connects[s.connects.length - 1] as Connect
    t.equal(used.websocketGuard.token, token)
    t.equal(await chat.evaluate(() => window.demo.useLeakedToken()), false, 'but only once')
    t.equal(s.rejections.length, 3)
    t.equal((s.rejections[2] as Rejection).code, 'WS_GUARD_NO_TOKEN_STORED')
    t.equal((s.rejections[2] as Rejection).origin, s.demo.chatUrl)
    t.equal(await chat.evaluate(() => window.demo.socket?.readyState), 1, 'the chat is still connected')
  })

  t.test('the replay of a spent token, from the attacker\'s server with the chat\'s own Origin, is stopped by the token alone', async (t) => {
    const s = await setup(t)
    const chat = await s.openChat()
    const attacker = await s.openAttacker(true)
    t.match(await attacker.evaluate(() => window.attack.replaySpent()), { outcome: 'skipped', detail: 'no leaked token yet' })

    const token = await chat.evaluate(() => window.demo.leakToken())
    await attacker.waitForFunction(() => window.attack.loot.leaked)
    t.same(await attacker.evaluate(() => window.attack.loot), { leaked: true, used: false, version: 1 }, 'the stream says a token leaked, not which')
    t.equal(await chat.evaluate(() => window.demo.useLeakedToken()), true, 'the victim spends it')
    await attacker.waitForFunction(() => window.attack.loot.used)

    const replayed = await attacker.evaluate(() => window.attack.replaySpent())
    t.match(replayed, { outcome: 'refused', detail: 'HTTP 403: no socket', statusCode: 403, code: 'WS_GUARD_NO_TOKEN_STORED', origin: s.demo.chatUrl })
    const rejection = s.rejections[s.rejections.length - 1] as Rejection
    t.equal(rejection.code, 'WS_GUARD_NO_TOKEN_STORED', 'the token check refused it')
    t.equal(rejection.origin, s.demo.chatUrl, 'with an Origin the guard allows: the origin check passed')
    t.match(rejection.url, /^\/chat\?attempt=[\w-]+$/)
    t.equal(rejection.cookie, undefined, 'and no cookie: the attacker\'s server never relays the one the browser sends it')
    t.equal(s.rejections.length, 1, 'nothing else was refused')
    t.equal(s.connects.filter((c) => c.websocketGuard.token === token).length, 1, 'the token opened one socket, the victim\'s')
  })

  t.test('the demo: the attacker page updates by itself, shows every refusal\'s code, and never a token', async (t) => {
    const s = await setup(t)
    const chat = await s.openChat()
    const attacker = await s.openAttacker()
    const outcomes = (results: Record<string, AttemptResult> | null): Record<string, unknown> =>
      Object.fromEntries(Object.entries(results ?? {}).map(([key, r]) => [key, r.outcome === 'refused' ? r.code : r.outcome]))
    const cells = async (): Promise<string[]> => await attacker.locator('td.result').evaluateAll((cells) =>
      cells.map((c) => [c.querySelector('.outcome')?.textContent, c.querySelector('.code')?.textContent].filter(Boolean).join(' ')))

    // 1. no token yet
    t.same(outcomes(await attacker.evaluate(() => window.attack.done)), {
      plainSocket: 'WS_GUARD_ORIGIN_NOT_ALLOWED',
      readToken: 'WS_GUARD_ORIGIN_NOT_ALLOWED',
      leakedInQuery: 'skipped',
      leakedInProtocol: 'skipped',
      replaySpent: 'skipped',
      unguarded: 'opened'
    })
    // 2. a token leaks: the page runs again by itself
    await chat.evaluate(() => window.demo.leakToken())
    await attacker.waitForFunction(() => window.attack.runs === 2)
    t.same(outcomes(await attacker.evaluate(() => window.attack.done)), {
      plainSocket: 'WS_GUARD_ORIGIN_NOT_ALLOWED',
      readToken: 'WS_GUARD_ORIGIN_NOT_ALLOWED',
      leakedInQuery: 'WS_GUARD_ORIGIN_NOT_ALLOWED',
      leakedInProtocol: 'WS_GUARD_ORIGIN_NOT_ALLOWED',
      replaySpent: 'skipped',
      unguarded: 'opened'
    })
    // 3. the victim spends it: the page runs again, and replays it
    t.equal(await chat.evaluate(() => window.demo.useLeakedToken()), true, 'refused everywhere else, the leaked token still works once for the victim')
    await attacker.waitForFunction(() => window.attack.runs === 3)
    t.same(outcomes(await attacker.evaluate(() => window.attack.done)), {
      plainSocket: 'WS_GUARD_ORIGIN_NOT_ALLOWED',
      readToken: 'WS_GUARD_ORIGIN_NOT_ALLOWED',
      leakedInQuery: 'WS_GUARD_ORIGIN_NOT_ALLOWED',
      leakedInProtocol: 'WS_GUARD_ORIGIN_NOT_ALLOWED',
      replaySpent: 'WS_GUARD_NO_TOKEN_STORED',
      unguarded: 'opened'
    })
    t.same(await cells(), [
      'refused 403 WS_GUARD_ORIGIN_NOT_ALLOWED',
      'refused 403 WS_GUARD_ORIGIN_NOT_ALLOWED',
      'refused 403 WS_GUARD_ORIGIN_NOT_ALLOWED',
      'refused 403 WS_GUARD_ORIGIN_NOT_ALLOWED',
      'refused 403 WS_GUARD_NO_TOKEN_STORED',
      'hijacked (no guard)'
    ], 'the page shows each refusal\'s status and code')
    const attackerRefusals = s.rejections.filter((r) => /[?&]attempt=/.test(r.url))
    t.equal(attackerRefusals.length, 11, 'the server refused each attempt of the three runs (2 + 4 + 5)')
    t.ok(attackerRefusals.filter((r) => r.code === 'WS_GUARD_ORIGIN_NOT_ALLOWED').every((r) => r.origin === s.demo.attackerUrl))

    // the victim is still connected and can still chat
    await chat.bringToFront()
    t.equal(await chat.locator('#status').textContent(), 'connected')
    await chat.fill('#text', 'Still here after the attack.')
    await chat.press('#text', 'Enter')
    await chat.locator('#messages li', { hasText: 'Still here after the attack.' }).waitFor()

    // no token anywhere the attacker's page or its stream shows, of all the tokens there were
    const tokens = new Set([...s.issued, ...s.connects.map((c) => c.websocketGuard.token as string)])
    t.ok(tokens.size >= 2, `${tokens.size} tokens to look for`)
    const html = await attacker.evaluate(() => document.documentElement.outerHTML)
    t.match(html, /WS_GUARD_NO_TOKEN_STORED/, 'the page was read')
    t.match(s.streamText(), /event: refusal\ndata: \{"attempt":"[\w-]+","route":"\/chat","statusCode":403,"code":"WS_GUARD_ORIGIN_NOT_ALLOWED"/, 'the stream was read')
    for (const token of tokens) {
      t.notOk(html.includes(token), 'the attacker page shows no token')
      t.notOk(s.streamText().includes(token), 'its event stream carries no token')
    }
    const streamKeys = [...s.streamText().matchAll(/^data: (.*)$/gm)].map((m) => Object.keys(JSON.parse(m[1] as string)).sort().join(','))
    t.same([...new Set(streamKeys)].sort(), ['attempt,code,origin,route,statusCode', 'leaked,used,version'], 'the stream sends only these fields')
  })

  t.test('the demo, as `npm start` shows it (docs/demo.png): a socket\'s life, and the attack refused', async (t) => {
    // `npm run screenshot` runs on the ports the README names; tests always on free ones
    const update = process.env.UPDATE_SCREENSHOT === '1'
    const s = await setup(t, update ? { ports: { port: 3000, attackerPort: 3001 } } : {})
    const chat = await s.openChat()
    const attacker = await s.openAttacker()
    await attacker.evaluate(() => window.attack.done)
    await chat.evaluate(() => window.demo.leakToken())
    await attacker.waitForFunction(() => window.attack.runs === 2)
    await chat.evaluate(() => window.demo.useLeakedToken())
    await attacker.waitForFunction(() => window.attack.runs === 3)
    const results = await attacker.evaluate(() => window.attack.done)
    t.equal(results?.replaySpent?.code, 'WS_GUARD_NO_TOKEN_STORED')

    await chat.bringToFront()
    await chat.fill('#text', 'Still here after the attack.')
    await chat.press('#text', 'Enter')
    await chat.locator('#messages li', { hasText: 'Still here after the attack.' }).waitFor()
    await chat.click('#logout')
    const ended = await chat.waitForFunction(() => document.getElementById('status')?.textContent === 'logged out (session-ended)', undefined, { timeout: 5000 })
      .then(() => true, () => false)
    t.ok(ended, 'logged out: 4401, session-ended')
    if (!ended) return
    await chat.click('#login')
    await chat.waitForFunction(() => document.getElementById('status')?.textContent === 'connected')
    t.same(await chat.locator('#messages li.life').allTextContents(), [
      `logged in as ${(s.connects[0] as Connect).name}`,
      'socket open (websocket-guard)',
      'socket closed: 4401 session ended',
      'ended: session-ended, not reconnecting',
      `logged in as ${(s.connects[s.connects.length - 1] as Connect).name}`,
      'socket open (websocket-guard)'
    ], 'the chat page tells the socket\'s life')

    // One picture of both pages, side by side, made by Chromium from the two screenshots.
    const shots = await Promise.all([chat, attacker].map(async (p) => (await p.screenshot()).toString('base64')))
    const composite = await s.context.newPage()
    await composite.setViewportSize({ width: VIEWPORT.width * 2 + 12, height: VIEWPORT.height })
    await composite.setContent(`<body style="margin:0;display:flex;gap:12px;background:#444">${shots
      .map((b64) => `<img src="data:image/png;base64,${b64}" width="${VIEWPORT.width}" height="${VIEWPORT.height}">`).join('')}</body>`)
    await composite.waitForFunction(() => Array.from(document.images).every((img) => img.complete && img.naturalWidth > 0))
    const png = await composite.screenshot()
    t.same([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], 'a PNG')
    t.equal(png.readUInt32BE(16), VIEWPORT.width * 2 + 12, 'both pages side by side')
    if (update) t.same([s.demo.chatUrl, s.demo.attackerUrl], ['http://127.0.0.1:3000', 'http://127.0.0.1:3001'], 'the ports the README names')
    // docs/demo.png is committed: it is rewritten only on request, so a test run leaves the tree clean
    const target = update ? join(__dirname, '..', 'docs', 'demo.png') : join(t.testdir(), 'demo.png')
    mkdirSync(dirname(target), { recursive: true })
    writeFileSync(target, png)
    t.comment(`screenshot: ${target}`)
  })

  t.test('the client rejects with clear errors that never contain the token', async (t) => {
    const s = await setup(t)
    const page = await s.openChatOrigin()
    const port = await closedPort()
    const outcomes = await page.evaluate(async (port) => {
      const { openGuardedWebSocket } = window.client!
      // remember every token the token route hands out, to look for it in the errors
      const tokens: string[] = []
      const realFetch = window.fetch
      window.fetch = async (...args: Parameters<typeof fetch>) => {
        const res = await realFetch(...args)
        const body = await res.clone().json().catch(() => null) as { token?: unknown } | null
        if (typeof body?.token === 'string') tokens.push(body.token)
        return res
      }
      async function attempt (url: string, options?: object) {
        try {
          const socket = await openGuardedWebSocket(url, options)
          socket.close()
          return { opened: true }
        } catch (err) {
          const e = err as Error & Record<string, unknown>
          const text = [e.message, String(e), e.stack].join('\n')
          return {
            name: e.name,
            code: e.code,
            status: e.status,
            serverCode: e.serverCode,
            closeCode: e.closeCode,
            message: e.message,
            leaksToken: tokens.some((token) => text.includes(token))
          }
        }
      }
      return {
        badRequest: await attempt('/chat/' + 'x'.repeat(1100)),
        notFound: await attempt('/chat', { tokenUrl: '/nowhere' }),
        noToken: await attempt('/chat', { tokenUrl: '/demo.json' }),
        unreachable: await attempt('/chat', { tokenUrl: `http://127.0.0.1:${port}/websocket-token` }),
        wrongProtocolName: await attempt('/chat', { protocol: 'chat-guard' }),
        wrongQueryParam: await attempt('/chat', { transport: 'query', queryParam: 'ticket' }),
        tokens
      }
    }, port)
    t.match(outcomes.badRequest, { name: 'GuardedWebSocketError', code: 'WS_GUARD_TOKEN_REQUEST_FAILED', status: 400, serverCode: 'WS_GUARD_BAD_REQUEST', message: /token route refused \(HTTP 400 WS_GUARD_BAD_REQUEST\)/ })
    t.match(outcomes.notFound, { code: 'WS_GUARD_TOKEN_REQUEST_FAILED', status: 404, serverCode: undefined, message: /\(HTTP 404\)$/ })
    t.match(outcomes.noToken, { code: 'WS_GUARD_TOKEN_REQUEST_FAILED', status: 200, message: /answered no token/ })
    t.match(outcomes.unreachable, { code: 'WS_GUARD_TOKEN_REQUEST_FAILED', status: undefined, message: /could not be reached/ })
    const where = s.demo.chatUrl.replace('http', 'ws') + '/chat'
    t.match(outcomes.wrongProtocolName, { code: 'WS_GUARD_UPGRADE_FAILED', closeCode: 1006, message: `openGuardedWebSocket: the WebSocket to ${where} did not open (the server refused the upgrade or could not be reached)`, leaksToken: false })
    t.match(outcomes.wrongQueryParam, { code: 'WS_GUARD_UPGRADE_FAILED', closeCode: 1006, leaksToken: false })
    t.equal(outcomes.tokens.length, 2, 'the two upgrades got tokens')
    t.same(s.rejections.map((r) => [r.route, r.code]), [
      ['/chat', 'WS_GUARD_NO_TOKEN_PRESENTED'],
      ['/chat', 'WS_GUARD_NO_TOKEN_PRESENTED']
    ], 'the server refused both upgrades: no token where it looks')
    t.equal(s.connects.length, 0)

    const [inProtocol, inQuery] = outcomes.tokens as [string, string]
    // Chromium's console names a failed socket's URL, not its protocols
    t.notOk(s.consoleLines.some((line) => line.includes(inProtocol)), 'a token in a subprotocol stays out of the console')
    t.comment(`Chromium's console shows a failed socket's URL with its query token: ${s.consoleLines.some((line) => line.includes(inQuery))}`)

    // a refused upgrade consumed nothing: the token still opens a socket, once
    const reused = await page.evaluate((token) => new Promise<boolean>((resolve) => {
      const socket = new window.WebSocket(location.href.replace(/^http/, 'ws').replace('/demo.json', '/chat'), ['websocket-guard', 'websocket-guard.' + token])
      socket.onopen = () => { socket.close(); resolve(true) }
      socket.onerror = () => resolve(false)
    }), inProtocol)
    t.equal(reused, true, 'the token of the refused upgrade still works')
    t.equal(s.connects.length, 1)
  })

  t.test('the client checks its arguments before any request', async (t) => {
    const s = await setup(t)
    const page = await s.openChatOrigin()
    const codes = await page.evaluate(async () => {
      const { openGuardedWebSocket } = window.client!
      const cases: Array<[string, object]> = [
        ['ftp://example.com/chat', {}],
        ['http://[bad', {}],
        ['/chat', { transport: 'header' }],
        ['/chat', { protocols: ['websocket-guard.abc'] }],
        ['/chat', { protocols: ['chat', 'chat'] }],
        ['/chat', { protocols: ['bad name'] }],
        ['/chat', { protocols: [42] }],
        ['/chat', { protocols: { length: 0 } }],
        ['/chat', { protocol: 'bad name' }],
        ['/chat', { queryParam: 'a b' }],
        ['/chat', { tokenUrl: 'http://[bad' }]
      ]
      const out = []
      for (const [url, options] of cases) {
        try {
          await openGuardedWebSocket(url, options)
          out.push('opened')
        } catch (err) {
          out.push((err as { code: string }).code)
        }
      }
      return out
    })
    t.same(codes, Array(11).fill('WS_GUARD_CLIENT_OPTIONS'))
    t.same(s.rejections, [], 'nothing reached the guard')
    t.equal(s.connects.length, 0)
  })

  t.test('the client offers the user\'s protocols and follows a server\'s own protocol name', async (t) => {
    const s = await setup(t, { guard: { protocol: 'chat-guard' } })
    const page = await s.openChatOrigin()
    const protocols = await page.evaluate(async () => {
      const { openGuardedWebSocket } = window.client!
      const a = await openGuardedWebSocket('/chat', { protocol: 'chat-guard' })
      const b = await openGuardedWebSocket('/chat', { protocol: 'chat-guard', protocols: 'chat.v2' })
      const c = await openGuardedWebSocket(new URL('/chat', location.href), { protocol: 'chat-guard', protocols: ['chat-guard', 'chat.v2'] })
      return [a.protocol, b.protocol, c.protocol]
    })
    t.same(protocols, ['chat-guard', 'chat-guard', 'chat-guard'])
    t.equal(s.connects.length, 3)
    t.same(s.rejections, [])
  })

  t.test('the client can be aborted, before, during the token request and during the handshake', async (t) => {
    const s = await setup(t)
    const page = await s.openChatOrigin()
    const reasons = await page.evaluate(async () => {
      const { openGuardedWebSocket } = window.client!
      const reason = async (promise: Promise<unknown>) => promise.then(() => 'opened', (err: unknown) => err instanceof Error ? err.name : String(err))
      const before = new AbortController()
      before.abort('stop before')
      const duringFetch = new AbortController()
      const fetching = openGuardedWebSocket('/chat', { signal: duringFetch.signal })
      duringFetch.abort('stop during fetch')
      // the token arrives, then the signal aborts before the socket is made
      const afterFetch = new AbortController()
      const realFetch = window.fetch
      window.fetch = async (...args: Parameters<typeof fetch>) => {
        const res = await realFetch(...args)
        afterFetch.abort('stop after fetch')
        return res
      }
      const fetched = openGuardedWebSocket('/chat', { signal: afterFetch.signal })
      const r3 = await reason(fetched)
      window.fetch = realFetch
      // the socket is made, then the signal aborts while it connects
      const duringHandshake = new AbortController()
      const RealWebSocket = window.WebSocket
      window.WebSocket = class extends RealWebSocket {
        constructor (url: unknown, protocols?: unknown) {
          super(url, protocols)
          duringHandshake.abort('stop during handshake')
        }
      }
      const handshake = openGuardedWebSocket('/chat', { signal: duringHandshake.signal })
      const r4 = await reason(handshake)
      window.WebSocket = RealWebSocket
      // a signal that never aborts changes nothing
      const quiet = new AbortController()
      const socket = await openGuardedWebSocket('/chat', { signal: quiet.signal })
      quiet.abort('too late')
      await new Promise((resolve) => setTimeout(resolve, 50))
      return [
        await reason(openGuardedWebSocket('/chat', { signal: before.signal })),
        await reason(fetching),
        r3,
        r4,
        socket.readyState
      ]
    })
    t.same(reasons, ['stop before', 'stop during fetch', 'stop after fetch', 'stop during handshake', 1])
    t.same(s.rejections, [])
  })
}
