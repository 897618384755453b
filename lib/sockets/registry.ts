/**
 * The open guarded sockets of this instance, by session group and by user id. Each socket is
 * one `SocketEntry` threaded on intrusive doubly linked lists (one per group, one per user),
 * whose heads are the values of two Maps: adding and removing are O(1) and allocate nothing
 * but the entry, and a group or user with no socket left leaves no key behind. Deadlines are
 * one shared heap with one timer (deadlines.ts).
 */
import { Deadlines } from './deadlines'
import { publishClose } from '../diagnostics'

/** What the guard uses of a `ws` WebSocket. */
export interface GuardedSocket {
  close (code: number, reason: string): void
}

/** Why and how the guard closes a socket. */
export interface Close {
  code: number
  reason: string
  kind: 'session-ended' | 'lifetime' | 'revalidation' | 'shutdown'
}

/**
 * Times in entries are milliseconds since this module loaded: small integers, which V8 keeps
 * inside the entry, where an epoch time would be a separate 16-byte number per socket.
 */
export const EPOCH = Date.now()
export function clock (): number {
  return Date.now() - EPOCH
}

export const SESSION_ENDED: Close = { code: 4401, reason: 'session ended', kind: 'session-ended' }
export const LIFETIME_REACHED: Close = { code: 4408, reason: 'socket lifetime reached', kind: 'lifetime' }
export const FOUND_GONE: Close = { code: 4401, reason: 'session ended', kind: 'revalidation' }
export const SHUTTING_DOWN: Close = { code: 1001, reason: '', kind: 'shutdown' }

/**
 * The AbortControllers of `request.websocketGuard.signal`, made only for a handler that reads
 * it: most sockets have none, so the entry keeps no field for one.
 */
const controllers = new WeakMap<SocketEntry, AbortController>()

/** `request.websocketGuard.signal` of a socket the guard follows. */
export function signalOf (entry: SocketEntry): AbortSignal {
  let controller = controllers.get(entry)
  if (controller === undefined) {
    controller = new AbortController()
    controllers.set(entry, controller)
  }
  if (entry.closing !== null) controller.abort()
  return controller.signal
}

/**
 * One guarded socket, from its reservation at the upgrade (before its token is consumed) on.
 * Six fields (72 B on a 64-bit Node.js): an entry is most of what the guard holds per socket.
 */
export class SocketEntry {
  /**
   * `null` while the upgrade is under way; the socket once it opened; the guard's close once
   * it decided to close it (a socket that opens later is closed at once)
   */
  state: GuardedSocket | Close | null = null
  /**
   * Every entry has one (a socket opened without a session has a group of its own) until the
   * registry forgets it: closed, or its upgrade failed.
   */
  group: string | null = null
  prevInGroup: SocketEntry | null = null
  nextInGroup: SocketEntry | null = null
  /** the route's pattern, for the close published on the diagnostics channel */
  route = ''

  /** `openedAt`: clock() ms */
  constructor (readonly openedAt: number) {}

  /** the guard's close, once it decided to close this socket */
  get closing (): Close | null {
    const state = this.state
    return state !== null && isClose(state) ? state : null
  }
}

/** The closes are the guard's plain objects; a socket is a `ws` WebSocket. */
function isClose (state: GuardedSocket | Close): state is Close {
  return typeof (state as Partial<Close>).kind === 'string'
}

/**
 * An entry with a user, a deadline or a session to revalidate. Kept apart so that the default
 * (sessions end, nothing else) pays for none of it.
 */
export class TrackedEntry extends SocketEntry {
  user: string | null = null
  prevOfUser: TrackedEntry | null = null
  nextOfUser: TrackedEntry | null = null
  /** clock() ms; 0: none */
  deadline = 0
  heapIndex = -1
  /** the session id, kept only for revalidation */
  sessionId: string | null = null
}

export class Registry {
  readonly groups = new Map<string, SocketEntry>()
  readonly users = new Map<string, TrackedEntry>()
  readonly deadlines = new Deadlines((entry) => this.close(entry, LIFETIME_REACHED))
  size = 0

