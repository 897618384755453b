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

export const SESSION_ENDED: Close = { code: 4401, reason: 'session ended', kind: 'session-ended' }
export const LIFETIME_REACHED: Close = { code: 4408, reason: 'socket lifetime reached', kind: 'lifetime' }
export const FOUND_GONE: Close = { code: 4401, reason: 'session ended', kind: 'revalidation' }
export const SHUTTING_DOWN: Close = { code: 1001, reason: '', kind: 'shutdown' }

/** One guarded socket, from its reservation at the upgrade (before its token is consumed) on. */
export class SocketEntry {
  /** `null` until the upgrade completes */
  socket: GuardedSocket | null = null
  /** forgotten by the registry: closed, or its upgrade failed */
  done = false
  /** set once the guard decided to close it: a socket that opens later is closed at once */
  closing: Close | null = null
  /** every entry has one; a socket opened without a session has a group of its own */
  group: string | null = null
  user: string | null = null
  prevInGroup: SocketEntry | null = null
  nextInGroup: SocketEntry | null = null
  prevOfUser: SocketEntry | null = null
  nextOfUser: SocketEntry | null = null
  /** epoch ms; 0: none */
  deadline = 0
  heapIndex = -1
  /** the session id, kept only for revalidation */
  sessionId: string | null = null
  controller: AbortController | null = null
  /** the route's pattern, for the close published on the diagnostics channel */
  route = ''

  constructor (readonly openedAt: number) {}

  /** `request.websocketGuard.signal`: the controller is made only when someone asks. */
  signal (): AbortSignal {
    this.controller ??= new AbortController()
    if (this.closing !== null) this.controller.abort()
    return this.controller.signal
  }
}

export class Registry {
  readonly groups = new Map<string, SocketEntry>()
  readonly users = new Map<string, SocketEntry>()
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

  setUser (entry: SocketEntry, user: string): void {
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
    entry.socket = socket
    if (entry.closing !== null) closeSocket(socket, entry.closing, entry)
  }

  /** Forgets an entry (its socket closed, or its upgrade failed). Idempotent. */
  remove (entry: SocketEntry): void {
    if (entry.done) return
    entry.done = true
    this.size--
    unlink(this.groups, entry, entry.group as string, 'prevInGroup', 'nextInGroup')
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
    entry.closing = close
    entry.controller?.abort()
    if (entry.socket !== null) closeSocket(entry.socket, close, entry)
  }

  closeGroup (group: string, close: Close): void {
    for (let entry = this.groups.get(group) ?? null; entry !== null;) {
      const next: SocketEntry | null = entry.nextInGroup
      this.close(entry, close)
      entry = next
    }
  }

  /** Closes the user's sockets, but those of session group `except`, and those opened at or after `before`. */
  closeUser (user: string, close: Close, except: string | null, before = Infinity): void {
    for (let entry = this.users.get(user) ?? null; entry !== null;) {
      const next: SocketEntry | null = entry.nextOfUser
      if (entry.openedAt < before && (except === null || entry.group !== except)) this.close(entry, close)
      entry = next
    }
  }

  /** Every entry is in exactly one group: closing the groups closes them all. */
  closeAll (close: Close): void {
    for (const group of [...this.groups.keys()]) this.closeGroup(group, close)
  }
}

function unlink (heads: Map<string, SocketEntry>, entry: SocketEntry, key: string, prev: 'prevInGroup' | 'prevOfUser', next: 'nextInGroup' | 'nextOfUser'): void {
  const before = entry[prev]
  const after = entry[next]
  if (before !== null) {
    before[next] = after
  } else if (after !== null) {
    heads.set(key, after)
  } else {
    heads.delete(key)
  }
  if (after !== null) after[prev] = before
  entry[prev] = null
  entry[next] = null
}

function closeSocket (socket: GuardedSocket, close: Close, entry: SocketEntry): void {
  // shutdown closes are @fastify/websocket's own: the channel carries the guard's closes only
  if (close.kind !== 'shutdown') publishClose(entry.route, close.code, close.kind, entry.openedAt)
  // ws ignores a close on a socket that is already closing
  socket.close(close.code, close.reason)
}
