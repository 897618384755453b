// memoryTokenStore: issue, consume (every outcome), eviction beyond maxTokens, the sweep of
// abandoned ids, close, and its options.
import t from 'tap'
import { memoryTokenStore } from '../lib/stores/memory'
import { hashToken } from '../lib/tokens'
import type { StoredToken } from '../lib/stores/types'
import { eventually } from './helpers/util'

t.test('memoryTokenStore: issue, consume, eviction', async (t) => {
  const store = memoryTokenStore()
  t.teardown(() => store.close())
  const now = Date.now()
  const rec = (token: string, path: string | null = null, expiresAt = now + 60_000): StoredToken => ({ hash: hashToken(token), expiresAt, path })
  t.equal(store.size, 0)
  t.equal(await store.consume('s1', hashToken('a'), '/chat', now), 'none-stored')
  await store.issue('s1', rec('a'), 8)
  await store.issue('s1', rec('b', '/chat'), 8)
  await store.issue('s2', rec('a'), 8)
  t.equal(store.size, 2)
  t.equal(await store.consume('s1', hashToken('zzz'), '/chat', now), 'mismatch')
  t.equal(await store.consume('s1', hashToken('b'), '/other', now), 'wrong-path')
  t.equal(await store.consume('s1', hashToken('b'), '/chat', now + 60_000), 'expired')
  t.equal(await store.consume('s1', hashToken('b'), '/chat', now), 'consumed')
  t.equal(await store.consume('s1', hashToken('b'), '/chat', now), 'mismatch', 'once only')
  t.equal(await store.consume('s1', hashToken('a'), '/any', now), 'consumed')
  t.equal(await store.consume('s1', hashToken('a'), '/any', now), 'none-stored', 'id forgotten when empty')
  t.equal(store.size, 1)
  t.equal(await store.consume('s2', hashToken('a'), '/any', now), 'consumed', 'ids are separate')
  t.equal(store.size, 0)

  for (const token of ['1', '2', '3', '4']) await store.issue('s3', rec(token), 3)
  t.equal(await store.consume('s3', hashToken('1'), '/', now), 'mismatch', 'oldest evicted beyond maxTokens')
  for (const token of ['2', '3', '4']) t.equal(await store.consume('s3', hashToken(token), '/', now), 'consumed')
  await store.issue('s4', rec('old', null, Date.now() - 1), 8)
  await store.issue('s4', rec('new'), 8)
  t.equal(await store.consume('s4', hashToken('old'), '/', now - 10), 'mismatch', 'expired records dropped on issue')
})

t.test('memoryTokenStore sweeps expired tokens of abandoned ids', async (t) => {
  const store = memoryTokenStore({ sweepInterval: 10 })
  t.teardown(() => store.close())
  const now = Date.now()
  await store.issue('gone', { hash: hashToken('a'), expiresAt: now + 20, path: null }, 8)
  await store.issue('half', { hash: hashToken('b'), expiresAt: now + 20, path: null }, 8)
  await store.issue('half', { hash: hashToken('c'), expiresAt: now + 600_000, path: null }, 8)
  await store.issue('kept', { hash: hashToken('d'), expiresAt: now + 600_000, path: null }, 8)
  t.equal(store.size, 3)
  // wait for a sweep to have run, however long the machine takes
  await eventually(t, 'a sweep ran', () => store.size === 2, 10_000)
  t.equal(store.size, 2, 'the id whose tokens all expired is dropped')
  // 'half' lost its expired record but kept the live one, even when asked about it before expiry
  t.equal(await store.consume('half', hashToken('b'), '/', now), 'mismatch')
  t.equal(await store.consume('half', hashToken('c'), '/', Date.now()), 'consumed')
  t.equal(await store.consume('kept', hashToken('d'), '/', Date.now()), 'consumed')
  t.equal(store.size, 0)
})

t.test('memoryTokenStore close and options', async (t) => {
  const store = memoryTokenStore({})
  await store.issue('x', { hash: hashToken('a'), expiresAt: Date.now() + 1000, path: null }, 8)
  t.equal(store.size, 1)
  store.close()
  t.equal(store.size, 0, 'close drops every token')
  store.close()
  for (const sweepInterval of [0, -1, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 31, '1000', null]) {
    t.throws(() => memoryTokenStore({ sweepInterval: sweepInterval as number }), { name: 'TypeError', message: /sweepInterval/ }, String(sweepInterval))
  }
  const max = memoryTokenStore({ sweepInterval: 2 ** 31 - 1 })
  max.close()
  t.pass('the longest timer delay is accepted')
})
