/**
 * fastify-websocket-guard/client: the browser side. `openGuardedWebSocket` asks the token
 * route for a one-time token bound to the socket's path, then opens the socket with it;
 * `GuardedWebSocket` does that for every connection and reconnects as the guard's close codes
 * say (4408: at once; 4401: never; anything else: with backoff).
 *
 * A standalone ES module: no imports, so a page can load it with `<script type="module">` and
 * no bundler, and Node can import it (tests, server-side rendering) without touching any
 * browser global until a socket is asked for. A token is a credential: it never appears in an
 * error message or an event, and the client logs nothing.
 */

export type GuardedWebSocketTransport = 'protocol' | 'query'

export interface GuardedWebSocketOptions {
  /** the plugin's token route (same origin as the page); default `'/websocket-token'` */
  tokenUrl?: string
  /** subprotocols of your own to offer, as for `new WebSocket(url, protocols)` */
  protocols?: string | string[]
  /** how the token travels: a subprotocol entry (default) or the query string */
  transport?: GuardedWebSocketTransport
  /**
   * the route path the token is bound to; default: the socket URL's path. `null` binds it to
   * no path, for a proxy that rewrites paths (`/app/chat` in the page, `/chat` on the server),
   * which can also be named here (`path: '/chat'`)
   */
  path?: string | null
  /** the plugin's `protocol` option, when the server changed it; default `'websocket-guard'` */
  protocol?: string
  /** the plugin's `queryParam` option, when the server changed it; default `'token'` */
  queryParam?: string
  /** aborts the token request or the opening handshake; the promise rejects with `signal.reason` */
  signal?: AbortSignal
}

