// A server process's heap after 10,000 guarded sockets opened and closed by their clients: a
// socket leaves nothing behind. The server runs in a process of its own (the built package),
// so that only its heap is measured.
import t from 'tap'
import { Client, tryOpen, call } from './helpers/lifecycle'
import { instance } from './helpers/instance'

// 10,000 connections take about a minute on a quiet machine
t.setTimeout(400_000)

t.test('a server process\'s heap is back to its baseline after 10,000 guarded sockets opened and closed', async (t) => {
  const server = await instance(t, { store: 'memory', identify: true, guard: { maxSocketLifetime: 3_600_000 } })
  const clients = Array.from({ length: 50 }, () => new Client(server.base, null))
  for (const client of clients) await call(client, '/login', 'POST', { user: 'someone' })
  async function cycle (count: number): Promise<void> {
    for (let i = 0; i < count; i += clients.length) {
      await Promise.all(clients.map(async (client) => {
        const r = await tryOpen(client)
        if (!('ws' in r)) throw new Error('refused')
        r.ws.close()
        await r.closed
      }))
    }
  }
  const heap = async (): Promise<number> => (await (await fetch(server.base + '/heap')).json() as { data: number }).data
  await cycle(2000)
  await new Promise((resolve) => setTimeout(resolve, 200))
  const baseline = await heap()
  await cycle(10_000)
  await new Promise((resolve) => setTimeout(resolve, 200))
  const held = await (await fetch(server.base + '/held')).json()
  t.same(held, { sockets: 0, groups: 0, users: 0, deadlines: 0 })
  const grown = await heap() - baseline
  // 10,000 sockets' registry entries kept by mistake would be over 1 MB
  t.ok(grown < 1_000_000, `heap back to its baseline (${Math.round(grown / 1024)} kB more after 10,000 sockets)`)
})

