// Type tests of the browser client, compiled (never run) against the BUILT package as a page's
// module imports it (DOM lib, no Node types). Each `@ts-expect-error` must meet an error.
import {
  GuardedWebSocket,
  GuardedWebSocketEndedEvent,
  GuardedWebSocketError,
  openGuardedWebSocket,
  type GuardedWebSocketEndReason,
  type GuardedWebSocketErrorCode,
  type GuardedWebSocketEventMap,
  type GuardedWebSocketOptions,
  type GuardedWebSocketReconnectOptions
} from 'fastify-websocket-guard/client'

function expectType<T> (_value: T): void {}
/** true only when A and B are the same type, not merely assignable one way */
type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends (<T>() => T extends B ? 1 : 2) ? true : false
function expectExact<T extends true> (_proof?: T): void {}

// openGuardedWebSocket: every option, and the open WebSocket it resolves with
const options: GuardedWebSocketOptions = {
  tokenUrl: '/websocket-token',
  protocols: ['chat.v1'],
  transport: 'query',
  path: '/chat',
  protocol: 'websocket-guard',
  queryParam: 'token',
  signal: new AbortController().signal
}
expectType<Promise<WebSocket>>(openGuardedWebSocket('/chat', options))
expectType<Promise<WebSocket>>(openGuardedWebSocket(new URL('wss://app.example.com/chat')))
void openGuardedWebSocket('/chat', { path: null, protocols: 'chat.v1' })
// @ts-expect-error transport is 'protocol' or 'query'
void openGuardedWebSocket('/chat', { transport: 'header' })
// @ts-expect-error path is a string or null
void openGuardedWebSocket('/chat', { path: 42 })
// @ts-expect-error the reconnecting options are the class's
void openGuardedWebSocket('/chat', { maxRetries: 3 })

// GuardedWebSocket: options, members, events
const reconnect: GuardedWebSocketReconnectOptions = { tokenUrl: '/t', protocols: 'x', transport: 'protocol', path: null, minDelay: 500, maxDelay: 30_000, maxRetries: Infinity }
const ws = new GuardedWebSocket('/chat', reconnect)
new GuardedWebSocket(new URL('https://app.example.com/chat'))
// @ts-expect-error close() stops it: no signal
new GuardedWebSocket('/chat', { signal: new AbortController().signal })
// @ts-expect-error minDelay is a number of milliseconds
new GuardedWebSocket('/chat', { minDelay: '1s' })

expectType<EventTarget>(ws)
expectType<number>(ws.readyState)
expectType<string>(ws.protocol)
expectType<WebSocket | null>(ws.socket)
expectType<0>(GuardedWebSocket.CONNECTING)
expectType<3>(GuardedWebSocket.CLOSED)
ws.send('text')
ws.send(new Uint8Array(2))
ws.send(new Blob(['x']))
ws.close()
ws.close(4000, 'bye')
// @ts-expect-error readyState is read-only
ws.readyState = 1
// @ts-expect-error socket is read-only
ws.socket = null
// @ts-expect-error a close code is a number
ws.close('4000')

ws.addEventListener('open', (event) => { expectType<Event>(event) })
ws.addEventListener('close', (event) => { expectType<number>(event.code); expectType<string>(event.reason) })
ws.addEventListener('message', (event) => { expectType<MessageEvent>(event) })
ws.addEventListener('ended', (event) => {
  expectExact<Equal<typeof event.reason, 'session-ended' | 'closed' | 'unauthorized' | 'retries-exhausted'>>()
  expectType<GuardedWebSocketError | undefined>(event.error)
  // @ts-expect-error the reason is one of the four
  if (event.reason === 'timeout') return
})
ws.addEventListener('ended', { handleEvent (event) { expectType<Event>(event) } })
ws.addEventListener('custom', (event) => { expectType<Event>(event) })
ws.removeEventListener('ended', () => {})
expectExact<Equal<GuardedWebSocketEventMap['ended'], GuardedWebSocketEndedEvent>>()
expectExact<Equal<GuardedWebSocketEndReason, GuardedWebSocketEndedEvent['reason']>>()

// errors
const error = new GuardedWebSocketError('WS_GUARD_CLIENT_OPTIONS', 'bad')
expectType<Error>(error)
expectExact<Equal<GuardedWebSocketErrorCode, 'WS_GUARD_TOKEN_REQUEST_FAILED' | 'WS_GUARD_UPGRADE_FAILED' | 'WS_GUARD_CLIENT_OPTIONS'>>()
expectType<number | undefined>(error.status)
expectType<string | undefined>(error.serverCode)
expectType<number | undefined>(error.closeCode)
// @ts-expect-error codes are the client's own
new GuardedWebSocketError('WS_GUARD_ORIGIN_NOT_ALLOWED', 'x')
