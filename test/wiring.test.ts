// No wiring of an app opens an unchecked socket: routes declared before the plugin, in a
// sibling encapsulation context, or through autoload-style plugins are refused with 500 and
// logged once; every websocket route is guarded unless it says guard: false (guardAll).
import t, { type Test } from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import cookie from '@fastify/cookie'
import session from '@fastify/session'
import websocket from '@fastify/websocket'
import { Writable } from 'node:stream'
import websocketGuard, { type FastifyWebsocketGuardOptions } from '../lib/index'
import { Client, close, SECRET } from './helpers/app'

interface Wired { app: FastifyInstance, base: string, logs: any[], opened: string[] }

/** An app whose routes `wire` declares, around the guard as it likes; logs captured. */
async function wired (t: Test, wire: (app: FastifyInstance, guard: () => Promise<void>) => Promise<void> | void, options: FastifyWebsocketGuardOptions = {}): Promise<Wired> {
  const logs: any[] = []
  const stream = new Writable({ write (chunk, _enc, cb) { logs.push(JSON.parse(chunk.toString())); cb() } })
  const app = Fastify({ logger: { level: 'info', stream } })
  t.teardown(() => app.close())
  const opened: string[] = []
  app.decorate('opened', opened)
  await app.register(cookie)
  await app.register(session, { secret: SECRET, cookie: { secure: false } })
  await app.register(websocket)
  await wire(app, async () => { await app.register(websocketGuard, options) })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as { port: number }
  return { app, base: `http://127.0.0.1:${port}`, logs, opened }
}

function handler (opened: string[], name: string) {
  return (socket: { send: (m: string) => void }) => { opened.push(name); socket.send(name) }
}

/** The log-once lines that say how to fix the wiring (each refusal also logs its own line). */
const notGuardedLogs = (logs: any[]): any[] => logs.filter((l) => l.code === 'WS_GUARD_ROUTE_NOT_GUARDED' && /declared (where|outside)/.test(l.msg))

t.test('a guard: true route declared before the plugin (a missing await) is refused with 500, never opened', async (t) => {
  const { base, logs, opened } = await wired(t, (app) => {
    app.register(websocketGuard) // no await: the route below is declared first
    app.get('/early', { websocket: true, guard: true }, handler((app as any).opened, 'early'))
  })
  const client = new Client(base)
  for (const origin of ['https://evil.example', base]) {
    const r = await client.connect('/early', { origin })
    t.equal(r.opened, false, `${origin}: does not open`)
    t.equal(r.status, 500)
    t.equal(r.body.code, 'WS_GUARD_ROUTE_NOT_GUARDED')
    t.match(r.body.message, /\/early.*is not guarded/)
  }
  const token = await client.token('?path=/early')
  const withToken = await client.connect('/early?token=' + token)
  t.equal(withToken.status, 500, 'a token does not open it either')
  t.same(opened, [], 'the handler never ran')
  const lines = notGuardedLogs(logs)
  t.equal(lines.length, 1, 'logged once for the route')
  t.equal(logs.filter((l) => l.code === 'WS_GUARD_ROUTE_NOT_GUARDED').length, 4, 'and each refusal logged its own line')
  t.equal(lines[0].level, 50, 'at error')
  t.equal(lines[0].route, '/early')
  t.match(lines[0].msg, /register\(websocketGuard\)/, 'the log line says how to fix the order')
  t.notOk(JSON.stringify(logs).includes(token), 'no token in the logs')
})

t.test('a route in a sibling encapsulation context of the guard is refused with 500 at the upgrade', async (t) => {
  const { base, logs, opened } = await wired(t, async (app) => {
    await app.register(async (guarded) => {
      await guarded.register(websocketGuard)
      guarded.get('/inside', { websocket: true }, handler((app as any).opened, 'inside'))
    })
    await app.register(async (sibling) => {
      sibling.get('/sibling', { websocket: true, guard: true }, handler((app as any).opened, 'sibling'))
      sibling.get('/sibling/:room', { websocket: true }, handler((app as any).opened, 'room'))
    })
  })
  const client = new Client(base)
  for (const path of ['/sibling', '/sibling/1', '/sibling/2?token=abc', '/sibling/2']) {
    const r = await client.connect(path)
    t.equal(r.opened, false, `${path}: does not open`)
    t.equal(r.status, 500, `${path}: 500`)
    t.equal(r.body.code, 'WS_GUARD_ROUTE_NOT_GUARDED')
  }
  t.same(opened, [])
  const paths = notGuardedLogs(logs).map((l) => l.path)
  t.same(paths, ['/sibling', '/sibling/1', '/sibling/2'], 'logged once per path, never with its query')
  const inside = await client.connect('/inside')
  t.equal(inside.body.code, 'WS_GUARD_NO_TOKEN_PRESENTED', 'the guard covers its own context')
})

t.test('autoload-style registration: route plugins loaded before the guard plugin are refused', async (t) => {
  const { base, opened } = await wired(t, async (app) => {
    // autoload registers each file as a plugin, in directory order: routes/ before plugins/
    app.register(async function routesChat (child) {
      child.get('/chat', { websocket: true }, handler((app as any).opened, 'chat'))
    })
    app.register(websocketGuard)
  })
  const client = new Client(base)
  const r = await client.connect('/chat')
  t.equal(r.status, 500)
  t.equal(r.body.code, 'WS_GUARD_ROUTE_NOT_GUARDED')
  t.same(opened, [])
})

