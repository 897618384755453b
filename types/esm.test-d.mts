// The same package seen from an ES module: `import` resolves to dist/index.d.mts.
import Fastify from 'fastify'
import cookie from '@fastify/cookie'
import session from '@fastify/session'
import websocket from '@fastify/websocket'
import websocketGuard, {
  consumeWebsocketToken,
  createOriginMatcher,
  issueWebsocketToken,
  WebsocketSecurityError,
  WebsocketTokenMismatch,
  type WebsocketGuardResult
} from 'fastify-websocket-guard'

function expectType<T> (_value: T): void {}

const app = Fastify()
await app.register(cookie)
await app.register(session, { secret: 'a-secret-with-at-least-32-characters' })
await app.register(websocket)
await app.register(websocketGuard, { origins: ['https://app.example.com'], tokenTTL: 30_000 })
// @ts-expect-error the default export is the plugin, with its options typed
await app.register(websocketGuard, { tokenTTL: '30s' })

app.get('/chat', { websocket: true, guard: true }, (socket, request) => {
  expectType<WebsocketGuardResult | null>(request.websocketGuard)
  socket.close()
})
// @ts-expect-error the route option is augmented from ESM too
app.get('/bad', { websocket: true, guard: 'yes' }, (socket) => { socket.close() })

expectType<string>(issueWebsocketToken({}))
expectType<string>(consumeWebsocketToken('/chat?token=abc', { websocket_token: 'abc' }))
expectType<(origin: string) => boolean>(createOriginMatcher('https://app.example.com'))
expectType<'WS_GUARD_TOKEN_MISMATCH'>(new WebsocketTokenMismatch().code)
expectType<WebsocketSecurityError>(new WebsocketTokenMismatch())
