// sessionTokens: the token records a session holds, read fail-closed (anything malformed is
// no record; a seed-style string is one record bound to no path that never expires).
import t from 'tap'
import { sessionTokens } from '../lib/backends/session'
import { hashToken } from '../lib/tokens'
import type { StoredToken } from '../lib/stores/types'

t.test('sessionTokens reads only well-formed records', async (t) => {
  const good: StoredToken = { hash: hashToken('x'), expiresAt: 10, path: null }
  const bound: StoredToken = { hash: hashToken('y'), expiresAt: 10, path: '/chat' }
  t.same(sessionTokens([good, bound]), [good, bound])
  t.same(sessionTokens([good, null, 'x', { hash: 1, expiresAt: 1, path: null }, { hash: 'h', expiresAt: Number.NaN, path: null },
    { hash: 'h', expiresAt: Number.POSITIVE_INFINITY, path: null }, { hash: 'h', expiresAt: '1', path: null }, { hash: 'h', expiresAt: 1, path: 5 },
    { hash: 'h', expiresAt: 1 }]), [good], 'a NaN or infinite expiry fails closed')
  t.same(sessionTokens(undefined), [])
  t.same(sessionTokens({}), [])
  t.same(sessionTokens('tok'), [{ hash: hashToken('tok'), expiresAt: Number.MAX_SAFE_INTEGER, path: null }])
})
