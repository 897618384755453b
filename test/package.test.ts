/**
 * The package as users get it: built, packed with `npm pack`, installed from the tarball into
 * a scratch folder, then loaded by `require` and by `import` in child processes that register
 * it into a real Fastify app and open a guarded socket. Nothing here touches the checkout's
 * dist/ or node_modules/: the sources are copied to a temporary folder and built there, since
 * other test files (and other work) may use the checkout's dist/ at the same time.
 */
import t from 'tap'
import { execFile } from 'node:child_process'
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { promisify } from 'node:util'

const run = promisify(execFile)
const root = resolve(__dirname, '..')
const modules = join(root, 'node_modules')
// what the scratch app needs besides the package itself, which npm installs with its own
// dependencies (fastify-plugin) from the tarball
const PEERS = ['fastify', '@fastify/websocket', '@fastify/session', '@fastify/cookie', '@fastify/secure-session', 'ws', 'typescript', '@types/node', '@types/ws']
const NAMED = [
  'createOriginMatcher', 'consumeWebsocketToken', 'issueWebsocketToken', 'memoryTokenStore', 'redisTokenStore',
  'fastifyWebsocketGuard', 'WebsocketSecurityError', 'WebsocketOriginNotAllowed', 'NoWebsocketTokenPresented',
  'NoWebsocketTokenStored', 'WebsocketTokenMismatch', 'WebsocketTokenExpired', 'WebsocketGuardStoreUnavailable',
  'WebsocketGuardBadRequest'
]

const tmp = mkdtempSync(join(tmpdir(), 'fwg-package-'))
t.teardown(() => rmSync(tmp, { recursive: true, force: true }))
const src = join(tmp, 'src')
const out = join(tmp, 'out')
const scratch = join(tmp, 'scratch')

/** One round trip through the installed package: register, issue a token, open a guarded socket. */
const roundTrip = `{
  const app = Fastify()
  await app.register(cookie)
  await app.register(session, { secret: 'a-secret-with-at-least-32-characters-for-tests', cookie: { secure: false } })
  await app.register(websocket)
  await app.register(guard, { origins: ['http://app.test'] })
  app.get('/chat', { websocket: true, guard: true }, (socket, request) => { socket.send(JSON.stringify(request.websocketGuard)) })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const base = 'http://127.0.0.1:' + app.server.address().port
  const res = await fetch(base + '/websocket-token')
  const cookieHeader = res.headers.getSetCookie().map((c) => c.split(';')[0]).join('; ')
  const { token } = await res.json()
  const open = (origin) => new Promise((resolve) => {
    const ws = new WebSocket(base.replace('http', 'ws') + '/chat', ['websocket-guard', 'websocket-guard.' + token], { headers: { cookie: cookieHeader, origin } })
    ws.on('error', () => {})
    ws.on('message', (m) => { ws.close(); resolve({ opened: true, protocol: ws.protocol, guard: JSON.parse(m.toString()).token === token }) })
    ws.on('unexpected-response', (_req, r) => { let b = ''; r.on('data', (c) => { b += c }); r.on('end', () => { ws.terminate(); resolve({ opened: false, status: r.statusCode, code: JSON.parse(b).code }) }) })
  })
  const refused = await open('http://evil.test')
  const opened = await open('http://app.test')
  const replay = await open('http://app.test')
  await app.close()
  result.trip = { refused, opened, replay }
}`

/** fastify-websocket-guard/testing from the installed package: a socket injected, never listening. */
const injectTrip = `{
  const app = Fastify()
  await app.register(cookie)
  await app.register(session, { secret: 'a-secret-with-at-least-32-characters-for-tests', cookie: { secure: false } })
  await app.register(websocket)
  await app.register(guard, { origins: ['http://localhost'] })
  app.get('/chat', { websocket: true, guard: true }, (socket, request) => {
    socket.on('message', (m) => socket.send(request.websocketGuard.origin + ' ' + request.websocketGuard.token.length + ' ' + m))
  })
  const socket = await injectGuardedWS(app, '/chat')
  const heard = new Promise((resolve) => socket.once('message', (m) => resolve(String(m))))
  socket.send('ping')
  result.inject = await heard
  socket.terminate()
  await app.close()
}`

async function child (file: string, code: string): Promise<any> {
  const path = join(scratch, file)
  writeFileSync(path, code)
  const { stdout } = await run(process.execPath, [path], { cwd: scratch, timeout: 60_000 })
  return JSON.parse(stdout)
}

