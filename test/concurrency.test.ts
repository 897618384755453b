/**
 * Exactly once under concurrency: one token presented on many simultaneous upgrades opens
 * exactly one socket, on every backend, on both transports, round after round; different
 * tokens of one session presented at the same moment all open.
 */
import t, { type Test } from 'tap'
import { buildApp, Client, close, type AppOptions, type ConnectResult } from './helpers/app'

const ROUNDS = 3

/**
 * A session store that answers after a few milliseconds, as a networked one does: every
 * upgrade of a burst then loads its copy of the session before any of them has saved.
 */
function slowStore (): Record<string, unknown> {
  const sessions = new Map<string, string>()
  const later = (fn: () => void): void => { setTimeout(fn, 5) }
  return {
    get (id: string, callback: (err: null, value?: unknown) => void) {
      later(() => { const value = sessions.get(id); callback(null, value === undefined ? undefined : JSON.parse(value)) })
    },
    set (id: string, value: unknown, callback: (err?: null) => void) {
      later(() => { sessions.set(id, JSON.stringify(value)); callback() })
    },
    destroy (id: string, callback: (err?: null) => void) {
      later(() => { sessions.delete(id); callback() })
    }
  }
}

const backends: Array<[string, AppOptions]> = [
  ['@fastify/session, tokens in the session', {}],
  ['@fastify/session with a slow session store', { session: { store: slowStore() } }],
  ['@fastify/secure-session, in-memory store', { secureSession: {} }]
]

type Transport = 'query' | 'protocol' | 'mixed'

function present (client: Client, token: string, transport: Transport, i: number): Promise<ConnectResult> {
  const viaProtocol = transport === 'protocol' || (transport === 'mixed' && i % 2 === 1)
  return viaProtocol
    ? client.connect('/chat', { protocols: ['websocket-guard', 'websocket-guard.' + token] })
    : client.connect('/chat?token=' + token)
}

async function sameTokenRace (t: Test, options: AppOptions, n: number, transport: Transport): Promise<void> {
  const { base, opened } = await buildApp(t, options)
  const client = new Client(base)
  for (let round = 0; round < ROUNDS; round++) {
    // another outstanding token, so that a refusal cannot be explained by an empty session
    const bystander = await client.token()
    const token = await client.token()
    const before = opened.length
    const results = await Promise.all(Array.from({ length: n }, (_, i) => present(client, token, transport, i)))
    const winners = results.filter((r) => r.opened)
    t.equal(winners.length, 1, `round ${round}: exactly one of ${n} upgrades opens`)
    t.equal(opened.length - before, 1, `round ${round}: the handler ran once`)
    const losers = results.filter((r) => !r.opened)
    t.ok(losers.every((r) => r.status === 403 && ['WS_GUARD_TOKEN_MISMATCH', 'WS_GUARD_NO_TOKEN_STORED'].includes(r.body?.code)),
      `round ${round}: the others are refused with 403`)
    await Promise.all(winners.map(close))
    // and it stays spent
    const replay = await client.connect('/chat?token=' + token)
    t.equal(replay.opened, false, `round ${round}: replay refused`)
    // the race broke nothing else
    const after = await client.connect('/chat?token=' + bystander)
    t.equal(after.opened, true, `round ${round}: the other token still opens`)
    await close(after)
  }
}

for (const [name, options] of backends) {
  t.test(name, async (t) => {
    for (const n of [2, 20]) {
      for (const transport of ['query', 'protocol', 'mixed'] as const) {
        t.test(`one token on ${n} simultaneous upgrades (${transport})`, (t) => sameTokenRace(t, options, n, transport))
      }
    }

    t.test('different tokens of one session at the same moment all open', async (t) => {
      const { base, opened } = await buildApp(t, options)
      const client = new Client(base)
      for (let round = 0; round < ROUNDS; round++) {
        const tokens: string[] = []
        for (let i = 0; i < 6; i++) tokens.push(await client.token())
        const before = opened.length
        const results = await Promise.all(tokens.map((token, i) => present(client, token, 'mixed', i)))
        t.same(results.map((r) => r.opened), Array(6).fill(true), `round ${round}: every tab opens`)
        t.equal(opened.length - before, 6)
        t.same(new Set(opened.slice(before).map((o) => (o.websocketGuard as { token: string }).token)), new Set(tokens))
        await Promise.all(results.map(close))
        // each of them is spent
        const replays = await Promise.all(tokens.map((token) => client.connect('/chat?token=' + token)))
        t.same(replays.map((r) => r.opened), Array(6).fill(false), `round ${round}: none works twice`)
      }
    })

    t.test('two sessions racing with their own tokens do not interfere', async (t) => {
      const { base } = await buildApp(t, options)
      const alice = new Client(base)
      const bob = new Client(base)
      for (let round = 0; round < ROUNDS; round++) {
        const [a, b] = [await alice.token(), await bob.token()]
        const results = await Promise.all([
          ...Array.from({ length: 5 }, () => alice.connect('/chat?token=' + a)),
          ...Array.from({ length: 5 }, () => bob.connect('/chat?token=' + b)),
          // each presenting the other's token
          alice.connect('/chat?token=' + b),
          bob.connect('/chat?token=' + a)
        ])
        t.equal(results.slice(0, 5).filter((r) => r.opened).length, 1, `round ${round}: alice opens once`)
        t.equal(results.slice(5, 10).filter((r) => r.opened).length, 1, `round ${round}: bob opens once`)
        t.same(results.slice(10).map((r) => r.opened), [false, false], 'a token works only in its own session')
        await Promise.all(results.map(close))
      }
    })
  })
}
