// fastify-websocket-guard/testing seen from an ES module: `import` resolves to dist/testing.d.mts.
import Fastify from 'fastify'
import websocket from '@fastify/websocket'
import type { WebSocket } from 'ws'
import { injectGuardedWS } from 'fastify-websocket-guard/testing'
import * as testing from 'fastify-websocket-guard/testing'

function expectType<T> (_value: T): void {}

const app = Fastify()
await app.register(websocket)
expectType<Promise<WebSocket>>(injectGuardedWS(app, '/chat', { transport: 'protocol' }))
expectType<typeof injectGuardedWS>(testing.injectGuardedWS)
// @ts-expect-error the helpers are named exports: there is no default
testing.default
