// SpentTokens, the in-session backend's memory of consumed hashes: with consumeInSession, a
// token opens once even when two upgrades loaded the same session before either saved it.
import t from 'tap'
import { consumeInSession, issueWebsocketToken, SpentTokens } from '../lib/backends/session'
import type { StoredToken } from '../lib/stores/types'
import { NoWebsocketTokenStored, WebsocketTokenMismatch } from '../lib/errors'

t.test('consumeInSession with SpentTokens: exactly once across session copies', async (t) => {
  const spent = new SpentTokens()
  const s: Record<string, unknown> = {}
  const a = issueWebsocketToken(s)
  const b = issueWebsocketToken(s)
  // two upgrades loaded the same session before either saved it
  const copy1 = structuredClone(s) as Record<string, unknown>
  const copy2 = structuredClone(s) as Record<string, unknown>
  consumeInSession(copy1, 'websocket_token', a, '/chat', spent)
  t.equal((copy1.websocket_token as StoredToken[]).length, 1)
  const before = structuredClone(copy2)
  t.throws(() => consumeInSession(copy2, 'websocket_token', a, '/chat', spent), WebsocketTokenMismatch, 'other tokens left: mismatch')
  t.same(copy2, before, 'the losing copy is not changed')
  consumeInSession(copy2, 'websocket_token', b, '/chat', spent)
  const single: Record<string, unknown> = {}
  const c = issueWebsocketToken(single)
  const copy3 = structuredClone(single) as Record<string, unknown>
  consumeInSession(single, 'websocket_token', c, '/chat', spent)
  t.throws(() => consumeInSession(copy3, 'websocket_token', c, '/chat', spent), NoWebsocketTokenStored, 'the only token: as if none stored')
  t.equal(spent.size, 3)
})

t.test('SpentTokens remembers a hash until it expires, at most an hour', async (t) => {
  const spent = new SpentTokens()
  const now = 1_000_000
  t.equal(spent.spend('h1', now + 100, now), true)
  t.equal(spent.spend('h1', now + 100, now), false)
  t.equal(spent.spend('h1', now + 100, now + 99), false)
  t.equal(spent.spend('h2', now + 100, now), true)
  t.equal(spent.size, 2)
  t.equal(spent.spend('h1', now + 200, now + 100), true, 'free again once expired (it can no longer pass findToken)')
  // a seed token never expires: remembered for an hour
  t.equal(spent.spend('seed', Number.MAX_SAFE_INTEGER, now), true)
  t.equal(spent.spend('seed', Number.MAX_SAFE_INTEGER, now + 3_599_999), false)
  t.equal(spent.spend('seed', Number.MAX_SAFE_INTEGER, now + 3_600_000), true)
  // sweeps drop what has expired, at most every 10 s
  const sweeping = new SpentTokens()
  t.equal(sweeping.spend('a', 50, 0), true)
  t.equal(sweeping.spend('b', 20_000, 1), true)
  t.equal(sweeping.spend('c', 100_000, 5_000), true)
  t.equal(sweeping.size, 3, 'no sweep before 10 s')
  t.equal(sweeping.spend('d', 100_000, 10_000), true)
  t.equal(sweeping.size, 3, 'a swept')
  t.equal(sweeping.spend('e', 100_000, 20_000), true)
  t.equal(sweeping.size, 3, 'b swept, e added')
  t.equal(sweeping.spend('c', 100_000, 20_000), false, 'live ones are kept through sweeps')
})
