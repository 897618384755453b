// How the guard learns that a socket it follows has gone (lib/sockets/connections.ts): its
// listener leaves the connection while ws takes it and comes back when the upgrade does not
// complete at once; an open socket is forgotten when it leaves websocketServer.clients, or
// through a listener of its own without clientTracking.
import t from 'tap'
import { connect as tcpConnect } from 'node:net'
import { buildApp, Client, type AppOptions } from './helpers/app'
import { call, closedWithin, echoes, ENDED, held, open, until, withSessionRoutes } from './helpers/lifecycle'

async function app (t: Parameters<typeof buildApp>[0], options: AppOptions = {}): Promise<Awaited<ReturnType<typeof buildApp>>> {
  return await buildApp(t, withSessionRoutes({
    ...options,
    async setup (a) {
      a.get('/open', { websocket: true, guard: false }, (socket) => { socket.send('hello') })
      await options.setup?.(a)
    }
  }))
}

/** The listeners of `name` on the connection under a request, counted in the handler. */
function closeListeners (socket: { listenerCount: (name: string) => number }): number {
  return socket.listenerCount('close')
}

t.test('an open guarded socket costs no listener of the guard on its connection or its socket', async (t) => {
  const counts: Array<{ connection: number, socket: number }> = []
  const { app: server, base } = await app(t, {
    async setup (a) {
      a.get('/count', { websocket: true }, (socket, request) => {
        counts.push({ connection: closeListeners(request.raw.socket), socket: closeListeners(socket as any) })
      })
      a.get('/count-open', { websocket: true, guard: false }, (socket, request) => {
        counts.push({ connection: closeListeners(request.raw.socket), socket: closeListeners(socket as any) })
      })
    }
  })
  const client = new Client(base)
  const guarded = await open(client, '/count')
  const unguarded = await client.connect('/count-open')
  t.ok(unguarded.opened)
  t.equal(counts.length, 2)
  t.same(counts[0], counts[1], 'as many listeners as on a socket the guard does not follow')
  t.equal(held(server)?.sockets, 1)
  const closed = closedWithin(guarded, 5000)
  await call(client, '/logout')
  t.same(await closed, ENDED, 'and it still closes when its session ends')
  ;(unguarded.socket as any).close()
})

t.test('sockets closed by their client are forgotten, and their group with them', async (t) => {
  const { app: server, base } = await app(t)
  const client = new Client(base)
  const sockets = await Promise.all(Array.from({ length: 5 }, async () => await open(client)))
  t.equal(held(server)?.sockets, 5)
  for (const socket of sockets) socket.ws.close()
  t.ok(await until(() => held(server)?.sockets === 0), 'all forgotten')
  t.same(held(server), { sockets: 0, groups: 0, users: 0, deadlines: 0 })
})

t.test('without clientTracking, each guarded socket is followed by a listener of its own', async (t) => {
  const { app: server, base } = await app(t, { websocket: { options: { clientTracking: false } } })
  t.equal((server.websocketServer as any).clients, undefined)
  const client = new Client(base)
  const a = await open(client)
  const b = await open(client)
  t.equal(held(server)?.sockets, 2)
  a.ws.close()
  t.ok(await until(() => held(server)?.sockets === 1), 'a closed socket is forgotten')
  const closed = closedWithin(b, 5000)
  await call(client, '/logout')
  t.same(await closed, ENDED)
  t.ok(await until(() => held(server)?.sockets === 0))
})

t.test('a socket taken out of websocketServer.clients while open is still followed until it closes', async (t) => {
  const { app: server, base } = await app(t)
  const client = new Client(base)
  const socket = await open(client)
  const clients = (server.websocketServer as any).clients as Set<unknown>
  t.equal(clients.size, 1)
  for (const ws of [...clients]) clients.delete(ws)
  t.equal(held(server)?.sockets, 1, 'not forgotten: it is still open')
  t.ok(await echoes(socket))
  const closed = closedWithin(socket, 5000)
  await call(client, '/logout')
  t.same(await closed, ENDED, 'its session end still closes it')
  t.ok(await until(() => held(server)?.sockets === 0), 'and its close is seen')
})

t.test('an upgrade ws refuses after the guard passed it (a bad Sec-WebSocket-Key) is forgotten', async (t) => {
  const { app: server, base } = await app(t)
  const client = new Client(base)
  const { port } = new URL(base)
  for (const path of ['/chat', '/open']) {
    const token = path === '/chat' ? await client.token('?path=/chat') : ''
    const socket = tcpConnect(Number(port), '127.0.0.1')
    await new Promise((resolve) => socket.once('connect', resolve))
    let answer = ''
    socket.on('data', (chunk) => { answer += chunk.toString() })
    const ended = new Promise((resolve) => socket.once('close', resolve))
    socket.write(`GET ${path}?token=${token} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nOrigin: ${base}\r\nCookie: ${client.cookie}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: not-a-key\r\n\r\n`)
    await ended
    t.match(answer, /^HTTP\/1\.1 400 /, `${path}: ws refuses the handshake`)
    t.ok(await until(() => held(server)?.sockets === 0), `${path}: nothing held`)
  }
  t.same(held(server), { sockets: 0, groups: 0, users: 0, deadlines: 0 })
})

t.test('an upgrade that ws completes later (an asynchronous verifyClient) is followed once open, or forgotten when dropped', async (t) => {
  let hold = false
  const { app: server, base } = await app(t, {
    websocket: {
      options: {
        verifyClient (_info: unknown, done: (ok: boolean) => void) {
          const wait = (): void => { if (hold) setTimeout(wait, 10); else done(true) }
          setTimeout(wait, 10)
        }
      }
    }
  })
  const client = new Client(base)
  const socket = await open(client)
  t.equal(held(server)?.sockets, 1)
  const closed = closedWithin(socket, 5000)
  await call(client, '/logout')
  t.same(await closed, ENDED, 'closed at its session end')
  t.ok(await until(() => held(server)?.sockets === 0))

  // dropped by its client while ws waits for verifyClient
  hold = true
  const other = new Client(base)
  const token = await other.token('?path=/chat')
  const { port } = new URL(base)
  const tcp = tcpConnect(Number(port), '127.0.0.1')
  await new Promise((resolve) => tcp.once('connect', resolve))
  tcp.write(`GET /chat?token=${token} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nOrigin: ${base}\r\nCookie: ${other.cookie}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`)
  t.ok(await until(() => held(server)?.sockets === 1), 'reserved while ws waits')
  tcp.resetAndDestroy()
  t.ok(await until(() => held(server)?.sockets === 0), 'forgotten once its connection closed')
  hold = false
})
