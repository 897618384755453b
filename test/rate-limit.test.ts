/**
 * examples/rate-limit.js, as a user runs it (the built package): after `max` token requests
 * from one address the token route answers 429 and issues nothing, whatever the cookie; the
 * WebSocket route and the tokens already issued are unaffected.
 */
import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { Client, close } from './helpers/app'
import { builtPackage } from './helpers/util'
import { memoryTokenStore, type TokenStore } from '../lib/index'

// examples/rate-limit.js is plain CommonJS, as users run it
const { buildApp } = require('../examples/rate-limit.js') as {
  buildApp: (options: { max?: number, timeWindow?: string, guard?: Record<string, unknown> }) => Promise<FastifyInstance>
}

t.test('the token route answers 429 after the limit and issues no token', async (t) => {
  if (!builtPackage(t, 'examples/rate-limit.js')) return
  const inner = memoryTokenStore()
  let issued = 0
  const store: TokenStore = {
    async issue (...args) {
      issued++
      return inner.issue(...args)
    },
    consume: (...args) => inner.consume(...args),
    close: () => inner.close()
  }
  const app = await buildApp({ max: 3, timeWindow: '1 minute', guard: { store } })
  t.teardown(() => app.close())
  await app.listen({ port: 0, host: '127.0.0.1' })
  const base = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`
  const client = new Client(base)

  const tokens: string[] = []
  for (const remaining of ['2', '1', '0']) {
    const res = await client.getToken()
    t.equal(res.status, 200)
    t.equal(res.headers.get('x-ratelimit-remaining'), remaining)
    tokens.push(res.body.token)
  }
  const limited = await client.getToken()
  t.equal(limited.status, 429)
  t.equal(limited.body.statusCode, 429)
  t.notOk('token' in limited.body, 'no token in the answer')
  t.ok(Number(limited.headers.get('retry-after')) > 0, 'Retry-After says when to come back')
  t.equal(issued, 3, 'nothing was issued into the store')

  // keyed by address: dropping the cookie does not reset the limit
  const fresh = new Client(base)
  t.equal((await fresh.getToken()).status, 429)
  t.equal(issued, 3)

  // the WebSocket route has no limit here, and the tokens issued before still work
  for (const token of tokens) {
    const r = await client.connect('/chat?token=' + token)
    t.equal(r.opened, true)
    await close(r)
  }
})
