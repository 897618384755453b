/**
 * Tokens never reach a log line. The logger's stream is captured over whole flows at `trace`
 * and searched for every token involved, including inside the raw request bytes Fastify logs
 * for a malformed request; each test also checks that the redacted lines are there, so a
 * search that finds nothing because nothing was logged cannot pass.
 */
import t, { type Test } from 'tap'
import { randomBytes } from 'node:crypto'
import { request as httpRequest } from 'node:http'
import { connect as netConnect, type Socket } from 'node:net'
import { Writable } from 'node:stream'
import { setTimeout as sleep } from 'node:timers/promises'
import Fastify, { type FastifyServerOptions } from 'fastify'
import cookie from '@fastify/cookie'
import session from '@fastify/session'
import websocket from '@fastify/websocket'
import { buildApp, Client, close, connect, SECRET } from './helpers/app'
import { fakeToken } from './helpers/util'
import websocketGuard from '../lib/index'
import { createRedactor, createUrlRedactor, REDACTED } from '../lib/redact'

const hooksSym = Symbol.for('pino.hooks')

/** A stream that keeps every line written to it. */
function capture (): { stream: Writable, lines: string[] } {
  const lines: string[] = []
  const stream = new Writable({
    write (chunk, _encoding, callback) {
      lines.push(...chunk.toString().split('\n').filter((line: string) => line !== ''))
      callback()
    }
  })
  return { stream, lines }
}

/** The bytes of every `rawPacket` in the lines, as text: a token there is not visible as such. */
function packets (lines: string[]): string[] {
  const out: string[] = []
  for (const line of lines) {
    for (const m of line.matchAll(/"rawPacket":\{"type":"Buffer","data":\[([0-9,]*)\]\}/g)) {
      out.push(Buffer.from((m[1] as string).split(',').map(Number)).toString('latin1'))
    }
  }
  return out
}

/** Asserts that no line, nor any raw packet in one, shows any of `tokens`. */
function noToken (t: Test, lines: string[], tokens: string[]): void {
  const text = lines.join('\n') + '\n' + packets(lines).join('\n')
  for (const token of tokens) t.notOk(text.includes(token), `token ${tokens.indexOf(token) + 1} of ${tokens.length} never logged`)
}

const messages = (lines: string[]): any[] => lines.map((line) => JSON.parse(line))

/** Sends bytes no HTTP parser accepts; Fastify logs them at trace as `client error`. */
function sendMalformed (port: number, requestLine: string): Promise<void> {
  return new Promise((resolve) => {
    const socket = netConnect(port, '127.0.0.1', () => { socket.write(`${requestLine}\r\nHost x\r\n\r\n`) })
    socket.on('data', () => {})
    socket.on('close', () => resolve())
    socket.on('error', () => resolve())
  })
}