/** Starts a check at once (the checks run side by side); the test that owns it awaits it. */
function started<T> (check: () => Promise<T>): () => Promise<T> {
  let promise: Promise<T> | undefined
  return async () => {
    promise ??= check()
    return await promise
  }
}

const cjsCheck = started(() => child('cjs.cjs', `
    const guard = require('fastify-websocket-guard')
    const { default: byDefault, createOriginMatcher, fastifyWebsocketGuard, WebsocketOriginNotAllowed, WebsocketSecurityError } = guard
    const Fastify = require('fastify')
    const cookie = require('@fastify/cookie')
    const session = require('@fastify/session')
    const websocket = require('@fastify/websocket')
    const WebSocket = require('ws')
    const testing = require('fastify-websocket-guard/testing')
    const { injectGuardedWS } = testing
    const result = {
      testing: { names: Object.keys(testing).sort(), resolved: require.resolve('fastify-websocket-guard/testing') },
      type: typeof guard,
      defaultIsPlugin: byDefault === guard,
      namedIsPlugin: fastifyWebsocketGuard === guard,
      names: Object.keys(guard).sort(),
      resolved: require.resolve('fastify-websocket-guard'),
      matcher: [createOriginMatcher('https://a.example')('https://A.example:443'), createOriginMatcher('https://a.example')('https://b.example')],
      errors: new WebsocketOriginNotAllowed() instanceof WebsocketSecurityError && new WebsocketOriginNotAllowed().statusCode === 403
    }
    ;(async () => {
      ${roundTrip}
      ${injectTrip}
      process.stdout.write(JSON.stringify(result))
    })()
  `))

const esmCheck = started(() => child('esm.mjs', `
    import guard, { createOriginMatcher, fastifyWebsocketGuard, consumeWebsocketToken, issueWebsocketToken, NoWebsocketTokenStored } from 'fastify-websocket-guard'
    import * as namespace from 'fastify-websocket-guard'
    import Fastify from 'fastify'
    import cookie from '@fastify/cookie'
    import session from '@fastify/session'
    import websocket from '@fastify/websocket'
    import WebSocket from 'ws'
    import { injectGuardedWS } from 'fastify-websocket-guard/testing'
    import * as testing from 'fastify-websocket-guard/testing'
    const s = {}
    const token = issueWebsocketToken(s)
    let stored = null
    try { consumeWebsocketToken('/chat?token=x', {}) } catch (err) { stored = err instanceof NoWebsocketTokenStored }
    const result = {
      type: typeof guard,
      namedIsPlugin: fastifyWebsocketGuard === guard,
      names: Object.keys(namespace).sort(),
      resolved: import.meta.resolve('fastify-websocket-guard'),
      matcher: createOriginMatcher(['https://*.example.com'])('https://a.b.example.com'),
      seed: [consumeWebsocketToken('/chat?token=' + token, s) === token, stored],
      testing: { names: Object.keys(testing).sort(), resolved: import.meta.resolve('fastify-websocket-guard/testing') }
    }
    ${roundTrip}
    ${injectTrip}
    process.stdout.write(JSON.stringify(result))
  `))

// The browser client in Node: it imports, and runs on Node's own fetch, WebSocket and
// EventTarget. (Node's fetch and WebSocket keep no cookies, so no session-backed socket can
// open from here: the real server's token route refuses, and the client ends as a page would.)
const clientCheck = started(() => child('client.mjs', `
    import * as client from 'fastify-websocket-guard/client'
    import Fastify from 'fastify'
    const { GuardedWebSocket, GuardedWebSocketError, openGuardedWebSocket } = client
    const result = {
      names: Object.keys(client).sort(),
      resolved: import.meta.resolve('fastify-websocket-guard/client'),
      eventTarget: GuardedWebSocket.prototype instanceof EventTarget
    }
    try { new GuardedWebSocket('/chat') } catch (err) { result.relative = [err instanceof GuardedWebSocketError, err.code, err.message] }
    result.open = await openGuardedWebSocket('/chat').then(() => 'opened', (err) => err.code)

    const app = Fastify()
    const tokenRequests = []
    app.get('/websocket-token', async (request, reply) => {
      tokenRequests.push(request.query.path)
      return reply.code(401).send({ statusCode: 401, code: 'LOGIN_REQUIRED', error: 'Unauthorized', message: 'log in' })
    })
    await app.listen({ port: 0, host: '127.0.0.1' })
    const ws = new GuardedWebSocket('ws://127.0.0.1:' + app.server.address().port + '/chat', { minDelay: 10 })
    result.connecting = ws.readyState
    const ended = await new Promise((resolve) => ws.addEventListener('ended', resolve))
    result.ended = { reason: ended.reason, status: ended.error.status, serverCode: ended.error.serverCode, readyState: ws.readyState }
    result.tokenRequests = tokenRequests
    await app.close()
    process.stdout.write(JSON.stringify(result))
  `))

