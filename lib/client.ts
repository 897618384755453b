/**
 * fastify-websocket-guard/client: the browser side. `openGuardedWebSocket` asks the token
 * route for a one-time token bound to the socket's path, then opens the socket with it.
 *
 * A standalone ES module for the browser: no imports, so a page can load it with
 * `<script type="module">` and no bundler. A token is a credential: it never appears in an
 * error message, and the client logs nothing.
 */

export type GuardedWebSocketTransport = 'protocol' | 'query'

export interface GuardedWebSocketOptions {
  /** the plugin's token route (same origin as the page); default `'/websocket-token'` */
  tokenUrl?: string
  /** subprotocols of your own to offer, as for `new WebSocket(url, protocols)` */
  protocols?: string | string[]
  /** how the token travels: a subprotocol entry (default) or the query string */
  transport?: GuardedWebSocketTransport
  /** the plugin's `protocol` option, when the server changed it; default `'websocket-guard'` */
  protocol?: string
  /** the plugin's `queryParam` option, when the server changed it; default `'token'` */
  queryParam?: string
  /** aborts the token request or the opening handshake; the promise rejects with `signal.reason` */
  signal?: AbortSignal
}

export type GuardedWebSocketErrorCode =
  /** the token route could not be reached, refused, or answered no token */
  | 'WS_GUARD_TOKEN_REQUEST_FAILED'
  /** the socket closed before it opened: the server refused the upgrade, or is unreachable */
  | 'WS_GUARD_UPGRADE_FAILED'
  /** bad arguments (URL, protocols, options) */
  | 'WS_GUARD_CLIENT_OPTIONS'

export class GuardedWebSocketError extends Error {
  readonly code: GuardedWebSocketErrorCode
  /** HTTP status of the token route's answer, when it answered */
  readonly status: number | undefined
  /** the `code` of the server's error body (e.g. `'WS_GUARD_ORIGIN_NOT_ALLOWED'`), when it sent one */
  readonly serverCode: string | undefined
  /** the close code of a socket that never opened (a refused upgrade shows as 1006) */
  readonly closeCode: number | undefined

  constructor (code: GuardedWebSocketErrorCode, message: string, details: { status?: number, serverCode?: string, closeCode?: number, cause?: unknown } = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause })
    this.name = 'GuardedWebSocketError'
    this.code = code
    this.status = details.status
    this.serverCode = details.serverCode
    this.closeCode = details.closeCode
  }
}

const DEFAULT_PROTOCOL = 'websocket-guard'
// a token as the server issues it (base64url); anything else is not put into a header or URL
const TOKEN_RE = /^[A-Za-z0-9_-]{1,256}$/
// RFC 6455 subprotocol names are RFC 7230 tokens
const PROTOCOL_RE = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/

function optionsError (message: string): GuardedWebSocketError {
  return new GuardedWebSocketError('WS_GUARD_CLIENT_OPTIONS', message)
}

/** The socket URL, absolute, with a ws: or wss: scheme (relative URLs resolve against the page). */
function socketUrl (url: string | URL): URL {
  let parsed: URL
  try {
    parsed = new URL(url, location.href)
  } catch {
    throw optionsError('openGuardedWebSocket: invalid socket URL')
  }
  if (parsed.protocol === 'http:') parsed.protocol = 'ws:'
  else if (parsed.protocol === 'https:') parsed.protocol = 'wss:'
  if (parsed.protocol !== 'ws:' && parsed.protocol !== 'wss:') {
    throw optionsError('openGuardedWebSocket: the socket URL must be ws:, wss:, http: or https:')
  }
  parsed.hash = ''
  return parsed
}

/** The user's protocols, checked: the browser would throw with the whole list in its message. */
function userProtocols (protocols: string | string[] | undefined, prefix: string): string[] {
  const list = protocols === undefined ? [] : typeof protocols === 'string' ? [protocols] : protocols
  if (!Array.isArray(list)) throw optionsError('openGuardedWebSocket: protocols must be a string or an array of strings')
  for (const entry of list) {
    if (typeof entry !== 'string' || !PROTOCOL_RE.test(entry)) {
      throw optionsError('openGuardedWebSocket: protocols must be subprotocol names (RFC 6455 token characters)')
    }
    if (entry.startsWith(prefix)) {
      throw optionsError(`openGuardedWebSocket: a protocol starting with "${prefix}" would be taken for a token`)
    }
  }
  if (new Set(list).size !== list.length) throw optionsError('openGuardedWebSocket: protocols must not repeat')
  return list
}

/** Rejects with the signal's reason once it aborts; never settles otherwise. */
function aborted (signal: AbortSignal | undefined): { promise: Promise<never>, dispose: () => void } {
  if (signal === undefined) return { promise: new Promise<never>(() => {}), dispose () {} }
  let onAbort = (): void => {}
  const promise = new Promise<never>((_resolve, reject) => {
    onAbort = () => reject(signal.reason)
    // 'abort' fires once: a signal that has aborted already never fires it again
    if (signal.aborted) onAbort()
    else signal.addEventListener('abort', onAbort, { once: true })
  })
  return { promise, dispose: () => signal.removeEventListener('abort', onAbort) }
}