t.test('whole flows at trace: no line shows a token, every URL line shows it redacted', async (t) => {
  const { stream, lines } = capture()
  const { app, base, wsBase } = await buildApp(t, {
    fastify: { logger: { level: 'trace', stream } },
    setup (app) {
      app.get('/plain', async () => 'plain')
    }
  })
  const client = new Client(base)
  const tokens: string[] = []

  // issue, use, replay
  const used = await client.token()
  tokens.push(used)
  const opened = await client.connect('/chat?token=' + used)
  t.equal(opened.opened, true)
  await close(opened)
  t.equal((await client.connect('/chat?token=' + used)).body?.code, 'WS_GUARD_NO_TOKEN_STORED')

  // a wrong token, then the subprotocol transport with the real one
  const viaProtocol = await client.token()
  const wrong = fakeToken()
  tokens.push(viaProtocol, wrong)
  t.equal((await client.connect('/chat?token=' + wrong)).body?.code, 'WS_GUARD_TOKEN_MISMATCH')
  const subprotocol = await client.connect('/chat', { protocols: ['websocket-guard', 'websocket-guard.' + viaProtocol] })
  t.equal(subprotocol.opened, true)
  await close(subprotocol)

  // a refused origin, then the parameter name percent-encoded: Fastify's query parser reads
  // `%74oken` as `token`, the guard does not, and the token stays valid for a proper upgrade
  const spelled = await client.token()
  tokens.push(spelled)
  const evil = await client.connect('/chat?token=' + spelled, { origin: 'https://evil.example' })
  t.equal(evil.body?.code, 'WS_GUARD_ORIGIN_NOT_ALLOWED')
  t.equal((await client.connect('/chat?%74oken=' + spelled)).body?.code, 'WS_GUARD_NO_TOKEN_PRESENTED')
  t.equal((await client.connect('/chat?a=1&tok%65n=' + spelled)).body?.code, 'WS_GUARD_NO_TOKEN_PRESENTED')
  const proper = await client.connect('/chat?token=' + spelled)
  t.equal(proper.opened, true, 'the encoded attempts consumed nothing')
  await close(proper)

  // a live token sent where no guard reads it: a 404, a plain route, an upgrade to a plain
  // route, and a request line that no parser accepts
  const stray = await client.token()
  tokens.push(stray)
  t.equal((await fetch(`${base}/nowhere?token=${stray}`)).status, 404)
  t.equal(await (await fetch(`${base}/plain?x=1&token=${stray}`)).text(), 'plain')
  await connect(`${wsBase}/plain?token=${stray}`, { origin: base }).catch(() => {})
  const { port } = app.server.address() as { port: number }
  await sendMalformed(port, `GET /chat?token=${stray} HTTP/1.1`)
  await app.close()

  noToken(t, lines, tokens)
  const logged = messages(lines)
  t.ok(logged.some((l) => l.level === 10), 'trace lines were written')
  const urls = logged.filter((l) => l.msg === 'incoming request').map((l) => l.req.url as string)
  t.ok(urls.includes(`/chat?token=${REDACTED}`))
  t.ok(urls.includes(`/chat?%74oken=${REDACTED}`))
  t.ok(urls.includes(`/chat?a=1&tok%65n=${REDACTED}`))
  t.ok(urls.includes(`/nowhere?token=${REDACTED}`))
  t.ok(urls.includes(`/plain?x=1&token=${REDACTED}`))
  t.ok(urls.includes('/chat'), 'the subprotocol upgrade')
  t.ok(logged.some((l) => l.msg === `Route GET:/nowhere?token=${REDACTED} not found`), "the 404 line's message")
  t.ok(logged.some((l) => l.path === `/plain?token=${REDACTED}`), "@fastify/websocket's line for an upgrade to a plain route")
  t.ok(packets(lines).some((p) => p.startsWith(`GET /chat?token=${REDACTED} HTTP/1.1`)), 'the malformed request bytes')
  t.ok(logged.some((l) => l.msg === 'request completed'))

  const refusals = logged.filter((l) => l.msg === 'websocket guard refused the request')
  t.same(refusals.map((l) => l.code), [
    'WS_GUARD_NO_TOKEN_STORED',
    'WS_GUARD_TOKEN_MISMATCH',
    'WS_GUARD_ORIGIN_NOT_ALLOWED',
    'WS_GUARD_NO_TOKEN_PRESENTED',
    'WS_GUARD_NO_TOKEN_PRESENTED'
  ])
  for (const l of refusals) {
    t.equal(l.level, 40)
    t.equal(l.route, '/chat')
    t.equal(l.origin, l.code === 'WS_GUARD_ORIGIN_NOT_ALLOWED' ? 'https://evil.example' : base)
  }
})

// ---------------------------------------------------------------------------------------
// Four spellings that reached the log before (issue 10), each over the wire.

const portOf = (app: { server: { address: () => unknown } }): number => (app.server.address() as { port: number }).port

/**
 * A GET sent with its request target exactly as written: a URL object (fetch, ws, http.request
 * given a URL) would drop a `#…` before it is sent. With `upgrade`, it is a websocket upgrade,
 * and resolves with 101 and the chosen subprotocol, or with the refusal.
 */
function send (port: number, path: string, headers: Record<string, string> = {}, upgrade = false): Promise<{ status: number, body: any, protocol?: string }> {
  const upgradeHeaders = upgrade
    ? { connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': randomBytes(16).toString('base64') }
    : {}
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, headers: { ...upgradeHeaders, ...headers } })
    req.on('upgrade', (res, socket) => {
      socket.destroy()
      resolve({ status: 101, body: null, protocol: res.headers['sec-websocket-protocol'] })
    })
    req.on('response', (res) => {
      let data = ''
      res.setEncoding('utf8')
      res.on('data', (chunk) => { data += chunk })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: data === '' ? null : JSON.parse(data) }))
    })
    req.on('error', reject)
    req.end()
  })
}