  /** Adds a reserved entry under `group`. */
  add (entry: SocketEntry, group: string): void {
    this.size++
    const head = this.groups.get(group)
    if (head === undefined) {
      entry.group = group
    } else {
      // one copy of the id for the whole group, whatever string each request read
      entry.group = head.group
      entry.nextInGroup = head
      head.prevInGroup = entry
    }
    this.groups.set(entry.group as string, entry)
  }

  setUser (entry: TrackedEntry, user: string): void {
    const head = this.users.get(user)
    if (head === undefined) {
      entry.user = user
    } else {
      entry.user = head.user
      entry.nextOfUser = head
      head.prevOfUser = entry
    }
    this.users.set(entry.user as string, entry)
  }

  /** Called when the upgrade completed. */
  opened (entry: SocketEntry, socket: GuardedSocket): void {
    const closing = entry.closing
    if (closing !== null) closeSocket(socket, closing, entry)
    else entry.state = socket
  }

  /** Forgets an entry (its socket closed, or its upgrade failed). Idempotent. */
  remove (entry: SocketEntry): void {
    if (entry.group === null) return
    this.size--
    unlink(this.groups, entry, entry.group, 'prevInGroup', 'nextInGroup')
    entry.group = null
    if (!(entry instanceof TrackedEntry)) return
    if (entry.user !== null) unlink(this.users, entry, entry.user, 'prevOfUser', 'nextOfUser')
    if (entry.heapIndex !== -1) this.deadlines.remove(entry)
  }

  /**
   * The guard closes `entry`: forgotten at once (so that a second close finds nothing), its
   * signal aborted before the close frame is sent, and its socket closed, now or as soon as
   * the upgrade completes.
   */
  close (entry: SocketEntry, close: Close): void {
    this.remove(entry)
    const socket = entry.state
    entry.state = close
    controllers.get(entry)?.abort()
    if (socket !== null && !isClose(socket)) closeSocket(socket, close, entry)
  }

  /** Closes the sockets of session group `group` opened before `before` (epoch ms). */
  closeGroup (group: string, close: Close, before = Infinity): void {
    for (let entry = this.groups.get(group) ?? null; entry !== null;) {
      const next: SocketEntry | null = entry.nextInGroup
      if (EPOCH + entry.openedAt < before) this.close(entry, close)
      entry = next
    }
  }

  /** Closes the user's sockets, but those of session group `except`, and those opened at or after `before` (epoch ms). */
  closeUser (user: string, close: Close, except: string | null, before = Infinity): void {
    for (let entry = this.users.get(user) ?? null; entry !== null;) {
      const next: TrackedEntry | null = entry.nextOfUser
      if (EPOCH + entry.openedAt < before && (except === null || entry.group !== except)) this.close(entry, close)
      entry = next
    }
  }

  /** Every entry is in exactly one group: closing the groups closes them all. */
  closeAll (close: Close): void {
    for (const group of [...this.groups.keys()]) this.closeGroup(group, close)
  }
}

function unlink<E extends SocketEntry> (heads: Map<string, E>, entry: E, key: string, prev: 'prevInGroup' | 'prevOfUser', next: 'nextInGroup' | 'nextOfUser'): void {
  const links = entry as unknown as Record<string, E | null>
  const before = links[prev] as E | null
  const after = links[next] as E | null
  if (before !== null) {
    (before as unknown as Record<string, E | null>)[next] = after
  } else if (after !== null) {
    heads.set(key, after)
  } else {
    heads.delete(key)
  }
  if (after !== null) (after as unknown as Record<string, E | null>)[prev] = before
  links[prev] = null
  links[next] = null
}

function closeSocket (socket: GuardedSocket, close: Close, entry: SocketEntry): void {
  // shutdown closes are @fastify/websocket's own: the channel carries the guard's closes only
  if (close.kind !== 'shutdown') publishClose(entry.route, close.code, close.kind, EPOCH + entry.openedAt)
  // ws ignores a close on a socket that is already closing
  socket.close(close.code, close.reason)
}
