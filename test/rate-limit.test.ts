/**
 * examples/rate-limit.js, as a user runs it (the built package): after `max` token requests
 * from one address the token route answers 429 and issues nothing, whatever the cookie; the
 * WebSocket route and the tokens already issued are unaffected.
 */
import t, { type Test } from 'tap'
import { existsSync, readdirSync, statSync } from 'node:fs'
import { join } from 'node:path'
import type { FastifyInstance } from 'fastify'
import { Client, close } from './helpers/app'
import { memoryTokenStore, type TokenStore } from '../lib/index'

// examples/rate-limit.js is plain CommonJS, as users run it
const { buildApp } = require('../examples/rate-limit.js') as {
  buildApp: (options: { max?: number, timeWindow?: string, guard?: Record<string, unknown> }) => Promise<FastifyInstance>
}

const root = join(__dirname, '..')

function newestSource (dir: string): number {
  return Math.max(0, ...readdirSync(dir, { withFileTypes: true }).map((entry) => {
    const path = join(dir, entry.name)
    return entry.isDirectory() ? newestSource(path) : statSync(path).mtimeMs
  }))
}

/** The example loads dist/, as users do: `npm test` builds first; a missing or stale build fails. */
function built (t: Test): boolean {
  const entry = join(root, 'dist', 'index.js')
  if (!existsSync(entry) || statSync(entry).mtimeMs < newestSource(join(root, 'lib'))) {
    t.fail('examples/rate-limit.js runs the built package: run `npm run build` first')
    return false
  }
  return true
}

t.test('the token route answers 429 after the limit and issues no token', async (t) => {
  if (!built(t)) return
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