const incomingUrls = (lines: string[]): string[] => messages(lines).filter((l) => l.msg === 'incoming request').map((l) => l.req.url)

t.test("a token after `#`: Fastify's query parser reads it, the guard does not, and no line shows it", async (t) => {
  const { stream, lines } = capture()
  const { app, base } = await buildApp(t, {
    fastify: { logger: { stream } },
    setup (app) {
      app.get('/plain', async (request) => request.query)
    }
  })
  const client = new Client(base)
  const token = await client.token()
  const refused = await send(portOf(app), `/chat#token=${token}`, { origin: base, cookie: client.cookie }, true)
  t.equal(refused.body?.code, 'WS_GUARD_NO_TOKEN_PRESENTED')
  t.same((await send(portOf(app), `/plain#token=${token}`)).body, { token }, "Fastify's query parser reads the token")
  t.equal((await send(portOf(app), `/nowhere#a=1&token=${token}`)).status, 404)
  const proper = await client.connect('/chat?token=' + token)
  t.equal(proper.opened, true, 'the token was live all along')
  await close(proper)
  await app.close()

  noToken(t, lines, [token])
  const urls = incomingUrls(lines)
  t.ok(urls.includes(`/chat#token=${REDACTED}`))
  t.ok(urls.includes(`/plain#token=${REDACTED}`))
  t.ok(messages(lines).some((l) => l.msg === `Route GET:/nowhere#a=1&token=${REDACTED} not found`))
})

t.test('a token after `;` under useSemicolonDelimiter: Fastify reads it, no line shows it', async (t) => {
  const { stream, lines } = capture()
  const { app, base } = await buildApp(t, {
    // where Fastify 5 reads it (the top-level option is deprecated); find-my-way's types omit it
    fastify: { logger: { stream }, routerOptions: { useSemicolonDelimiter: true } as FastifyServerOptions['routerOptions'] },
    setup (app) {
      app.get('/plain', async (request) => request.query)
    }
  })
  const client = new Client(base)
  const token = await client.token()
  const refused = await send(portOf(app), `/chat;token=${token}`, { origin: base, cookie: client.cookie }, true)
  t.equal(refused.body?.code, 'WS_GUARD_NO_TOKEN_PRESENTED')
  t.same((await send(portOf(app), `/plain;token=${token}`)).body, { token }, "Fastify's query parser reads the token")
  const proper = await client.connect('/chat?token=' + token)
  t.equal(proper.opened, true, 'the token was live all along')
  await close(proper)
  await app.close()

  noToken(t, lines, [token])
  const urls = incomingUrls(lines)
  t.ok(urls.includes(`/chat;token=${REDACTED}`))
  t.ok(urls.includes(`/plain;token=${REDACTED}`))
})

t.test('a subprotocol token entry after a tab, which the guard accepts, is redacted (JSON writes the tab as \\t)', async (t) => {
  const { stream, lines } = capture()
  const { app, base } = await buildApp(t, {
    // headers are where the entry travels; Fastify's own serializer does not log them
    fastify: { logger: { stream, serializers: { req: (req: any) => ({ url: req.url, headers: req.headers }) } } }
  })
  const client = new Client(base)
  const token = await client.token()
  const opened = await send(portOf(app), '/chat', {
    origin: base,
    cookie: client.cookie,
    'sec-websocket-protocol': `websocket-guard,\twebsocket-guard.${token}`
  }, true)
  t.equal(opened.status, 101, 'the guard accepts the entry')
  t.equal(opened.protocol, 'websocket-guard')
  t.equal((await client.connect('/chat?token=' + token)).body?.code, 'WS_GUARD_NO_TOKEN_STORED', 'and consumed it')
  await app.close()

  noToken(t, lines, [token])
  const upgrade = messages(lines).find((l) => l.msg === 'incoming request' && l.req.headers['sec-websocket-protocol'] !== undefined)
  t.equal(upgrade?.req.headers['sec-websocket-protocol'], `websocket-guard,\twebsocket-guard.${REDACTED}`)
  t.ok(lines.some((line) => line.includes(`websocket-guard,\\twebsocket-guard.${REDACTED}`)), 'the line holds the escape')
})

