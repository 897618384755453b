// A session's sockets are found at its end however its requests interleaved: two first token
// requests of one session (two tabs opening at once) must not put its sockets in two groups,
// of which the session would keep only one. Regression: the bench's 50 concurrent opens of one
// session left a group behind on closeSession.
import t from 'tap'
import { MemoryStore } from '@fastify/session'
import { buildApp, Client } from './helpers/app'
import { call, closedWithin, ENDED, held, open, withSessionRoutes, type Opened } from './helpers/lifecycle'

/** A MemoryStore whose next `set` waits until it is let go. */
class HeldStore extends MemoryStore {
  private held: { release: () => void, pending: Promise<void>, waiting: boolean } | null = null

  holdNextSet (): { release: () => void, waiting: () => boolean } {
    let release!: () => void
    const pending = new Promise<void>((resolve) => { release = resolve })
    const hold = { release, pending, waiting: false }
    this.held = hold
    return { release, waiting: () => hold.waiting }
  }

  override set (id: string, session: any, callback: (err?: any) => void): void {
    const hold = this.held
    if (hold === null) return super.set(id, session, callback)
    this.held = null
    hold.waiting = true
    void hold.pending.then(() => { super.set(id, session, callback) })
  }
}

async function until (check: () => boolean): Promise<void> {
  while (!check()) await new Promise((resolve) => setTimeout(resolve, 5))
}

for (const end of ['/logout', '/close-session']) {
  t.test(`@fastify/session: interleaved first token requests of a session, then ${end}: every socket of the session closes`, async (t) => {
    const store = new HeldStore()
    const { app: server, base } = await buildApp(t, withSessionRoutes({ session: { store } }))
    const client = new Client(base)
    await call(client, '/login')
    // tab B asks for a token first; its session is saved last
    const hold = store.holdNextSet()
    const tabB = new Client(base)
    tabB.cookie = client.cookie
    const tokenB = tabB.token('?path=/chat')
    await until(hold.waiting)
    // tab A asks, gets its token and opens, while B's save is still pending
    const a = await open(client)
    hold.release()
    const b = await tabB.connect('/chat?token=' + await tokenB)
    t.ok(b.opened, 'tab B opens too')
    t.equal(held(server)?.groups, 1, 'one group for the session')
    const closedA = closedWithin(a, 5000)
    const closedB = new Promise((resolve) => (b.socket as any).once('close', (code: number, reason: Buffer) => resolve({ code, reason: reason.toString() })))
    await call(tabB, end)
    t.same(await closedA, ENDED, 'tab A\'s socket closes')
    t.same(await closedB, ENDED, 'tab B\'s socket closes')
    t.equal(held(server)?.sockets, 0)
  })
}

for (const [plugin, options, group] of [
  ['@fastify/session', {}, 'keeps its derived group'],
  ['@fastify/secure-session', { secureSession: {} }, 'gives the session a new group']
] as const) {
  t.test(`${plugin}: closeSession ${group}; the sockets opened after it stay open`, async (t) => {
    const { app: server, base } = await buildApp(t, withSessionRoutes(options))
    const client = new Client(base)
    await call(client, '/login')
    const first = await open(client)
    const closed = closedWithin(first, 5000)
    await call(client, '/close-session')
    t.same(await closed, ENDED)
    const second: Opened = await open(client)
    t.equal(await closedWithin(second, 300), null, 'a socket opened after the close stays open')
    t.equal(held(server)?.sockets, 1)
    const closedAgain = closedWithin(second, 5000)
    await call(client, '/logout')
    t.same(await closedAgain, ENDED, 'and closes at the logout')
  })
}