t.test('injectWS goes through the same refusal', async (t) => {
  const { app, opened } = await wired(t, (app) => {
    app.register(websocketGuard)
    app.get('/early', { websocket: true, guard: true }, handler((app as any).opened, 'early'))
  })
  await t.rejects(app.injectWS('/early', { headers: { origin: 'http://localhost' } }), /Unexpected server response: 500/)
  t.same(opened, [])
})

t.test('guardAll (default): every websocket route is guarded unless it says guard: false', async (t) => {
  const { base, opened } = await wired(t, async (app, guard) => {
    await guard()
    app.get('/plain', { websocket: true }, handler((app as any).opened, 'plain'))
    app.get('/open', { websocket: true, guard: false }, handler((app as any).opened, 'open'))
    app.route({ method: 'GET', url: '/both', handler: async () => 'http', wsHandler: handler((app as any).opened, 'both') })
  })
  const client = new Client(base)
  t.equal((await client.connect('/plain', { origin: 'https://evil.example' })).body.code, 'WS_GUARD_ORIGIN_NOT_ALLOWED')
  t.equal((await client.connect('/plain')).body.code, 'WS_GUARD_NO_TOKEN_PRESENTED')
  t.equal((await client.connect('/both')).body.code, 'WS_GUARD_NO_TOKEN_PRESENTED', 'handler + wsHandler form too')
  const open = await client.connect('/open', { origin: 'https://evil.example' })
  t.equal(open.opened, true, 'guard: false opens unchecked, where the plugin saw it')
  await close(open)
  const ok = await client.connect('/plain?token=' + await client.token())
  t.equal(ok.opened, true)
  await close(ok)
  t.same(opened, ['open', 'plain'])
})

t.test('guardAll: false guards only the routes that set guard; unseen routes are refused in both modes', async (t) => {
  const { base, opened } = await wired(t, async (app, guard) => {
    app.register(websocketGuard, { guardAll: false })
    app.get('/unseen', { websocket: true }, handler((app as any).opened, 'unseen'))
    await app.after()
    app.get('/plain', { websocket: true }, handler((app as any).opened, 'plain'))
    app.get('/guarded', { websocket: true, guard: true }, handler((app as any).opened, 'guarded'))
    app.get('/origin-only', { websocket: true, guard: { token: false } }, handler((app as any).opened, 'origin-only'))
    void guard
  })
  const client = new Client(base)
  const plain = await client.connect('/plain', { origin: 'https://evil.example' })
  t.equal(plain.opened, true, 'no guard under guardAll: false opens')
  await close(plain)
  t.equal((await client.connect('/guarded')).body.code, 'WS_GUARD_NO_TOKEN_PRESENTED')
  t.equal((await client.connect('/origin-only', { origin: 'https://evil.example' })).body.code, 'WS_GUARD_ORIGIN_NOT_ALLOWED')
  const originOnly = await client.connect('/origin-only')
  t.equal(originOnly.opened, true)
  await close(originOnly)
  t.equal((await client.connect('/unseen')).body.code, 'WS_GUARD_ROUTE_NOT_GUARDED')
  t.same(opened, ['plain', 'origin-only'])
})

t.test('plain HTTP requests to a guarded route are not checked and consume nothing', async (t) => {
  const { base } = await wired(t, async (app, guard) => {
    await guard()
    app.route({ method: 'GET', url: '/both', handler: async () => 'plain http', wsHandler: (socket) => { socket.send('ws') } })
    app.get('/ws', { websocket: true }, (socket) => { socket.send('ws') })
  })
  const client = new Client(base)
  const token = await client.token()
  for (const path of ['/both', '/ws']) {
    const res = await fetch(`${base}${path}?token=${token}`, { headers: { cookie: client.cookie, origin: 'https://evil.example' } })
    t.equal(res.status, path === '/both' ? 200 : 404, `${path}: reaches the route's handler or @fastify/websocket's 404`)
    if (path === '/both') t.equal(await res.text(), 'plain http')
  }
  const r = await client.connect('/ws?token=' + token)
  t.equal(r.opened, true, 'the token is still valid after the plain requests')
  await close(r)
})

t.test('two guards in sibling contexts share one last line; each guards its own routes, no upgrade elsewhere opens', async (t) => {
  const { base, opened } = await wired(t, async (app) => {
    for (const name of ['a', 'b']) {
      await app.register(async (child) => {
        await child.register(websocketGuard, { tokenRoute: `/${name}/websocket-token` })
        child.get(`/${name}/chat`, { websocket: true }, handler((app as any).opened, name))
      })
    }
    await app.register(async (other) => {
      other.get('/c/chat', { websocket: true }, handler((app as any).opened, 'c'))
    })
  })
  for (const name of ['a', 'b']) {
    const client = new Client(base)
    client.tokenPath = `/${name}/websocket-token`
    const r = await client.connect(`/${name}/chat?token=` + await client.token())
    t.equal(r.opened, true, `${name}: its own guard lets its token through`)
    await close(r)
  }
  const c = await new Client(base).connect('/c/chat')
  t.equal(c.body.code, 'WS_GUARD_ROUTE_NOT_GUARDED')
  t.same(opened, ['a', 'b'])
})