t.test('a malformed request split across TCP segments right after `?token=` shows no token at trace', async (t) => {
  const { stream, lines } = capture()
  const { app, base } = await buildApp(t, { fastify: { logger: { level: 'trace', stream } } })
  const client = new Client(base)
  const token = await client.token()
  const first = 'GET /chat?token='
  const serverSockets: Socket[] = []
  app.server.on('connection', (socket) => { serverSockets.push(socket) })
  await new Promise<void>((resolve, reject) => {
    const socket = netConnect(portOf(app), '127.0.0.1', () => {
      socket.write(first)
      // the second write waits until the server has read the first: two reads, two packets
      const serverSide = async (): Promise<void> => {
        for (let i = 0; i < 2000; i++) {
          const peer = serverSockets.find((s) => s.remotePort === socket.localPort)
          if (peer !== undefined && peer.bytesRead >= first.length) return
          await sleep(5)
        }
        throw new Error('the server never read the first segment')
      }
      serverSide().then(() => { socket.write(`${token} HTTP/1.1\r\nHost x\r\n\r\n`) }, reject)
    })
    socket.on('data', () => {})
    socket.on('close', () => resolve())
    socket.on('error', () => resolve())
  })
  const proper = await client.connect('/chat?token=' + token)
  t.equal(proper.opened, true, 'the token was live all along')
  await close(proper)
  await app.close()

  noToken(t, lines, [token])
  const logged = packets(lines)
  t.ok(logged.some((p) => p === `${REDACTED}\r\nHost x\r\n\r\n`), 'the second segment was logged, its first line redacted')
  t.notOk(logged.some((p) => p.startsWith('GET /chat')), 'the first segment was not logged on its own')
})

t.test('redactLogs: false leaves URLs as they are (the search above can fail)', async (t) => {
  const { stream, lines } = capture()
  const { app, base } = await buildApp(t, { fastify: { logger: { stream } }, guard: { redactLogs: false } })
  const client = new Client(base)
  const token = await client.token()
  t.equal((await client.connect('/chat?token=' + token, { origin: 'https://evil.example' })).status, 403)
  await app.close()
  t.ok(lines.some((line) => line.includes(token)))
  t.notOk(lines.some((line) => line.includes(REDACTED)))
})

t.test("the user's serializers, factories and hooks stay in force", async (t) => {
  const { stream, lines } = capture()
  const app = Fastify({
    logger: {
      level: 'debug',
      stream,
      // a req serializer that logs headers, where the subprotocol token entry travels
      serializers: { req: (req: any) => ({ url: req.url, headers: req.headers, by: 'user' }) },
      hooks: { streamWrite: (line: string) => line.replace('"by":"user"', '"by":"user-hook"') }
    },
    childLoggerFactory (logger, bindings, options) {
      return logger.child({ ...bindings, factory: 'user' }, options)
    }
  })
  t.teardown(() => app.close())
  await app.register(cookie)
  await app.register(session, { secret: SECRET, cookie: { secure: false } })
  await app.register(websocket)
  // declared before the guard is registered
  app.get('/early', async () => 'early')
  await app.register(websocketGuard)
  app.get('/chat', { websocket: true, guard: true }, (socket) => { socket.send('hello') })
  app.get('/routed', {
    logSerializers: { req: (req: any) => ({ routeUrl: req.url }) },
    childLoggerFactory (logger, bindings, options) {
      return logger.child({ ...bindings, factory: 'route' }, options)
    }
  }, async () => 'routed')
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as { port: number }
  const base = `http://127.0.0.1:${port}`
  const client = new Client(base)

  const viaProtocol = await client.token()
  const r = await client.connect('/chat', { protocols: ['chat', 'websocket-guard.' + viaProtocol, 'websocket-guard'] })
  t.equal(r.opened, true)
  t.equal(r.protocol, 'chat')
  await close(r)
  const stray = await client.token()
  t.equal(await (await fetch(`${base}/early?token=${stray}`)).text(), 'early')
  t.equal(await (await fetch(`${base}/routed?token=${stray}`)).text(), 'routed')
  await app.close()

  noToken(t, lines, [viaProtocol, stray])
  const logged = messages(lines).filter((l) => l.msg === 'incoming request')
  const upgrade = logged.find((l) => l.req.url === '/chat')
  t.equal(upgrade?.req.headers['sec-websocket-protocol'], `chat,websocket-guard.${REDACTED},websocket-guard`)
  t.equal(upgrade?.req.by, 'user-hook', "the user's serializer and streamWrite hook both ran")
  t.equal(upgrade?.factory, 'user', "the user's child logger factory ran")
  const early = logged.find((l) => l.req.url === `/early?token=${REDACTED}`)
  t.equal(early?.factory, 'user', 'a route declared before the guard')
  const routed = logged.find((l) => l.req.routeUrl === `/routed?token=${REDACTED}`)
  t.equal(routed?.factory, 'route', 'route-level serializer and factory')
})

