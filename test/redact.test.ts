/**
 * Tokens never reach a log line. The logger's stream is captured over whole flows at `trace`
 * and searched for every token involved, including inside the raw request bytes Fastify logs
 * for a malformed request; each test also checks that the redacted lines are there, so a
 * search that finds nothing because nothing was logged cannot pass.
 */
import t, { type Test } from 'tap'
import { connect as netConnect } from 'node:net'
import { Writable } from 'node:stream'
import Fastify from 'fastify'
import cookie from '@fastify/cookie'
import session from '@fastify/session'
import websocket from '@fastify/websocket'
import { buildApp, Client, close, connect, SECRET } from './helpers/app'
import { fakeToken } from './helpers/util'
import websocketGuard from '../lib/index'
import { createRedactor, REDACTED } from '../lib/redact'

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
    ['{"msg":"no query, no entry"}', '{"msg":"no query, no entry"}']
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
})
