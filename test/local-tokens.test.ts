// Tokens beside @fastify/session's default MemoryStore (issue 14): the session keeps only an
// id, the tokens live in this process, a consume is one synchronous check-and-delete with no
// session save; any other store, or a MemoryStore that could keep sessions elsewhere, keeps
// the tokens in the session as compact strings, and records of earlier versions still work.
import t from 'tap'
import session from '@fastify/session'
import {
  besideMemoryStore, consumeWebsocketToken, isLocalId, issueWebsocketToken, LOCAL_ID_PREFIX,
  localTokenCount, optionalExport, sessionTokens
} from '../lib/backends/session'
import { NoWebsocketTokenStored, WebsocketTokenMismatch } from '../lib/errors'
import { decodeRecord, encodeRecord, hashToken } from '../lib/tokens'
import { buildApp, Client, close } from './helpers/app'
import type { FastifyRequest } from 'fastify'

/** A GET with the client's session cookie. */
async function get (client: Client, path: string): Promise<{ body: any }> {
  const saved = client.tokenPath
  client.tokenPath = path
  try {
    return await client.getToken()
  } finally {
    client.tokenPath = saved
  }
}

// first, before this process has made its table: a local id finds no token
t.test('a local id in a process that holds no local tokens is no token', async (t) => {
  t.throws(() => consumeWebsocketToken('/chat?token=abc', { websocket_token: LOCAL_ID_PREFIX + 'x' }), NoWebsocketTokenStored)
  t.equal(localTokenCount(LOCAL_ID_PREFIX + 'x'), 0)
})

t.test('default MemoryStore: the session keeps an id, the upgrade saves nothing', async (t) => {
  const sessions = new Map<string, any>()
  const { base } = await buildApp(t, { session: { store: new (session.MemoryStore as any)(sessions) } })
  const client = new Client(base)
  const first = await client.token()
  const [stored] = [...sessions.values()]
  const id = stored.websocket_token
  t.ok(isLocalId(id), 'the session holds a local id')
  t.notOk(JSON.stringify(stored).includes(first), 'no token in the session')
  const second = await client.token()
  t.equal([...sessions.values()][0].websocket_token, id, 'one id for the session')
  t.equal(localTokenCount(id), 2)
  const socket = await client.connect('/chat?token=' + second)
  t.equal(socket.opened, true)
  await close(socket)
  t.equal(localTokenCount(id), 1, 'exactly that token consumed')
  const replay = await client.connect('/chat?token=' + second)
  t.equal(replay.body?.code, 'WS_GUARD_TOKEN_MISMATCH', 'never twice')
  const other = new Client(base)
  await other.token()
  const stolen = await other.connect('/chat?token=' + first)
  t.equal(stolen.body?.code, 'WS_GUARD_TOKEN_MISMATCH', "another session cannot use this session's token")
  const own = await client.connect('/chat?token=' + first)
  t.equal(own.opened, true)
  await close(own)
})

t.test('the seed functions on a session whose tokens are beside the MemoryStore', async (t) => {
  const s: Record<string, unknown> = {}
  const { base } = await buildApp(t, {
    setup (app) {
      app.get('/seed', async (request) => ({ token: issueWebsocketToken(request.session) }))
      app.get('/state', async (request) => ({ value: request.session.get('websocket_token' as never) }))
    }
  })
  const client = new Client(base)
  const routeToken = await client.token()
  const seeded = (await get(client, '/seed')).body.token as string
  const { value } = (await get(client, '/state')).body
  t.ok(isLocalId(value), 'issueWebsocketToken adds to the local tokens')
  t.equal(localTokenCount(value), 2)
  // consumeWebsocketToken reads the local tokens too
  s.websocket_token = value
  t.equal(consumeWebsocketToken('/chat?token=' + seeded, s), seeded)
  t.throws(() => consumeWebsocketToken('/chat?token=' + seeded, s), WebsocketTokenMismatch)
  const socket = await client.connect('/chat?token=' + routeToken)
  t.equal(socket.opened, true)
  await close(socket)
})

t.test('tokens the app issued into the session stay there, beside the MemoryStore too', async (t) => {
  const { base } = await buildApp(t, {
    setup (app) {
      app.get('/seed', async (request) => ({ token: issueWebsocketToken(request.session) }))
      app.get('/state', async (request) => ({ value: request.session.get('websocket_token' as never) }))
    }
  })
  const client = new Client(base)
  const seeded = (await get(client, '/seed')).body.token as string
  const routeToken = await client.token()
  const { value } = (await get(client, '/state')).body
  t.equal(Array.isArray(value) && value.length, 2, 'both in the session')
  for (const token of [seeded, routeToken]) {
    const socket = await client.connect('/chat?token=' + token)
    t.equal(socket.opened, true)
    await close(socket)
  }
})

