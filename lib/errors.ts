/**
 * Every error the package throws, each with a stable `code` (API.md). Security errors answer
 * 403; the others say what failed (503 store, 500 wiring, 400 request) so that operators can
 * tell an outage or a misconfiguration from an attack. Messages never contain a token.
 */

export class WebsocketSecurityError extends Error {
  readonly statusCode: number = 403
  readonly code: string = 'WS_GUARD_SECURITY_ERROR'

  constructor (message = 'A security check failed, the connection should not be established') {
    super(message)
    this.name = new.target.name
  }
}

export class WebsocketOriginNotAllowed extends WebsocketSecurityError {
  override readonly code = 'WS_GUARD_ORIGIN_NOT_ALLOWED'

  /** under the same-origin default: the origin the server expected (logged, never sent) */
  expected?: string

  constructor (message = 'Origin not allowed', expected?: string | null) {
    super(message)
    if (typeof expected === 'string') this.expected = expected
  }
}

export class NoWebsocketTokenPresented extends WebsocketSecurityError {
  override readonly code = 'WS_GUARD_NO_TOKEN_PRESENTED'

  constructor (message = 'Connection did not present exactly one websocket token') {
    super(message)
  }
}

export class NoWebsocketTokenStored extends WebsocketSecurityError {
  override readonly code = 'WS_GUARD_NO_TOKEN_STORED'

  constructor (message = 'No websocket token in session to verify the presented token against') {
    super(message)
  }
}

export class WebsocketTokenMismatch extends WebsocketSecurityError {
  override readonly code = 'WS_GUARD_TOKEN_MISMATCH'

  constructor (message = 'Presented websocket token does not match a stored token') {
    super(message)
  }
}

export class WebsocketTokenExpired extends WebsocketSecurityError {
  override readonly code = 'WS_GUARD_TOKEN_EXPIRED'

  constructor (message = 'Presented websocket token has expired') {
    super(message)
  }
}

/** The errors that are not security verdicts: a code, a status, and an optional cause. */
class WebsocketGuardError extends Error {
  constructor (readonly code: string, readonly statusCode: number, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = new.target.name
  }
}

/**
 * The token store could not be asked, so the guard cannot know: it fails closed with 503
 * rather than 403.
 */
export class WebsocketGuardStoreUnavailable extends WebsocketGuardError {
  declare readonly code: 'WS_GUARD_STORE_UNAVAILABLE'

  constructor (message = 'Websocket token store unavailable', options?: { cause?: unknown }) {
    super('WS_GUARD_STORE_UNAVAILABLE', 503, message, options)
  }
}

/** A malformed request to the token route (for instance a bad `path`): 400, nothing issued. */
export class WebsocketGuardBadRequest extends WebsocketGuardError {
  constructor (message: string) {
    super('WS_GUARD_BAD_REQUEST', 400, message)
  }
}

/** A guarded upgrade or the token route found no session that can keep a token: 500. */
export class WebsocketGuardNoSession extends WebsocketGuardError {
  constructor (message: string) {
    super('WS_GUARD_NO_SESSION', 500, message)
  }
}

/**
 * An upgrade of a websocket route that the plugin did not see declared (declared before it
 * was registered, or outside its encapsulation context): 500, the socket never opens.
 */
export class WebsocketGuardRouteNotGuarded extends WebsocketGuardError {
  constructor (message: string) {
    super('WS_GUARD_ROUTE_NOT_GUARDED', 500, message)
  }
}

/** A plugin the guard needs is not registered: thrown at start-up. */
export class WebsocketGuardMissingDependency extends WebsocketGuardError {
  constructor (message: string) {
    super('WS_GUARD_MISSING_DEPENDENCY', 500, message)
  }
}

/**
 * A bad or unknown option, at registration, at route declaration or in a function's
 * arguments. A TypeError, as bad arguments are in Node.
 */
export class WebsocketGuardOptionError extends TypeError {
  readonly code = 'WS_GUARD_INVALID_OPTION'

  constructor (message: string) {
    super(message)
    this.name = 'TypeError'
  }
}

/**
 * Refused by the guard: a security error (403), a 503 because the guard could not decide,
 * or a 500 because the app is wired so that it cannot check.
 */
export type Refusal = WebsocketSecurityError | WebsocketGuardStoreUnavailable | WebsocketGuardNoSession | WebsocketGuardRouteNotGuarded

export function isRefusal (err: unknown): err is Refusal {
  return err instanceof WebsocketSecurityError || err instanceof WebsocketGuardStoreUnavailable ||
    err instanceof WebsocketGuardNoSession || err instanceof WebsocketGuardRouteNotGuarded
}
