// Edges of the server-side backends: a TokenStore that answers synchronously (no promise,
// no deadline armed), a session object with no session id beside @fastify/session's
// MemoryStore, and a close bus whose markers cannot be read during revalidation.
import t from 'tap'
import { Writable } from 'node:stream'
import websocketGuard, { memoryTokenStore, type TokenStore, type CloseBus } from '../lib/index'
import { buildApp, Client, close } from './helpers/app'
import { eventually } from './helpers/util'

t.test('a TokenStore that answers synchronously works like any other, exactly once', async (t) => {
  const inner = memoryTokenStore()
  t.teardown(() => inner.close())
  const calls: string[] = []
  const records = new Map<string, Array<{ hash: string, expiresAt: number, path: string | null }>>()
  // a store of the app's own that keeps tokens in a Map and answers at once
  const store = {
    issue (id: string, token: { hash: string, expiresAt: number, path: string | null }, maxTokens: number) {
      calls.push('issue')
      records.set(id, [...(records.get(id) ?? []), token].slice(-maxTokens))
    },
    consume (id: string, hash: string, path: string, now: number) {
      calls.push('consume')
      const list = records.get(id) ?? []
      const i = list.findIndex((r) => r.hash === hash)
      if (i === -1) return list.length === 0 ? 'none-stored' : 'mismatch'
      const r = list[i] as { expiresAt: number, path: string | null }
      if (r.expiresAt <= now) return 'expired'
      if (r.path !== null && r.path !== path) return 'wrong-path'
      list.splice(i, 1)
      return 'consumed'
    }
  } as unknown as TokenStore
  const { base } = await buildApp(t, { guard: { store } })
  const client = new Client(base)
  const token = await client.token()
  const r = await client.connect('/chat?token=' + token)
  t.equal(r.opened, true, 'opens')
  await close(r)
  const again = await client.connect('/chat?token=' + token)
  t.equal(again.body?.code, 'WS_GUARD_NO_TOKEN_STORED', 'never twice')
  t.same(calls, ['issue', 'consume', 'consume'])
  void websocketGuard
})

t.test('a session object without a session id, beside @fastify/session\'s MemoryStore, gets a random id of its own', async (t) => {
  const { base } = await buildApp(t, {
    setup (app) {
      app.addHook('onRequest', async (request) => {
        if (!request.url.startsWith('/page')) return
        const data = new Map<string, unknown>()
        ;(request as any).session = { get: (k: string) => data.get(k), set: (k: string, v: unknown) => { data.set(k, v) } }
      })
      app.get('/page', async (request) => {
        const a = await app.websocketGuard.issueToken(request)
        const b = await app.websocketGuard.issueToken(request)
        return { a: a.token.length, b: b.token.length, id: typeof (request.session as any).get('websocket_token') }
      })
    }
  })
  const res = await fetch(base + '/page')
  t.equal(res.status, 200)
  t.same(await res.json(), { a: 43, b: 43, id: 'string' }, 'issued into an id the session keeps')
})

t.test('revalidation under @fastify/secure-session whose close bus cannot be read: sockets kept, a warning logged', async (t) => {
  const lines: any[] = []
  const stream = new Writable({ write (chunk, _enc, cb) { lines.push(JSON.parse(chunk.toString())); cb() } })
  const inner = memoryTokenStore()
  t.teardown(() => inner.close())
  const bus: CloseBus = {
    async subscribe () {
      return {
        markerTTL: 60_000,
        async publish () {},
        async missed () { throw new Error('markers unreadable') },
        async close () {}
      }
    }
  }
  const store: TokenStore = { issue: inner.issue.bind(inner), consume: inner.consume.bind(inner), bus } as TokenStore
  const { base } = await buildApp(t, {
    secureSession: { cookie: { path: '/', secure: false } },
    fastify: { logger: { level: 'warn', stream } },
    guard: { store, revalidateInterval: 50 }
  })
  const client = new Client(base)
  const r = await client.connect('/chat?token=' + await client.token())
  t.equal(r.opened, true)
  await eventually(t, 'the failed check is logged', async () => lines.some((l) => /could not revalidate its sessions/.test(l.msg)))
  t.equal(r.socket?.readyState, 1, 'the socket stays open')
  await close(r)
})
