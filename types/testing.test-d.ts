// Type tests of fastify-websocket-guard/testing from CommonJS (dist/testing.d.ts), compiled
// (never run) against the BUILT package. Each `@ts-expect-error` must meet an error.
import Fastify, { type FastifyTypeProvider } from 'fastify'
import { pino } from 'pino'
import websocket from '@fastify/websocket'
import type { WebSocket } from 'ws'
import { injectGuardedWS, type InjectGuardedWSOptions, type TokenRouteError } from 'fastify-websocket-guard/testing'

function expectType<T> (_value: T): void {}

async function main (): Promise<void> {
  const app = Fastify()
  await app.register(websocket)
  const socket = await injectGuardedWS(app, '/chat')
  expectType<WebSocket>(socket)
  socket.send('ping')

  const options: InjectGuardedWSOptions = { origin: 'http://localhost', headers: { cookie: 'sessionId=abc' }, transport: 'query' }
  await injectGuardedWS(app, '/chat?room=1', options)
  await injectGuardedWS(app, '/chat', { origin: null })
  // @ts-expect-error transport is 'protocol' or 'query'
  await injectGuardedWS(app, '/chat', { transport: 'header' })
  // @ts-expect-error header values are strings
  await injectGuardedWS(app, '/chat', { headers: { 'x-count': 1 } })
  // @ts-expect-error the path comes second, as for injectWS
  await injectGuardedWS('/chat', app)
  // @ts-expect-error an app, not its options
  await injectGuardedWS({ logger: false }, '/chat')

  try {
    await injectGuardedWS(app, '/chat')
  } catch (err) {
    const refusal = err as TokenRouteError
    expectType<number>(refusal.statusCode)
    expectType<string | undefined>(refusal.code)
    expectType<Error>(refusal)
  }
}
void main
// any app, whatever its type provider or logger
interface StringProvider extends FastifyTypeProvider { validator: this['schema'] extends { type: 'string' } ? string : unknown, serializer: unknown }
async function providers (): Promise<void> {
  const typed = Fastify({ logger: true }).withTypeProvider<StringProvider>()
  await typed.register(websocket)
  expectType<WebSocket>(await injectGuardedWS(typed, '/chat'))
  const logged = Fastify({ loggerInstance: pino() })
  await injectGuardedWS(logged, '/chat')
}
void providers
