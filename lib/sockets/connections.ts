/**
 * How the guard learns that a socket it follows has gone, at no cost per socket while it is
 * open. A listener of its own on each connection would cost about 140 B a socket: Node.js
 * keeps one 'close' listener as the function itself, two as an array of exactly two, and a
 * third grows that array to nineteen slots. So:
 *
 * - from the upgrade's start to ws taking the connection, the guard listens to the
 *   connection's 'close' (an upgrade may fail or be dropped in between);
 * - at `websocketServer.handleUpgrade` (routes.ts wraps it) that listener leaves, before ws
 *   adds its own, and comes back should the upgrade not complete there and then;
 * - once open, ws's own bookkeeping says when the socket closed: with `clientTracking` (ws's
 *   and @fastify/websocket's default) every socket leaves `websocketServer.clients` in its
 *   'close', and the guard puts a Set there that tells it. Without `clientTracking`, each
 *   socket gets the guard's listener after all.
 */
import type { GuardedSocket } from './registry'

/** ws's `readyState` once a socket has closed. */
const CLOSED = 3

/** What the guard uses of @fastify/websocket's ws server. */
export interface WebsocketServer {
  clients?: Set<unknown>
  on (event: 'connection', listener: (socket: GuardedSocket, raw: object) => void): unknown
  off (event: 'connection', listener: (socket: GuardedSocket, raw: object) => void): unknown
}

/** One plugin instance's side of the connections under upgrades and of the open sockets. */
export interface ConnectionWatcher {
  /** ws is about to take `transport`: the guard's listener on it leaves */
  detach (transport: object): void
  /** the upgrade of `transport` did not complete synchronously: the listener comes back */
  reattach (transport: object): void
  /** an open socket left `websocketServer.clients`: closed, or taken out by someone */
  gone (socket: GuardedSocket): void
}

const WATCHERS = Symbol.for('fastify-websocket-guard.watchers')

type Watched = WebsocketServer & { [WATCHERS]?: Set<ConnectionWatcher> }

/** `websocketServer.clients`, telling the watchers of each socket that leaves it. */
class WatchedClients<T> extends Set<T> {
  constructor (items: Iterable<T>, private readonly watchers: Set<ConnectionWatcher>) {
    super(items)
  }

  override delete (socket: T): boolean {
    const had = super.delete(socket)
    if (had) for (const watcher of this.watchers) watcher.gone(socket as GuardedSocket)
    return had
  }
}

/**
 * Adds `watcher` to the server's watchers; returns whether ws's `clients` tells them of each
 * socket that closes (otherwise each socket needs a listener).
 */
export function watch (wss: WebsocketServer, watcher: ConnectionWatcher): boolean {
  const server = wss as Watched
  let watchers = server[WATCHERS]
  if (watchers === undefined) {
    watchers = new Set()
    server[WATCHERS] = watchers
    if (server.clients instanceof Set) server.clients = new WatchedClients(server.clients, watchers)
  }
  watchers.add(watcher)
  return server.clients instanceof WatchedClients
}

export function unwatch (wss: WebsocketServer, watcher: ConnectionWatcher): void {
  (wss as Watched)[WATCHERS]?.delete(watcher)
}

/** Whether `socket` has emitted its 'close' (ws sets readyState first). */
export function hasClosed (socket: GuardedSocket): boolean {
  return (socket as { readyState?: number }).readyState === CLOSED
}

/**
 * Runs `upgrade` (ws's handleUpgrade) for `transport`, with the watchers' listeners off it
 * while ws takes the connection; `upgrade` gets the callback ws calls once the socket is open.
 */
export function upgradeWatched (wss: object, transport: object, cb: (...args: unknown[]) => void, upgrade: (cb: (...args: unknown[]) => void) => void): void {
  const watchers = (wss as Watched)[WATCHERS]
  if (watchers === undefined || watchers.size === 0) return upgrade(cb)
  for (const watcher of watchers) watcher.detach(transport)
  let opened = false
  try {
    // ws calls back with (socket, request): no rest parameters, which would make an array
    upgrade(function upgraded (socket: unknown, request: unknown) {
      opened = true
      cb(socket, request)
    })
  } finally {
    // refused by ws (its connection is destroyed and closes soon), or ws's verifyClient
    // answers later: the connection is watched again until it opens or closes
    if (!opened) for (const watcher of watchers) watcher.reattach(transport)
  }
}