export interface GuardedWebSocketReconnectOptions extends Omit<GuardedWebSocketOptions, 'signal'> {
  /** shortest wait before a reconnection after a failure (ms); default `500` */
  minDelay?: number
  /** longest wait (ms); default `30000` */
  maxDelay?: number
  /** reconnections in a row without an opened connection before giving up; default `Infinity` */
  maxRetries?: number
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
// one request path, as the token route accepts it to bind a token
const PATH_RE = /^\/[^?#\s]*$/
// the longest wait a timer can take (a larger one fires at once)
const MAX_TIMER_DELAY = 2 ** 31 - 1

const OPEN_OPTIONS = new Set(['tokenUrl', 'protocols', 'transport', 'path', 'protocol', 'queryParam', 'signal'])
const RECONNECT_OPTIONS = new Set(['tokenUrl', 'protocols', 'transport', 'path', 'protocol', 'queryParam', 'minDelay', 'maxDelay', 'maxRetries'])

function optionsError (message: string): GuardedWebSocketError {
  return new GuardedWebSocketError('WS_GUARD_CLIENT_OPTIONS', message)
}

/** The page's URL, which relative URLs resolve against; none outside a browser. */
function pageUrl (): string | undefined {
  return typeof location === 'undefined' ? undefined : location.href
}

/** What every connection of one socket URL and one set of options needs, checked once. */
interface Plan {
  /** names the caller in error messages */
  caller: string
  /** the socket URL, ws: or wss:, without a token */
  target: URL
  tokenUrl: URL
  /** the path the token is bound to, or `null` for none */
  path: string | null
  transport: GuardedWebSocketTransport
  protocol: string
  queryParam: string
  /** the user's own subprotocols */
  own: string[]
}

function makePlan (caller: string, url: string | URL, options: GuardedWebSocketOptions, known: Set<string>): Plan {
  if (typeof options !== 'object' || options === null) throw optionsError(`${caller}: options must be an object`)
  for (const name of Object.keys(options)) {
    if (!known.has(name)) throw optionsError(`${caller}: unknown option "${name}"`)
  }
  const {
    tokenUrl = '/websocket-token',
    transport = 'protocol',
    protocol = DEFAULT_PROTOCOL,
    queryParam = 'token'
  } = options
  if (transport !== 'protocol' && transport !== 'query') {
    throw optionsError(`${caller}: transport must be "protocol" or "query"`)
  }
  if (typeof protocol !== 'string' || !PROTOCOL_RE.test(protocol)) {
    throw optionsError(`${caller}: protocol must be a subprotocol name`)
  }
  if (typeof queryParam !== 'string' || !/^[A-Za-z0-9._~-]+$/.test(queryParam)) {
    throw optionsError(`${caller}: queryParam must be a query parameter name of unreserved URL characters`)
  }
  const target = socketUrl(caller, url)
  const path = options.path === undefined ? target.pathname : options.path
  if (path !== null && (typeof path !== 'string' || !PATH_RE.test(path))) {
    throw optionsError(`${caller}: path must be a request path starting with / (no query), or null`)
  }
  return {
    caller,
    target,
    tokenUrl: tokenEndpoint(caller, tokenUrl, target),
    path,
    transport,
    protocol,
    queryParam,
    own: userProtocols(caller, options.protocols, protocol + '.')
  }
}

/** The socket URL, absolute, with a ws: or wss: scheme (relative URLs resolve against the page). */
function socketUrl (caller: string, url: string | URL): URL {
  let parsed: URL
  try {
    parsed = new URL(url, pageUrl())
  } catch {
    throw optionsError(`${caller}: invalid socket URL${pageUrl() === undefined ? ' (outside a page, give an absolute URL)' : ''}`)
  }
  if (parsed.protocol === 'http:') parsed.protocol = 'ws:'
  else if (parsed.protocol === 'https:') parsed.protocol = 'wss:'
  if (parsed.protocol !== 'ws:' && parsed.protocol !== 'wss:') {
    throw optionsError(`${caller}: the socket URL must be ws:, wss:, http: or https:`)
  }
  parsed.hash = ''
  return parsed
}

/** The token route's URL; outside a page, a relative one is taken on the socket's server. */
function tokenEndpoint (caller: string, tokenUrl: unknown, target: URL): URL {
  const base = pageUrl() ?? target.href.replace(/^ws/, 'http')
  try {
    if (typeof tokenUrl !== 'string') throw new TypeError('not a string')
    return new URL(tokenUrl, base)
  } catch {
    throw optionsError(`${caller}: invalid tokenUrl`)
  }
}

/** The user's protocols, checked: the browser would throw with the whole list in its message. */
function userProtocols (caller: string, protocols: string | string[] | undefined, prefix: string): string[] {
  const list = protocols === undefined ? [] : typeof protocols === 'string' ? [protocols] : protocols
  if (!Array.isArray(list)) throw optionsError(`${caller}: protocols must be a string or an array of strings`)
  for (const entry of list) {
    if (typeof entry !== 'string' || !PROTOCOL_RE.test(entry)) {
      throw optionsError(`${caller}: protocols must be subprotocol names (RFC 6455 token characters)`)
    }
    if (entry.startsWith(prefix)) {
      throw optionsError(`${caller}: a protocol starting with "${prefix}" would be taken for a token`)
    }
  }
  if (new Set(list).size !== list.length) throw optionsError(`${caller}: protocols must not repeat`)
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

async function fetchToken (plan: Plan, signal: AbortSignal | undefined): Promise<string> {
  const url = new URL(plan.tokenUrl)
  if (plan.path !== null) url.searchParams.set('path', plan.path)
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
    throw new GuardedWebSocketError('WS_GUARD_TOKEN_REQUEST_FAILED', `${plan.caller}: the token route could not be reached`, { cause: err })
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
      `${plan.caller}: the token route refused (HTTP ${response.status}${serverCode === undefined ? '' : ' ' + serverCode})`,
      { status: response.status, serverCode })
  }
  if (typeof fields.token !== 'string' || !TOKEN_RE.test(fields.token)) {
    throw new GuardedWebSocketError('WS_GUARD_TOKEN_REQUEST_FAILED', `${plan.caller}: the token route answered no token`, { status: response.status })
  }
  return fields.token
}

/** Resolves once `socket` is open; rejects when it closes first, or when `signal` aborts. */
function opened (socket: WebSocket, caller: string, where: string, signal: AbortSignal | undefined): Promise<WebSocket> {
  const abort = aborted(signal)
  const open = new Promise<WebSocket>((resolve, reject) => {
    socket.addEventListener('open', () => resolve(socket), { once: true })
    // a refused upgrade fires 'error' and then 'close' (1006); the browser tells no status
    socket.addEventListener('close', (event) => {
      reject(new GuardedWebSocketError('WS_GUARD_UPGRADE_FAILED',
        `${caller}: the WebSocket to ${where} did not open (the server refused the upgrade or could not be reached)`,
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

/** One connection: a fresh token, then the socket opened with it. */
async function connect (plan: Plan, signal: AbortSignal | undefined): Promise<WebSocket> {
  signal?.throwIfAborted()
  const token = await fetchToken(plan, signal)
  signal?.throwIfAborted()

  const target = new URL(plan.target)
  // what error messages may name: never the query, where a token may ride
  const where = target.origin + target.pathname
  const prefix = plan.protocol + '.'
  let protocols: string[]
  if (plan.transport === 'protocol') {
    // The bare name first, so that a server selecting the first protocol it is offered (ws's
    // default) has one to select once the guard has removed the token entry; the browser fails
    // a connection whose offered protocols the server does not answer with one of them.
    protocols = [plan.protocol, ...plan.own.filter((p) => p !== plan.protocol), prefix + token]
  } else {
    target.searchParams.set(plan.queryParam, token)
    protocols = plan.own
  }
  let socket: WebSocket
  try {
    socket = new WebSocket(target, protocols)
  } catch (err) {
    // the browser's own message would quote the URL or the protocols, token included
    throw new GuardedWebSocketError('WS_GUARD_UPGRADE_FAILED', `${plan.caller}: the WebSocket to ${where} could not be created (${(err as Error).name})`)
  }
  return await opened(socket, plan.caller, where, signal)
}

/**
 * Fetches a one-time token bound to the path of `url` (or to `options.path`) from the token
 * route (same origin, with the session cookie), opens the WebSocket with it and resolves with
 * the open socket. Every call fetches a fresh token: to reconnect, call it again, or use
 * `GuardedWebSocket`, which does.
 */
export async function openGuardedWebSocket (url: string | URL, options: GuardedWebSocketOptions = {}): Promise<WebSocket> {
  const plan = makePlan('openGuardedWebSocket', url, options, OPEN_OPTIONS)
  return await connect(plan, options.signal)
}

/** Why a `GuardedWebSocket` stopped for good. */
export type GuardedWebSocketEndReason =
  /** the server closed the socket with 4401: the session ended (logout, `closeSession`, `closeUser`) */
  | 'session-ended'
  /** `close()` was called */
  | 'closed'
  /** the token route answered 401 or 403 */
  | 'unauthorized'
  /** `maxRetries` reconnections in a row failed */
  | 'retries-exhausted'

/** The `ended` event: dispatched once, when a `GuardedWebSocket` stops for good. */
export class GuardedWebSocketEndedEvent extends Event {
  readonly reason: GuardedWebSocketEndReason
  /** why the last connection attempt failed, when one did ('unauthorized', 'retries-exhausted') */
  readonly error: GuardedWebSocketError | undefined

  constructor (reason: GuardedWebSocketEndReason, error?: GuardedWebSocketError) {
    super('ended')
    this.reason = reason
    this.error = error
  }
}

export interface GuardedWebSocketEventMap {
  open: Event
  close: CloseEvent
  message: MessageEvent
  ended: GuardedWebSocketEndedEvent
}

const CONNECTING = 0
const OPEN = 1
const CLOSING = 2
const CLOSED = 3

// the guard's close codes (API.md, "The socket's life")
const SESSION_ENDED = 4401
const LIFETIME_REACHED = 4408

/** A `close` event for our listeners; Node 22, where the client may be imported, has no CloseEvent. */
function closeEvent (source: CloseEvent): CloseEvent {
  const init = { code: source.code, reason: source.reason, wasClean: source.wasClean }
  return typeof CloseEvent === 'function' ? new CloseEvent('close', init) : Object.assign(new Event('close'), init) as CloseEvent
}

export interface GuardedWebSocket {
  addEventListener<K extends keyof GuardedWebSocketEventMap>(type: K, listener: (this: GuardedWebSocket, event: GuardedWebSocketEventMap[K]) => unknown, options?: boolean | AddEventListenerOptions): void
  addEventListener (type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void
  removeEventListener<K extends keyof GuardedWebSocketEventMap>(type: K, listener: (this: GuardedWebSocket, event: GuardedWebSocketEventMap[K]) => unknown, options?: boolean | EventListenerOptions): void
  removeEventListener (type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | EventListenerOptions): void
}

/**
 * A WebSocket that stays connected: each connection with a fresh token; after 4408 (the
 * session's lifetime) at once, after any other close or failed attempt with backoff and full
 * jitter; never after 4401 (the session ended), `close()`, or a 401/403 from the token route.
 * `open` and `close` are dispatched for each connection that opened, `message` for each
 * message, `ended` once at the end. Attempts that fail before opening dispatch nothing.
 */
export class GuardedWebSocket extends EventTarget {
  static readonly CONNECTING = CONNECTING
  static readonly OPEN = OPEN
  static readonly CLOSING = CLOSING
  static readonly CLOSED = CLOSED

  readonly #plan: Plan
  readonly #minDelay: number
  readonly #maxDelay: number
  readonly #maxRetries: number
  #state = CONNECTING
  /** the open connection, if any */
  #socket: WebSocket | null = null
  /** aborts the attempt under way (token request or handshake), if any */
  #attempt: AbortController | null = null
  #timer: ReturnType<typeof setTimeout> | undefined
  /** the highest next backoff wait: minDelay after an open, doubling with each wait */
  #cap: number
  /** reconnections since the last open */
  #retries = 0
  #ended = false

  constructor (url: string | URL, options: GuardedWebSocketReconnectOptions = {}) {
    super()
    this.#plan = makePlan('GuardedWebSocket', url, options, RECONNECT_OPTIONS)
    const { minDelay = 500, maxDelay = 30_000, maxRetries = Infinity } = options
    if (typeof minDelay !== 'number' || !(minDelay > 0) || minDelay > MAX_TIMER_DELAY) {
      throw optionsError(`GuardedWebSocket: minDelay must be a number of milliseconds above 0, up to ${MAX_TIMER_DELAY}`)
    }
    if (typeof maxDelay !== 'number' || !(maxDelay >= minDelay) || maxDelay > MAX_TIMER_DELAY) {
      throw optionsError(`GuardedWebSocket: maxDelay must be a number of milliseconds from minDelay up to ${MAX_TIMER_DELAY}`)
    }
    if (typeof maxRetries !== 'number' || !(maxRetries === Infinity || (Number.isInteger(maxRetries) && maxRetries >= 0))) {
      throw optionsError('GuardedWebSocket: maxRetries must be a whole number from 0, or Infinity')
    }
    this.#minDelay = minDelay
    this.#maxDelay = maxDelay
    this.#maxRetries = maxRetries
    this.#cap = minDelay
    this.#connect()
  }

  /** 0 while connecting or waiting to reconnect, 1 open, 2 closing after `close()`, 3 ended */
  get readyState (): number {
    return this.#state
  }

  /** the subprotocol the server selected for the open connection, else `''` */
  get protocol (): string {
    return this.#socket?.protocol ?? ''
  }

  /** the open connection's `WebSocket`, or `null` between connections */
  get socket (): WebSocket | null {
    return this.#socket
  }

  /** Sends on the open connection; throws `InvalidStateError`, as a WebSocket does, when there is none. */
  send (data: string | ArrayBufferLike | Blob | ArrayBufferView): void {
    if (this.#socket === null) throw new DOMException('GuardedWebSocket: no open connection', 'InvalidStateError')
    this.#socket.send(data)
  }

  /** Closes the connection (if one is open) and stops: no further token request or connection. */
  close (code?: number, reason?: string): void {
    if (this.#state === CLOSING || this.#state === CLOSED) return
    if (this.#socket !== null) {
      // WebSocket#close checks code and reason, and throws before anything changed here
      this.#socket.close(code, reason)
      this.#state = CLOSING
      return
    }
    this.#state = CLOSED
    this.#attempt?.abort()
    this.#attempt = null
    clearTimeout(this.#timer)
    // as a WebSocket does, the events of close() come after it returns
    queueMicrotask(() => this.#end('closed'))
  }

  #connect (): void {
    const attempt = new AbortController()
    this.#attempt = attempt
    void connect(this.#plan, attempt.signal).then(
      (socket) => this.#opened(socket, attempt),
      (err: unknown) => this.#failed(err, attempt)
    )
  }

  #opened (socket: WebSocket, attempt: AbortController): void {
    // close() came between the open event and this callback
    if (attempt.signal.aborted) {
      socket.close()
      return
    }
    this.#attempt = null
    this.#socket = socket
    this.#state = OPEN
    this.#cap = this.#minDelay
    this.#retries = 0
    const onMessage = (event: MessageEvent): void => {
      this.dispatchEvent(new MessageEvent('message', { data: event.data, origin: event.origin, lastEventId: event.lastEventId }))
    }
    socket.addEventListener('message', onMessage)
    socket.addEventListener('close', (event) => {
      socket.removeEventListener('message', onMessage)
      this.#closed(event)
    }, { once: true })
    this.dispatchEvent(new Event('open'))
  }

  #closed (event: CloseEvent): void {
    this.#socket = null
    const asked = this.#state === CLOSING
    const ends = asked || event.code === SESSION_ENDED
    this.#state = ends ? CLOSED : CONNECTING
    this.dispatchEvent(closeEvent(event))
    if (ends) this.#end(asked ? 'closed' : 'session-ended')
    else this.#retry(event.code === LIFETIME_REACHED, undefined)
  }

  #failed (err: unknown, attempt: AbortController): void {
    if (attempt.signal.aborted) return
    this.#attempt = null
    const error = err instanceof GuardedWebSocketError
      ? err
      : new GuardedWebSocketError('WS_GUARD_UPGRADE_FAILED', 'GuardedWebSocket: the connection attempt failed', { cause: err })
    if (error.code === 'WS_GUARD_TOKEN_REQUEST_FAILED' && (error.status === 401 || error.status === 403)) {
      this.#state = CLOSED
      this.#end('unauthorized', error)
    } else {
      this.#retry(false, error)
    }
  }

  /** The next attempt: at once, or after a wait drawn uniformly between minDelay and the cap. */
  #retry (immediately: boolean, error: GuardedWebSocketError | undefined): void {
    // a listener of `close` may have called close()
    if (this.#state !== CONNECTING) return
    if (this.#retries >= this.#maxRetries) {
      this.#state = CLOSED
      this.#end('retries-exhausted', error)
      return
    }
    this.#retries++
    if (immediately) {
      this.#connect()
      return
    }
    const wait = this.#minDelay + Math.random() * (this.#cap - this.#minDelay)
    this.#cap = Math.min(this.#cap * 2, this.#maxDelay)
    this.#timer = setTimeout(() => {
      this.#timer = undefined
      this.#connect()
    }, wait)
  }

  #end (reason: GuardedWebSocketEndReason, error?: GuardedWebSocketError): void {
    if (this.#ended) return
    this.#ended = true
    this.dispatchEvent(new GuardedWebSocketEndedEvent(reason, error))
  }
}
