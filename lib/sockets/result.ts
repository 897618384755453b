/**
 * `request.websocketGuard` on a guarded route that passed. `signal` is a getter: its
 * AbortController is made only for a handler that reads it, and for a socket the guard
 * follows it is the one the guard aborts before sending its close frame.
 */
import { signalOf, type SocketEntry } from './registry'

export class GuardResult {
  #entry: SocketEntry | null
  #signal: AbortSignal | null = null

  constructor (
    /** the normalised allowed origin, or `null` when none was sent and that is allowed */
    readonly origin: string | null,
    /** the consumed token, or `null` where the route checks no token */
    readonly token: string | null,
    entry: SocketEntry | null
  ) {
    this.#entry = entry
  }

  /** aborted, before the close frame is sent, when the guard closes the socket */
  get signal (): AbortSignal {
    if (this.#entry !== null) return signalOf(this.#entry)
    // a socket the guard does not follow is never closed by it
    this.#signal ??= new AbortController().signal
    return this.#signal
  }
}