async function compileConsumers (): Promise<{ code: number, out: string }> {
  const consumer = (from: string): string => `
    import Fastify from 'fastify'
    import websocket from '@fastify/websocket'
    import guard, { createOriginMatcher, type FastifyWebsocketGuardOptions, type WebsocketGuardResult } from ${from}
    import { injectGuardedWS, type InjectGuardedWSOptions } from 'fastify-websocket-guard/testing'
    const options: FastifyWebsocketGuardOptions = { origins: ['https://app.example.com'], tokenTTL: 30_000 }
    const app = Fastify()
    app.register(websocket)
    app.register(guard, options)
    app.get('/chat', { websocket: true, guard: { token: false } }, (socket, request) => {
      const result: WebsocketGuardResult | null = request.websocketGuard
      socket.send(String(result?.origin) + String(createOriginMatcher('https://a.example')('x')))
    })
    // @ts-expect-error a string TTL does not compile
    app.register(guard, { tokenTTL: '10' })
    const injectOptions: InjectGuardedWSOptions = { transport: 'query', origin: null }
    void injectGuardedWS(app, '/chat', injectOptions).then((socket) => socket.send('x'))
    // @ts-expect-error the helper's transports are the guard's
    void injectGuardedWS(app, '/chat', { transport: 'header' })
    export {}
  `
  writeFileSync(join(scratch, 'consumer.cts'), consumer("'fastify-websocket-guard'"))
  writeFileSync(join(scratch, 'consumer.mts'), consumer("'fastify-websocket-guard'"))
  writeFileSync(join(scratch, 'tsconfig.json'), JSON.stringify({
    compilerOptions: { module: 'nodenext', moduleResolution: 'nodenext', target: 'es2022', strict: true, noEmit: true, skipLibCheck: true, types: ['node'] },
    files: ['consumer.cts', 'consumer.mts']
  }))
  const tsc = join(modules, 'typescript', 'bin', 'tsc')
  return await run(process.execPath, [tsc, '-p', join(scratch, 'tsconfig.json')], { cwd: scratch }).then(() => ({ code: 0, out: '' }), (err) => ({ code: err.code, out: String(err.stdout) }))
}

const typesCheck = started(compileConsumers)

t.before(async () => {
  mkdirSync(src)
  for (const entry of ['package.json', 'tsconfig.json', 'tsconfig.build.json', 'tsconfig.client.json', 'README.md', 'LICENSE', 'SECURITY.md', 'lib', 'types', 'scripts']) {
    if (existsSync(join(root, entry))) cpSync(join(root, entry), join(src, entry), { recursive: true })
  }
  symlinkSync(modules, join(src, 'node_modules'), 'dir')
  await run(process.execPath, [join(src, 'scripts', 'build.js')], { cwd: src })
  mkdirSync(out)
  await run('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', out], { cwd: src })
  mkdirSync(scratch)
  const tarball = join(out, readdirSync(out).find((f) => f.endsWith('.tgz')) as string)
  await run('npm', ['install', '--no-save', '--prefer-offline', '--ignore-scripts', '--legacy-peer-deps', '--no-audit', '--no-fund', '--no-package-lock', '--prefix', scratch, tarball], { cwd: scratch })
  for (const peer of PEERS) {
    const target = join(scratch, 'node_modules', peer)
    mkdirSync(dirname(target), { recursive: true })
    if (!existsSync(target)) symlinkSync(join(modules, peer), target, 'dir')
  }
  // the child processes and the type check run side by side; each test awaits its own
  for (const check of [cjsCheck, esmCheck, clientCheck, typesCheck]) check().catch(() => {})
})