async function fetchToken (tokenUrl: string, path: string, signal: AbortSignal | undefined): Promise<string> {
  let url: URL
  try {
    url = new URL(tokenUrl, location.href)
  } catch {
    throw optionsError('openGuardedWebSocket: invalid tokenUrl')
  }
  url.searchParams.set('path', path)
  let response: Response
  try {
    response = await fetch(url, {
      credentials: 'same-origin',
      cache: 'no-store',
      headers: { accept: 'application/json' },
      signal
    })
  } catch (err) {
    if (signal?.aborted === true) throw signal.reason
    throw new GuardedWebSocketError('WS_GUARD_TOKEN_REQUEST_FAILED', 'openGuardedWebSocket: the token route could not be reached', { cause: err })
  }
  let body: unknown
  try {
    body = await response.json()
  } catch (err) {
    if (signal?.aborted === true) throw signal.reason
    body = undefined
  }
  const fields = (typeof body === 'object' && body !== null ? body : {}) as { token?: unknown, code?: unknown }
  if (!response.ok) {
    const serverCode = typeof fields.code === 'string' ? fields.code.slice(0, 64) : undefined
    throw new GuardedWebSocketError('WS_GUARD_TOKEN_REQUEST_FAILED',
      `openGuardedWebSocket: the token route refused (HTTP ${response.status}${serverCode === undefined ? '' : ' ' + serverCode})`,
      { status: response.status, serverCode })
  }
  if (typeof fields.token !== 'string' || !TOKEN_RE.test(fields.token)) {
    throw new GuardedWebSocketError('WS_GUARD_TOKEN_REQUEST_FAILED', 'openGuardedWebSocket: the token route answered no token', { status: response.status })
  }
  return fields.token
}

/** Resolves once `socket` is open; rejects when it closes first, or when `signal` aborts. */
function opened (socket: WebSocket, where: string, signal: AbortSignal | undefined): Promise<WebSocket> {
  const abort = aborted(signal)
  const open = new Promise<WebSocket>((resolve, reject) => {
    socket.addEventListener('open', () => resolve(socket), { once: true })
    // a refused upgrade fires 'error' and then 'close' (1006); the browser tells no status
    socket.addEventListener('close', (event) => {
      reject(new GuardedWebSocketError('WS_GUARD_UPGRADE_FAILED',
        `openGuardedWebSocket: the WebSocket to ${where} did not open (the server refused the upgrade or could not be reached)`,
        { closeCode: event.code }))
    }, { once: true })
  })
  return Promise.race([open, abort.promise]).then((value) => {
    abort.dispose()
    return value
  }, (err: unknown) => {
    abort.dispose()
    if (socket.readyState === WebSocket.CONNECTING || socket.readyState === WebSocket.OPEN) socket.close()
    throw err
  })
}

/**
 * Fetches a one-time token bound to the path of `url` from the token route (same origin, with
 * the session cookie), opens the WebSocket with it and resolves with the open socket. Every
 * call fetches a fresh token: to reconnect, call it again.
 */
export async function openGuardedWebSocket (url: string | URL, options: GuardedWebSocketOptions = {}): Promise<WebSocket> {
  const {
    tokenUrl = '/websocket-token',
    transport = 'protocol',
    protocol = DEFAULT_PROTOCOL,
    queryParam = 'token',
    signal
  } = options
  if (transport !== 'protocol' && transport !== 'query') {
    throw optionsError('openGuardedWebSocket: transport must be "protocol" or "query"')
  }
  if (typeof protocol !== 'string' || !PROTOCOL_RE.test(protocol)) {
    throw optionsError('openGuardedWebSocket: protocol must be a subprotocol name')
  }
  if (typeof queryParam !== 'string' || !/^[A-Za-z0-9._~-]+$/.test(queryParam)) {
    throw optionsError('openGuardedWebSocket: queryParam must be a query parameter name of unreserved URL characters')
  }
  const target = socketUrl(url)
  const prefix = protocol + '.'
  const own = userProtocols(options.protocols, prefix)
  signal?.throwIfAborted()

  const token = await fetchToken(tokenUrl, target.pathname, signal)
  signal?.throwIfAborted()

  // what error messages may name: never the query, where a token may ride
  const where = target.origin + target.pathname
  let protocols: string[]
  if (transport === 'protocol') {
    // The bare name first, so that a server selecting the first protocol it is offered (ws's
    // default) has one to select once the guard has removed the token entry; the browser fails
    // a connection whose offered protocols the server does not answer with one of them.
    protocols = [protocol, ...own.filter((p) => p !== protocol), prefix + token]
  } else {
    target.searchParams.set(queryParam, token)
    protocols = own
  }
  let socket: WebSocket
  try {
    socket = new WebSocket(target, protocols)
  } catch (err) {
    // the browser's own message would quote the URL or the protocols, token included
    throw new GuardedWebSocketError('WS_GUARD_UPGRADE_FAILED', `openGuardedWebSocket: the WebSocket to ${where} could not be created (${(err as Error).name})`)
  }
  return opened(socket, where, signal)
}
