/**
 * `injectGuardedWS` against an app that keeps the same-origin default (no `origins`), as
 * API.md's "Test helpers" promises: an injected upgrade has no socket (so it counts as http)
 * and is sent with `Host: localhost` and `Origin: http://localhost`, which that default accepts.
 */
import t from 'tap'
import { once } from 'node:events'
import Fastify from 'fastify'
import cookie from '@fastify/cookie'
import session from '@fastify/session'
import websocket from '@fastify/websocket'
import websocketGuard from '../lib/index'
import { injectGuardedWS } from '../lib/testing'
import { SECRET } from './helpers/app'

t.test('the same-origin default accepts injectGuardedWS, and still refuses another origin', async (t) => {
  const app = Fastify({ logger: false })
  t.teardown(() => app.close())
  const rejections: string[] = []
  await app.register(cookie)
  await app.register(session, { secret: SECRET, cookie: { secure: false } })
  await app.register(websocket)
  await app.register(websocketGuard, { onReject (error) { rejections.push(error.code) } })
  const seen: Array<{ origin: string | null, token: string | null } | null> = []
  app.get('/chat', { websocket: true, guard: true }, (socket, request) => {
    seen.push(request.websocketGuard)
    socket.on('message', (data) => socket.send(data.toString()))
  })

  const socket = await injectGuardedWS(app, '/chat')
  t.teardown(() => socket.terminate())
  socket.send('ping')
  const [reply] = await once(socket, 'message')
  t.equal(String(reply), 'ping', 'open, end to end')
  t.equal(seen[0]?.origin, 'http://localhost')
  t.match(seen[0]?.token, /^[A-Za-z0-9_-]{43}$/)
  t.same(rejections, [])

  await t.rejects(injectGuardedWS(app, '/chat', { origin: 'http://evil.test' }), { message: 'Unexpected server response: 403' })
  t.same(rejections, ['WS_GUARD_ORIGIN_NOT_ALLOWED'])
})