t.test('@fastify/secure-session: the group is written with the login, so tokens asked for from two copies of the cookie share it', async (t) => {
  const { app: server, base } = await buildApp(t, withSessionRoutes({ secureSession: {} }))
  const client = new Client(base)
  await call(client, '/login')
  const loginCookie = client.cookie
  // two tabs ask for a token at once: both send the login's cookie
  const tabA = new Client(base)
  tabA.cookie = loginCookie
  const tabB = new Client(base)
  tabB.cookie = loginCookie
  const a = await open(tabA)
  const b = await open(tabB)
  t.equal(held(server)?.groups, 1, 'one group for the session')
  const closedA = closedWithin(a, 5000)
  const closedB = closedWithin(b, 5000)
  await call(tabB, '/logout')
  t.same(await closedA, ENDED, 'the other tab\'s socket closes too')
  t.same(await closedB, ENDED)
})

t.test('@fastify/secure-session: a session holding only seed tokens (no group) is deleted: its tokens are dropped, nothing else happens', async (t) => {
  const { issueWebsocketToken } = await import('../lib/index')
  const { app: server, base } = await buildApp(t, withSessionRoutes({
    secureSession: {},
    setup (a) {
      a.get('/seed', async (request) => ({ token: issueWebsocketToken(request.session as any, { path: '/chat' }) }))
    }
  }))
  const client = new Client(base)
  const { body } = await call(client, '/seed', 'GET')
  const seeded = client.cookie
  t.equal((await call(client, '/logout')).status, 200)
  client.cookie = seeded
  const replay = await client.connect('/chat?token=' + String(body.token))
  t.notOk(replay.opened, 'the old cookie\'s seed token opens nothing after the delete')
  t.same(held(server), { sockets: 0, groups: 0, users: 0, deadlines: 0 })
})

t.test('@fastify/session: once the guard\'s app closed, destroy and regenerate of another app\'s sessions work as before', async (t) => {
  const first = await buildApp(t, withSessionRoutes({}))
  await first.app.close()
  const Fastify = (await import('fastify')).default
  const cookie = (await import('@fastify/cookie')).default
  const session = (await import('@fastify/session')).default
  const other = Fastify()
  t.teardown(() => other.close())
  await other.register(cookie)
  await other.register(session, { secret: 'a-secret-with-at-least-32-characters-for-tests', cookie: { secure: false } })
  other.post('/regenerate', async (request) => { await request.session.regenerate(); return { id: request.session.sessionId } })
  other.post('/destroy', async (request) => { await request.session.destroy(); return { ok: true } })
  const regenerated = await other.inject({ method: 'POST', url: '/regenerate' })
  t.equal(regenerated.statusCode, 200)
  t.type(regenerated.json().id, 'string')
  t.equal((await other.inject({ method: 'POST', url: '/destroy' })).statusCode, 200)
})

// the socket's life on, off, and on without session ends (identify only)
for (const [label, guard] of [
  ['closeOnSessionEnd: true', { closeOnSessionEnd: true }],
  ['closeOnSessionEnd: false', { closeOnSessionEnd: false }],
  ['closeOnSessionEnd: false with identify', { closeOnSessionEnd: false, identify: () => null }]
] as const) {
  t.test(`@fastify/secure-session, ${label}: tokens asked for at once from the login's cookie all work with the cookie the browser keeps`, async (t) => {
    const { base } = await buildApp(t, withSessionRoutes({ secureSession: {}, guard }))
    const client = new Client(base)
    await call(client, '/login')
    const tabA = new Client(base)
    tabA.cookie = client.cookie
    const tabB = new Client(base)
    tabB.cookie = client.cookie
    const tokenA = await tabA.token('?path=/chat')
    const tokenB = await tabB.token('?path=/chat')
    // the browser keeps the cookie that came last: tab A's upgrade carries tab B's
    const browser = new Client(base)
    browser.cookie = tabB.cookie
    const a = await browser.connect('/chat?token=' + tokenA)
    const b = await browser.connect('/chat?token=' + tokenB)
    t.ok(a.opened, 'tab A opens with the cookie of tab B\'s token response')
    t.ok(b.opened, 'tab B opens')
    ;(a.socket as any)?.close()
    ;(b.socket as any)?.close()
  })
}