t.test('a store that may keep sessions elsewhere keeps the tokens in the session', async (t) => {
  const MemoryStore = session.MemoryStore as any
  class Subclass extends MemoryStore {}
  class SharedMap extends Map {}
  const patched = new MemoryStore()
  patched.set = function set (id: string, value: unknown, cb: () => void) { MemoryStore.prototype.set.call(this, id, value, cb) }
  const patchedGet = new MemoryStore()
  patchedGet.get = function get (id: string, cb: (err: null, value: unknown) => void) { MemoryStore.prototype.get.call(this, id, cb) }
  const nullMap = new MemoryStore()
  nullMap.store = null
  const request = (sessionStore: unknown): FastifyRequest => ({ sessionStore }) as unknown as FastifyRequest
  t.equal(besideMemoryStore(request(new MemoryStore())), true)
  t.equal(besideMemoryStore(request(new MemoryStore(new Map()))), true)
  for (const [name, store] of Object.entries({ subclass: new Subclass(), 'a Map subclass': new MemoryStore(new SharedMap()), 'a patched set': patched, 'a patched get': patchedGet, 'no Map': nullMap, none: undefined, null: null })) {
    t.equal(besideMemoryStore(request(store)), false, name)
  }

  const sessions = new SharedMap()
  const { base } = await buildApp(t, { session: { store: new MemoryStore(sessions) } })
  const client = new Client(base)
  const token = await client.token()
  const [stored] = [...sessions.values()]
  t.match(stored.websocket_token, [/^[A-Za-z0-9_-]{43}:\d+$/], 'one compact record in the session')
  const socket = await client.connect('/chat?token=' + token)
  t.equal(socket.opened, true)
  await close(socket)
  t.equal([...sessions.values()][0].websocket_token, undefined, 'consumed, saved at the upgrade')
})

t.test('an optional peer that cannot be loaded is no MemoryStore', async (t) => {
  t.equal(optionalExport('fastify-websocket-guard-no-such-module', 'MemoryStore'), undefined)
  t.equal(optionalExport('@fastify/session', 'MemoryStore'), session.MemoryStore)
})

t.test('compact records: written, read, and anything malformed fails closed', async (t) => {
  const hash = hashToken('x')
  t.equal(encodeRecord({ hash, expiresAt: 5, path: null }), `${hash}:5`)
  t.equal(encodeRecord({ hash, expiresAt: 5, path: '/a:b' }), `${hash}:5:/a:b`)
  t.same(decodeRecord(`${hash}:5`), { hash, expiresAt: 5, path: null })
  t.same(decodeRecord(`${hash}:5:/a:b`), { hash, expiresAt: 5, path: '/a:b' }, 'a path may hold colons')
  for (const bad of ['', 'x', ':5', `${hash}:`, `${hash}: 5`, `${hash}:1e3`, `${hash}:-1`, `${hash}:5:`, `${hash}:12345678901234567`]) {
    t.equal(decodeRecord(bad), null, JSON.stringify(bad))
  }
})

t.test('sessions of earlier versions keep working', async (t) => {
  const now = Date.now()
  const old = { hash: hashToken('old'), expiresAt: now + 60_000, path: null }
  const expired = { hash: hashToken('gone'), expiresAt: now - 1, path: null }
  t.same(sessionTokens([old, `${hashToken('new')}:${now + 60_000}:/chat`, 'junk']), [old, { hash: hashToken('new'), expiresAt: now + 60_000, path: '/chat' }])
  t.same(sessionTokens(LOCAL_ID_PREFIX + 'abc'), [], 'a local id is never taken for a seed token')

  // objects of earlier versions: the live one kept (as a compact string), the expired dropped
  const s: Record<string, unknown> = { websocket_token: [old, expired, `${hashToken('gone too')}:${now - 1}`] }
  const fresh = issueWebsocketToken(s)
  t.same(s.websocket_token, [encodeRecord(old), s.websocket_token && (s.websocket_token as string[])[1]])
  t.equal(consumeWebsocketToken('/chat?token=old', s), 'old')
  t.equal(consumeWebsocketToken('/chat?token=' + fresh, s), fresh)
  t.equal(s.websocket_token, undefined)

  // a seed token next to a new one
  const seed: Record<string, unknown> = { websocket_token: 'seed-token' }
  const next = issueWebsocketToken(seed)
  t.equal((seed.websocket_token as string[]).length, 2)
  t.equal(consumeWebsocketToken('/x?token=seed-token', seed), 'seed-token')
  t.equal(consumeWebsocketToken('/x?token=' + next, seed), next)
})
