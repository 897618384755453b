// issueWebsocketToken (API.md "Functions"): what it stores in a session (a hash, never the
// token), path binding, tokenTTL, maxTokens, and the arguments it refuses.
import t from 'tap'
import { consumeWebsocketToken, issueWebsocketToken, sessionTokens } from '../lib/backends/session'
import type { SessionLike } from '../lib/session'
import { hashToken } from '../lib/tokens'
import type { StoredToken } from '../lib/stores/types'
import { NoWebsocketTokenStored, WebsocketTokenMismatch } from '../lib/errors'
import { kinds } from './helpers/session-like'

for (const kind of kinds()) {
  t.test(`issue then consume, ${kind.name}`, async (t) => {
    const s = kind.make()
    const token = issueWebsocketToken(s)
    t.match(token, /^[A-Za-z0-9_-]{43}$/)
    const stored = sessionTokens(kind.read(s).websocket_token)
    t.match(kind.read(s).websocket_token, [/^[A-Za-z0-9_-]{43}:\d+$/], 'one compact string per record')
    t.equal(stored.length, 1)
    t.equal(stored[0]?.hash, hashToken(token), 'only the hash is stored')
    t.equal(stored[0]?.path, null)
    t.notOk(JSON.stringify(kind.read(s)).includes(token), 'the token itself is nowhere in the session')
    t.equal(consumeWebsocketToken('/chat?token=' + token, s), token)
    t.notOk('websocket_token' in kind.read(s) && kind.read(s).websocket_token !== undefined, 'key gone when no token is left')
    t.throws(() => consumeWebsocketToken('/chat?token=' + token, s), NoWebsocketTokenStored, 'never twice')
  })
}

t.test('path binding, TTL and maxTokens', async (t) => {
  const s: Record<string, unknown> = {}
  const before = Date.now()
  const bound = issueWebsocketToken(s, { path: '/chat', tokenTTL: 5000 })
  const records = sessionTokens(s.websocket_token)
  t.equal(records[0]?.path, '/chat')
  t.ok((records[0] as StoredToken).expiresAt >= before + 5000 && (records[0] as StoredToken).expiresAt <= Date.now() + 5000, 'expiresAt = now + tokenTTL')
  t.throws(() => consumeWebsocketToken('/admin?token=' + bound, s), WebsocketTokenMismatch)
  t.equal(consumeWebsocketToken('/chat?token=' + bound, s), bound)

  const defaultTTL = issueWebsocketToken(s)
  const expiresAt = sessionTokens(s.websocket_token)[0]?.expiresAt as number
  t.ok(expiresAt - Date.now() > 59_000 && expiresAt - Date.now() <= 60_000, 'default TTL 60 s')
  consumeWebsocketToken('/?token=' + defaultTTL, s)

  const tokens = Array.from({ length: 10 }, () => issueWebsocketToken(s))
  t.equal((s.websocket_token as StoredToken[]).length, 8, 'default maxTokens 8')
  t.throws(() => consumeWebsocketToken('/?token=' + tokens[0], s), WebsocketTokenMismatch, 'oldest evicted')
  t.throws(() => consumeWebsocketToken('/?token=' + tokens[1], s), WebsocketTokenMismatch)
  t.equal(consumeWebsocketToken('/?token=' + tokens[2], s), tokens[2])
  t.equal(consumeWebsocketToken('/?token=' + tokens[9], s), tokens[9])

  const few: Record<string, unknown> = {}
  const two = Array.from({ length: 3 }, () => issueWebsocketToken(few, { maxTokens: 2 }))
  t.equal((few.websocket_token as StoredToken[]).length, 2)
  t.throws(() => consumeWebsocketToken('/?token=' + two[0], few), WebsocketTokenMismatch)
  t.equal(consumeWebsocketToken('/?token=' + two[2], few), two[2])
})

t.test('issueWebsocketToken: bad arguments are TypeErrors', async (t) => {
  const s: Record<string, unknown> = {}
  for (const session of [null, undefined, 'session', 42]) {
    t.throws(() => issueWebsocketToken(session as unknown as SessionLike), { name: 'TypeError', message: /session/ })
  }
  for (const key of ['', 42, null]) {
    t.throws(() => issueWebsocketToken(s, { sessionKey: key as unknown as string }), { name: 'TypeError', message: /sessionKey/ })
  }
  t.throws(() => issueWebsocketToken(s, null as unknown as object), { name: 'TypeError', message: /options/ })
  t.throws(() => issueWebsocketToken(s, 'x' as unknown as object), { name: 'TypeError', message: /options/ })
  for (const tokenTTL of [0, -1, Number.NaN, Number.POSITIVE_INFINITY, '60000', null]) {
    t.throws(() => issueWebsocketToken(s, { tokenTTL: tokenTTL as number }), { name: 'TypeError', message: /tokenTTL/ }, `tokenTTL ${String(tokenTTL)}`)
  }
  for (const maxTokens of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, '8']) {
    t.throws(() => issueWebsocketToken(s, { maxTokens: maxTokens as number }), { name: 'TypeError', message: /maxTokens/ }, `maxTokens ${String(maxTokens)}`)
  }
  for (const path of ['chat', '', '/chat?x=1', '/chat#x', 42]) {
    t.throws(() => issueWebsocketToken(s, { path: path as string }), { name: 'TypeError', message: /path/ }, `path ${String(path)}`)
  }
  t.same(s, {}, 'nothing issued by any of them')
  t.doesNotThrow(() => issueWebsocketToken(s, { path: null, tokenTTL: 0.5, maxTokens: 1 }))
  t.doesNotThrow(() => issueWebsocketToken(s, { path: undefined }))
})