t.test("a loggerInstance: Fastify's lines are redacted, the user's own logger is untouched", async (t) => {
  const { stream, lines } = capture()
  // a pino instance of the user's (pino is not a dependency here: another app's logger is one)
  const owner = Fastify({ logger: { stream } })
  t.teardown(() => owner.close())
  const instance = owner.log
  const { app, base } = await buildApp(t, { fastify: { logger: undefined, loggerInstance: instance } })
  const token = await new Client(base).token()
  await fetch(`${base}/chat?token=${token}`)
  instance.info(`the user's own line: /chat?token=${token}`)
  await app.close()
  t.equal((instance as any)[hooksSym].streamWrite, undefined)
  t.ok(lines.some((line) => line.includes(`/chat?token=${REDACTED}`)))
  t.equal(lines.filter((line) => line.includes(token)).length, 1, "only the line of the user's own logger")
})

t.test('log levels and loggers', async (t) => {
  t.test('logging off, or silent: nothing to redact, registration succeeds', async (t) => {
    for (const logger of [false, { level: 'silent' }]) {
      const app = Fastify({ logger })
      t.teardown(() => app.close())
      await app.register(cookie)
      await app.register(session, { secret: SECRET })
      await app.register(websocket)
      await app.register(websocketGuard)
      await app.ready()
      t.pass(`logger ${JSON.stringify(logger)}`)
    }
  })

  t.test('a level changed after registration is still redacted', async (t) => {
    const { stream, lines } = capture()
    const { app, base } = await buildApp(t, { fastify: { logger: { level: 'silent', stream } } })
    app.log.level = 'info'
    const token = await new Client(base).token()
    await fetch(`${base}/nowhere?token=${token}`)
    await app.close()
    t.ok(lines.some((line) => line.includes(`/nowhere?token=${REDACTED}`)))
    noToken(t, lines, [token])
  })

  const methods = (fn: (...args: unknown[]) => void): Record<string, unknown> =>
    Object.fromEntries(['fatal', 'error', 'warn', 'info', 'debug', 'trace'].map((level) => [level, fn]))

  async function register (t: Test, loggerInstance: Record<string | symbol, unknown>, redactLogs?: boolean): Promise<void> {
    loggerInstance.child = () => loggerInstance
    const app = Fastify({ loggerInstance: loggerInstance as any })
    t.teardown(() => app.close())
    await app.register(cookie)
    await app.register(session, { secret: SECRET })
    await app.register(websocket)
    await app.register(websocketGuard, { redactLogs })
    await app.ready()
  }

  t.test('a logger that is not pino is refused: the guard could not keep tokens out', async (t) => {
    const logger = { level: 'info', ...methods(function log () {}) }
    await t.rejects(register(t, logger), /option redactLogs needs Fastify's pino logger/)
    await t.resolves(register(t, { level: 'info', ...methods(function log () {}) }, false), 'unless redactLogs is off')
    // every level one no-op named like Fastify's, but its child is another logger
    const lookalike = { level: 'info', ...methods(function noop () {}) }
    const app = Fastify({ loggerInstance: { ...lookalike, child: () => ({ ...lookalike, child: () => ({}) }) } as any })
    t.teardown(() => app.close())
    await app.register(cookie)
    await app.register(session, { secret: SECRET })
    await app.register(websocket)
    await t.rejects(async () => { await app.register(websocketGuard) }, /needs Fastify's pino logger/)
  })

  t.test('a pino that ignores hooks.streamWrite is refused', async (t) => {
    const old = { [hooksSym]: { logMethod: undefined }, level: 'info', ...methods(function write () {}) }
    await t.rejects(register(t, old), /needs pino 9\.6 or later/)
  })

  t.test('an error thrown while checking is not mistaken for success', async (t) => {
    const failing = { [hooksSym]: {}, level: 'info', ...methods(function fail () { throw new Error('logger broke') }) }
    await t.rejects(register(t, failing), /logger broke/)
  })
})

t.test('createRedactor', async (t) => {
  const redact = createRedactor('token', 'websocket-guard.')
  const T = 'Ab0_-Ab0_-Ab0_-Ab0_-Ab0_-Ab0_-Ab0_-Ab0_-Ab0'
  const cases: Array<[string, string]> = [
    [`"/chat?token=${T}"`, `"/chat?token=${REDACTED}"`],
    [`"/chat?a=1&token=${T}&b=2"`, `"/chat?a=1&token=${REDACTED}&b=2"`],
    [`"/chat?token=${T}&token=${T}"`, `"/chat?token=${REDACTED}&token=${REDACTED}"`],
    [`"/chat?%74oken=${T}"`, `"/chat?%74oken=${REDACTED}"`],
    [`"/chat?%74%6F%6b%65%6E=${T}"`, `"/chat?%74%6F%6b%65%6E=${REDACTED}"`],
    [`Route GET:/x?token=${T} not found`, `Route GET:/x?token=${REDACTED} not found`],
    // a JSON escape is part of the value and is never cut in half
    [`"/chat?token=a\\"b\\\\c"`, `"/chat?token=${REDACTED}"`],
    ['"/chat?token=&x=1"', '"/chat?token=&x=1"'],
    ['"/chat?token"', '"/chat?token"'],
    [`"/chat?tokens=${T}&xtoken=${T}&%54oken=${T}"`, `"/chat?tokens=${T}&xtoken=${T}&%54oken=${T}"`],
    [`"/chat?path=/x&token2=${T}"`, `"/chat?path=/x&token2=${T}"`],
    [`"websocket-guard, websocket-guard.${T}"`, `"websocket-guard, websocket-guard.${REDACTED}"`],
    [`"websocket-guard.${T}, chat"`, `"websocket-guard.${REDACTED}, chat"`],
    [`["chat","websocket-guard.${T}"]`, `["chat","websocket-guard.${REDACTED}"]`],
    ['"https://websocket-guard.example.com/x.websocket-guard.y"', '"https://websocket-guard.example.com/x.websocket-guard.y"'],
    ['{"msg":"no query, no entry"}', '{"msg":"no query, no entry"}'],
    // Fastify's router starts a query at `#`, and at `;` under useSemicolonDelimiter
    [`"/chat#token=${T}"`, `"/chat#token=${REDACTED}"`],
    [`"/chat;token=${T}"`, `"/chat;token=${REDACTED}"`],
    [`"/chat#a&%74oken=${T}"`, `"/chat#a&%74oken=${REDACTED}"`],
    [`Route GET:/x;tok%65n=${T} not found`, `Route GET:/x;tok%65n=${REDACTED} not found`],
    // whitespace before an entry, which the guard trims, is a JSON escape in the line
    [`"websocket-guard,\\twebsocket-guard.${T}"`, `"websocket-guard,\\twebsocket-guard.${REDACTED}"`],
    [`"chat,\\u000bwebsocket-guard.${T},\\r\\nwebsocket-guard.${T}"`, `"chat,\\u000bwebsocket-guard.${REDACTED},\\r\\nwebsocket-guard.${REDACTED}"`]
  ]
  for (const [line, expected] of cases) t.equal(redact(line), expected, line)
  t.same(JSON.parse(redact(`{"u":"/c?token=a\\"b","h":"x, websocket-guard.q\\\\"}`)), { u: `/c?token=${REDACTED}`, h: `x, websocket-guard.${REDACTED}` })

  const other = createRedactor('t.k', 'p+.')
  t.equal(other('"/c?t.k=1&t%2Ek=2&txk=3" "p+.x"'), `"/c?t.k=${REDACTED}&t%2Ek=${REDACTED}&txk=3" "p+.${REDACTED}"`, 'names are literal, not patterns')

  const bytes = (text: string): string => `{"err":{"rawPacket":{"type":"Buffer","data":[${Buffer.from(text, 'latin1').join(',')}]}}}`
  const request = `GET /chat?a=1&token=${T} HTTP/1.1\r\nSec-WebSocket-Protocol: chat,websocket-guard.${T}\r\nX: "\r\n\r\n`
  t.equal(redact(bytes(request)), bytes(`GET /chat?a=1&token=${REDACTED} HTTP/1.1\r\nSec-WebSocket-Protocol: chat,websocket-guard.${REDACTED}\r\nX: "\r\n\r\n`))
  const clean = bytes('GET / HTTP/1.1\r\n\r\n')
  t.equal(redact(clean), clean, 'a packet without a token is left as it is')
  t.equal(redact(bytes('')), bytes(''))

  // the last segment of a request sent in several: it may begin inside a token
  t.equal(redact(bytes(`${T} HTTP/1.1\r\nHost x\r\n\r\n`)), bytes(`${REDACTED}\r\nHost x\r\n\r\n`), 'split after ?token=')
  t.equal(redact(bytes(`${T.slice(9)}&a=1 HTTP/1.1\r\n`)), bytes(`${REDACTED}\r\n`), 'split inside the token')
  t.equal(
    redact(bytes(`ard.${T}\r\nX: chat,\twebsocket-guard.${T}\r\nY:websocket-guard.${T}\r\n`)),
    bytes(`${REDACTED}\r\nX: chat,\twebsocket-guard.${REDACTED}\r\nY:websocket-guard.${REDACTED}\r\n`),
    'split inside a subprotocol entry; the lines after it as usual'
  )
  t.equal(redact(bytes(`\r\nX: websocket-guard.${T}\r\n`)), bytes(`\r\nX: websocket-guard.${REDACTED}\r\n`), 'split at a line break')
  t.equal(
    redact(bytes(`\r\nGET /chat#token=${T} HTTP/1.1\r\nHost x\r\n`)),
    bytes(`\r\nGET /chat#token=${REDACTED} HTTP/1.1\r\nHost x\r\n`),
    'a request line, after the empty lines a parser skips, is kept'
  )
  t.equal(redact(bytes('GET /chat;token=x HTTP/1.1\r\n')), bytes(`GET /chat;token=${REDACTED} HTTP/1.1\r\n`))
})

t.test('createUrlRedactor: the URL for onReject', async (t) => {
  const redactUrl = createUrlRedactor('token')
  const T = 'Ab0_-Ab0_-Ab0_-Ab0_-Ab0_-Ab0_-Ab0_-Ab0_-Ab0'
  const cases: Array<[string, string]> = [
    [`/chat?token=${T}`, `/chat?token=${REDACTED}`],
    [`/chat?a=1&token=${T}&b=2`, `/chat?a=1&token=${REDACTED}&b=2`],
    [`/chat?token=${T}&token=${T}`, `/chat?token=${REDACTED}&token=${REDACTED}`],
    [`/chat#token=${T}`, `/chat#token=${REDACTED}`],
    [`/chat;token=${T}`, `/chat;token=${REDACTED}`],
    [`/chat?%74oken=${T}&tok%65N=${T}`, `/chat?%74oken=${REDACTED}&tok%65N=${T}`],
    [`/chat?%74%6F%6b%65%6E=${T}`, `/chat?%74%6F%6b%65%6E=${REDACTED}`],
    // the guard and Fastify read a value up to `&`, through `#`, quotes and anything else
    [`/chat?token=${T}#x" y&z=1`, `/chat?token=${REDACTED}&z=1`],
    ['/chat?token=&x=1', '/chat?token=&x=1'],
    ['/chat?token', '/chat?token'],
    ['/chat', '/chat'],
    ['/chat?a=b', '/chat?a=b'],
    ['/chat?a=%20', '/chat?a=%20'],
    [`/chat?tokens=${T}&xtoken=${T}&%54oken=${T}`, `/chat?tokens=${T}&xtoken=${T}&%54oken=${T}`],
    // a URL carries no subprotocol entry
    [`/websocket-guard.${T}`, `/websocket-guard.${T}`]
  ]
  for (const [url, expected] of cases) t.equal(redactUrl(url), expected, url)
  t.equal(redactUrl(`/c?token=${T}`), `/c?token=${REDACTED}`, 'the compiled pattern keeps no state between calls')

  const other = createUrlRedactor('t.k')
  t.equal(other('/c?t.k=1&t%2Ek=2&txk=3'), `/c?t.k=${REDACTED}&t%2Ek=${REDACTED}&txk=3`, 'names are literal, not patterns')
})
