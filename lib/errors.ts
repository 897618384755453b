/**
 * The guard's errors. Every security error answers 403; the classes and codes are the
 * public contract (API.md), so users can tell them apart in `onReject` and in logs.
 * Messages never contain a token.
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

  constructor (message = 'Origin not allowed') {
    super(message)
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

/**
 * Not a security verdict: the token store could not be asked, so the guard cannot know.
 * It fails closed with 503 rather than 403 so operators can tell an outage from an attack.
 */
export class WebsocketGuardStoreUnavailable extends Error {
  readonly statusCode = 503
  readonly code = 'WS_GUARD_STORE_UNAVAILABLE'

  constructor (message = 'Websocket token store unavailable', options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'WebsocketGuardStoreUnavailable'
  }
}

/** A malformed request to the token route (for instance a bad `path`): 400, nothing issued. */
export class WebsocketGuardBadRequest extends Error {
  readonly statusCode = 400
  readonly code = 'WS_GUARD_BAD_REQUEST'

  constructor (message: string) {
    super(message)
    this.name = 'WebsocketGuardBadRequest'
  }
}