t.test('the tarball holds the built entry points and no sources or tests', async (t) => {
  const { stdout } = await run('tar', ['-tzf', join(out, readdirSync(out)[0] as string)])
  const files = stdout.trim().split('\n').map((f) => f.replace(/^package\//, ''))
  for (const file of ['package.json', 'dist/index.js', 'dist/index.mjs', 'dist/index.d.ts', 'dist/index.d.mts',
    'dist/client.mjs', 'dist/client.d.mts', 'dist/testing.js', 'dist/testing.mjs', 'dist/testing.d.ts', 'dist/testing.d.mts', 'dist/lib/testing.js', 'dist/lib/index.js', 'dist/lib/index.d.ts', 'dist/types/fastify.d.ts', 'README.md', 'LICENSE']) {
    t.ok(files.includes(file), file)
  }
  t.same(files.filter((f) => /^(lib|test|types|scripts|bench|examples)\//.test(f) || f.endsWith('.ts') && !f.endsWith('.d.ts') && !f.endsWith('.d.mts')), [], 'no sources, tests or scripts')
  t.ok(existsSync(join(scratch, 'node_modules', 'fastify-websocket-guard', 'dist', 'index.js')), 'installed from the tarball')
  t.ok(existsSync(join(scratch, 'node_modules', 'fastify-plugin')), 'with its dependency')
})

t.test('require: the plugin function, with the named exports on it and .default', async (t) => {
  const result = await cjsCheck()
  t.equal(result.type, 'function')
  t.equal(result.defaultIsPlugin, true, 'require(...).default is the plugin')
  t.equal(result.namedIsPlugin, true)
  for (const name of [...NAMED, 'default']) t.ok(result.names.includes(name), `named export ${name}`)
  t.match(result.resolved, /scratch\/node_modules\/fastify-websocket-guard\/dist\/index\.js$/, 'the installed copy')
  t.same(result.matcher, [true, false])
  t.equal(result.errors, true)
  t.same(result.testing, { names: ['injectGuardedWS'], resolved: result.testing.resolved })
  t.match(result.testing.resolved, /scratch\/node_modules\/fastify-websocket-guard\/dist\/testing\.js$/, 'require(\'fastify-websocket-guard/testing\'): the CommonJS entry')
  t.match(result.inject, /^http:\/\/localhost 43 ping$/, 'injectGuardedWS opened a guarded socket')
  t.same(result.trip, {
    refused: { opened: false, status: 403, code: 'WS_GUARD_ORIGIN_NOT_ALLOWED' },
    opened: { opened: true, protocol: 'websocket-guard', guard: true },
    replay: { opened: false, status: 403, code: 'WS_GUARD_NO_TOKEN_STORED' }
  })
})

t.test('import: the default export and named exports', async (t) => {
  const result = await esmCheck()
  t.equal(result.type, 'function')
  t.equal(result.namedIsPlugin, true)
  for (const name of [...NAMED, 'default']) t.ok(result.names.includes(name), `export ${name}`)
  t.match(result.resolved, /scratch\/node_modules\/fastify-websocket-guard\/dist\/index\.mjs$/, 'the ESM entry point')
  t.equal(result.matcher, true)
  t.same(result.seed, [true, true])
  t.same(result.testing.names, ['injectGuardedWS'])
  t.match(result.testing.resolved, /scratch\/node_modules\/fastify-websocket-guard\/dist\/testing\.mjs$/, 'import: the ES module entry')
  t.match(result.inject, /^http:\/\/localhost 43 ping$/, 'injectGuardedWS opened a guarded socket')
  t.same(result.trip, {
    refused: { opened: false, status: 403, code: 'WS_GUARD_ORIGIN_NOT_ALLOWED' },
    opened: { opened: true, protocol: 'websocket-guard', guard: true },
    replay: { opened: false, status: 403, code: 'WS_GUARD_NO_TOKEN_STORED' }
  })
})

t.test(`import('fastify-websocket-guard/client') works in Node ${process.version}`, async (t) => {
  const result = await clientCheck()
  t.same(result.names, ['GuardedWebSocket', 'GuardedWebSocketEndedEvent', 'GuardedWebSocketError', 'openGuardedWebSocket'])
  t.match(result.resolved, /scratch\/node_modules\/fastify-websocket-guard\/dist\/client\.mjs$/)
  t.equal(result.eventTarget, true)
  t.same(result.relative, [true, 'WS_GUARD_CLIENT_OPTIONS', 'GuardedWebSocket: invalid socket URL (outside a page, give an absolute URL)'])
  t.equal(result.open, 'WS_GUARD_CLIENT_OPTIONS')
  t.equal(result.connecting, 0)
  t.same(result.ended, { reason: 'unauthorized', status: 401, serverCode: 'LOGIN_REQUIRED', readyState: 3 }, 'Node\'s fetch reached the token route')
  t.same(result.tokenRequests, ['/chat'], 'one token request, bound to the path, on the socket\'s server')
})

t.test('the shipped types compile for CommonJS and ES module consumers', async (t) => {
  const result = await typesCheck()
  t.same(result, { code: 0, out: '' }, 'tsc accepts both consumers')
})
