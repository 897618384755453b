/**
 * The socket's life (API.md "The socket's life"): every guarded socket belongs to a session
 * group (a hash of @fastify/session's session id, never the id itself; a random id kept in an
 * @fastify/secure-session cookie under `${sessionKey}_group`)
 * and, with `identify`, to a user id; the guard closes it when its session ends or is closed
 * by hand, when it outlives its session's expiry or `maxSocketLifetime`, and when
 * revalidation finds its session gone, on every instance that shares the store's close bus.
 *
 * No gaps: an upgrade reserves its entry (registry.ts) before its token is consumed, and a
 * session's end revokes its tokens before it closes the group and publishes the close. So an
 * upgrade that consumed its token before the revocation is already registered when the close
 * arrives (it is refused, or closed as soon as it opens), and one that comes after finds no
 * token. A close an instance missed while cut off from the bus is found in its marker when
 * the subscription is live again.
 *
 * With all of closeOnSessionEnd, identify, maxSocketLifetime and revalidateInterval off, the
 * guard follows no socket: nothing is registered or allocated per upgrade.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { storeCall } from '../deadline'
import type { TokenBackend } from '../backends/index'
import { NoWebsocketTokenStored, WebsocketGuardOptionError, WebsocketGuardStoreUnavailable } from '../errors'
import type { ResolvedOptions } from '../options'
import { derivedId, randomId, readSession, sessionIdOf, sessionOf, writeSession, type SessionLike } from '../session'
import type { CloseListener, CloseMessage, CloseSubscription } from '../stores/types'
import { clock, EPOCH, FOUND_GONE, LIFETIME_REACHED, Registry, SESSION_ENDED, SHUTTING_DOWN, SocketEntry, TrackedEntry, type Close, type GuardedSocket } from './registry'
import { GuardResult } from './result'
import { hasClosed, unwatch, watch, type ConnectionWatcher, type WebsocketServer } from './connections'
import { addEnder, addStamper, removeEnder, removeStamper, wrapFastifySession, wrapSecureSession, type Ended, type Ender, type Stamper } from './session-end'

export { GuardResult } from './result'

/** `options` of `closeSession` and `closeUser`. */
export interface CloseOptions {
  /** 4000–4999; default 4401 */
  code?: number
  /** default `'session ended'`; at most 123 bytes (UTF-8) */
  reason?: string
  /** keep the sockets of this request's session */
  except?: FastifyRequest | null
}

/** What `fastify.websocketGuard` gets from the socket's life. */
export interface SocketClosers {
  /** closes `request`'s session's guarded sockets everywhere and drops its outstanding tokens; the session goes on */
  closeSession (request: FastifyRequest, options?: CloseOptions): Promise<void>
  /** closes every guarded socket whose `identify` result was `id`, everywhere */
  closeUser (id: string, options?: CloseOptions): Promise<void>
}

export interface SocketLife extends SocketClosers {
  /** the backend, with a session group made when a token is issued */
  readonly backend: TokenBackend
  /** `null` when the guard follows no socket */
  readonly tracker: SocketTracker | null
}

/** The guard's side of the registry. */
export interface SocketTracker {
  /**
   * Registers the upgrade of `route` (its pattern) before its token is consumed: `null` when
   * it cannot complete. The caller hands the entry to `admit` once the token is consumed, to
   * `release` when the upgrade is refused.
   */
  reserve (request: FastifyRequest, route: string): SocketEntry | null
  /** identify, expiry, last checks: the result (a promise only while identify is waited for), or a refusal */
  admit (request: FastifyRequest, entry: SocketEntry, origin: string | null, token: string | null): GuardResult | Promise<GuardResult>
  release (entry: SocketEntry): void
}

const GROUP_SUFFIX = '_group'
/** Longest user id or session group a close names (the bus refuses longer ones too). */
const MAX_ID = 1024
/** Longest close reason a close frame carries, in bytes. */
const MAX_REASON = 123
/** Ended session groups remembered at most (each logout adds one for tokenTTL). */
const MAX_ENDED = 100_000
/**
 * A missed user close, found in its marker, closes that user's sockets opened up to this long
 * after it: the marker's time is the publisher's clock, and a close must not be lost to skew.
 */
const CLOCK_MARGIN = 5_000

type Transport = {
  destroyed?: boolean
  on (event: 'close', listener: (this: object) => void): unknown
  removeListener (event: 'close', listener: (this: object) => void): unknown
}

let wsSocketSymbol: symbol | undefined

/** The connection under an upgrade: its socket, or the stream of @fastify/websocket's injectWS. */
function transportOf (raw: object): Transport {
  const socket = (raw as { socket?: Transport | null }).socket
  if (socket !== undefined && socket !== null) return socket
  wsSocketSymbol ??= Object.getOwnPropertySymbols(raw).find((s) => s.description === 'ws-socket')
  return (raw as Record<symbol, Transport>)[wsSocketSymbol as symbol] as Transport
}

/**
 * Session groups that ended lately, refused at the upgrade: a stale copy of an ended session
 * (a replayed cookie, a concurrent request that saved it again) may still hold tokens issued
 * before the end, which expire within tokenTTL. Insertion order is expiry order: pruning
 * takes from the front, without a timer.
 */
export class EndedGroups {
  private readonly until = new Map<string, number>()

  constructor (private readonly ttl: number, private readonly max = MAX_ENDED) {}

  get size (): number {
    return this.until.size
  }

  add (group: string): void {
    const now = Date.now()
    for (const [id, until] of this.until) {
      if (until > now && this.until.size < this.max) break
      this.until.delete(id)
    }
    this.until.delete(group)
    this.until.set(group, now + this.ttl)
  }

  has (group: string): boolean {
    return (this.until.get(group) ?? 0) > Date.now()
  }
}

function invalid (what: string, message: string): never {
  throw new WebsocketGuardOptionError(`fastify-websocket-guard: ${what} ${message}`)
}

const CLOSE_OPTIONS = new Set(['code', 'reason', 'except'])

/** Each instance's registry, by its decorator: what tests and benchmarks count. */
const registries = new WeakMap<object, Registry>()

/** How much the guard holds for `fastify.websocketGuard`'s instance (tests, benchmarks); `null` when it follows no socket. */
export function trackedSockets (decorator: object): { sockets: number, groups: number, users: number, deadlines: number } | null {
  const registry = registries.get(decorator)
  if (registry === undefined) return null
  return { sockets: registry.size, groups: registry.groups.size, users: registry.users.size, deadlines: registry.deadlines.size }
}

export async function socketLife (fastify: FastifyInstance, opts: ResolvedOptions, backend: TokenBackend, decorator: object): Promise<SocketLife> {
  const groupKey = opts.sessionKey + GROUP_SUFFIX
  const secure = opts.sessionPlugin === '@fastify/secure-session'
  // a cookie session's token store id goes with its first write, whether sockets are followed or not
  const issuing = secure && backend.stamp !== undefined ? stampStoreIds(fastify, [groupKey, opts.sessionKey], backend) : backend
  const tracking = opts.closeOnSessionEnd || opts.identify !== undefined || opts.maxSocketLifetime !== false || opts.revalidateInterval !== false
  const registry = tracking ? new Registry() : null
  const ended = new EndedGroups(opts.tokenTTL + opts.storeTimeout)
  // each entry on its connection while the upgrade is under way, on its socket once open:
  // a property of this instance's own (a WeakMap costs an identity hash per object)
  const ENTRY = Symbol('fastify-websocket-guard.entry')
  const entryOf = (holder: object): SocketEntry | undefined => (holder as Record<symbol, SocketEntry | undefined>)[ENTRY]
  const hold = (holder: object, entry: SocketEntry | undefined): void => { (holder as Record<symbol, SocketEntry | undefined>)[ENTRY] = entry }
  // users, revalidation: every entry has the fields for them (deadlines: those that have one)
  const tracksMore = opts.identify !== undefined || opts.revalidateInterval !== false
  let subscription: CloseSubscription | null = null
  let sessionStore: { get (id: string, callback: (err: unknown, session?: unknown) => void): void } | undefined
  let knownSessionClass: object | null = null

  function newGroup (session: SessionLike | null): string {
    const group = randomId()
    if (session !== null) writeSession(session, groupKey, group)
    return group
  }

  /**
   * The session's group. Derived from @fastify/session's session id (a hash: never the id
   * itself), so that every request of the session agrees on it: a random group written by the
   * first token requests of a session (tabs opening at once) would differ from request to
   * request, and the session saved last would keep one of them, leaving the sockets of the
   * others open at its end. @fastify/secure-session's cookie sessions have no id: their group is
   * random, kept in the session, and written with the session's first write (session-end.ts),
   * which is the login for a session that has one.
   */
  function groupOf (session: SessionLike): string | undefined {
    const derived = derivedId(session, 'group:')
    if (derived !== undefined) return derived
    const kept = readSession(session, groupKey)
    return typeof kept === 'string' ? kept : undefined
  }

  /** A group kept in `session` (a cookie session), made now if it has none. */
  function stampGroup (session: SessionLike): void {
    if (sessionIdOf(session) === undefined && typeof readSession(session, groupKey) !== 'string') newGroup(session)
  }

  /** The session class's end methods are wrapped the first time one of its sessions is seen. */
  function learn (session: SessionLike, request: object): void {
    const proto = Object.getPrototypeOf(session) as object
    if (proto === knownSessionClass || !opts.closeOnSessionEnd) return
    knownSessionClass = proto
    if (secure) wrapSecureSession(session)
    else wrapFastifySession(session, request)
  }

  // ---- closing

  async function publish (message: CloseMessage): Promise<void> {
    if (subscription !== null) await storeCall(subscription.publish(message), opts.storeTimeout)
  }

  function apply (message: CloseMessage, openedBefore = Infinity): void {
    const close: Close = { code: message.code, reason: message.reason, kind: 'session-ended' }
    if (message.scope === 'session') {
      // an ended session's group never holds a live socket again; one closed by closeSession
      // goes on, and a close found late spares the sockets opened after it
      if (message.ended) ended.add(message.id)
      registry?.closeGroup(message.id, close, message.ended ? Infinity : openedBefore)
    } else {
      registry?.closeUser(message.id, close, message.except, openedBefore)
    }
  }

  /** The tokens in `stored` (what the session held under sessionKey) can never be used again. */
  async function revoke (session: SessionLike, stored: unknown): Promise<void> {
    if (stored !== undefined) await storeCall(backend.revoke(session, stored), opts.storeTimeout)
  }

  function closeOptions (what: string, options: unknown): { close: Close, except: string | null } {
    if (options === undefined) return { close: SESSION_ENDED, except: null }
    if (typeof options !== 'object' || options === null) invalid(what, 'options must be an object { code?, reason?, except? }')
    for (const key of Object.keys(options)) {
      if (!CLOSE_OPTIONS.has(key)) invalid(what, `has no option ${JSON.stringify(key)} (known: code, reason, except)`)
    }
    const { code = SESSION_ENDED.code, reason = SESSION_ENDED.reason, except } = options as CloseOptions
    if (typeof code !== 'number' || !Number.isInteger(code) || code < 4000 || code > 4999) {
      invalid(what, `code must be an integer from 4000 to 4999, got ${String(code)}`)
    }
    if (typeof reason !== 'string' || Buffer.byteLength(reason) > MAX_REASON) {
      invalid(what, `reason must be a string of at most ${MAX_REASON} bytes`)
    }
    if (except !== undefined && except !== null && typeof except !== 'object') invalid(what, 'except must be a request')
    const exceptSession = except === undefined || except === null ? null : sessionOf(except, opts.sessionKey)
    const exceptGroup = exceptSession === null ? undefined : groupOf(exceptSession)
    return { close: { code, reason, kind: 'session-ended' }, except: exceptGroup ?? null }
  }

  async function closeSession (request: FastifyRequest, options?: CloseOptions): Promise<void> {
    const { close, except } = closeOptions('closeSession', options)
    const session = typeof request === 'object' && request !== null ? sessionOf(request, opts.sessionKey) : null
    if (session === null) return
    // revoked first: an upgrade that consumed one of them is registered already, and closes below
    const failed = await revoke(session, readSession(session, opts.sessionKey)).then(() => null, (err: unknown) => ({ err }))
    const group = groupOf(session)
    if (group !== undefined && group !== except && registry !== null) {
      // the session goes on: a group kept in it is replaced, so that its sockets from now on
      // are not the closed ones (a derived group stays: the closes reach the sockets open now)
      if (sessionIdOf(session) === undefined) newGroup(session)
      registry.closeGroup(group, close)
      await publish({ scope: 'session', id: group, code: close.code, reason: close.reason, except: null, ended: false })
    }
    if (failed !== null) throw failed.err
  }

  async function closeUser (id: string, options?: CloseOptions): Promise<void> {
    if (typeof id !== 'string' || id === '' || id.length > MAX_ID) invalid('closeUser', `id must be a non-empty string of at most ${MAX_ID} characters`)
    const { close, except } = closeOptions('closeUser', options)
    if (registry === null) return
    registry.closeUser(id, close, except)
    await publish({ scope: 'user', id, code: close.code, reason: close.reason, except, ended: false })
  }

  Object.assign(decorator, { closeSession, closeUser } satisfies SocketClosers)

  if (registry === null) return { backend: issuing, tracker: null, closeSession, closeUser }
  registries.set(decorator, registry)

  // ---- session end

  const ender: Ender = {
    plugin: opts.sessionPlugin,
    keys: [groupKey, opts.sessionKey],
    capture (session) {
      const group = groupOf(session)
      const stored = readSession(session, opts.sessionKey)
      return group !== undefined || stored !== undefined ? { session, group, stored } : null
    },
    stamp (session) {
      stampGroup(session)
    },
    async end ({ session, group, stored }: Ended) {
      try {
        await revoke(session as SessionLike, stored)
      } catch (err) {
        fastify.log.error({ err }, 'websocket guard could not revoke the tokens of an ended session')
      }
      if (typeof group !== 'string') return
      ended.add(group)
      registry.closeGroup(group, SESSION_ENDED)
      try {
        await publish({ scope: 'session', id: group, code: SESSION_ENDED.code, reason: SESSION_ENDED.reason, except: null, ended: true })
      } catch (err) {
        fastify.log.error({ err }, 'websocket guard could not tell the other instances that a session ended')
      }
    }
  }
  if (opts.closeOnSessionEnd) {
    addEnder(ender, decorator)
    probeSessionClass(fastify, secure, learn)
  }
  const expirySeconds = secure ? probeSecureSessionExpiry(fastify) : 0

  // ---- the bus

  const bus = opts.store?.bus
  if (bus !== undefined) {
    const listener: CloseListener = {
      message: (message) => { apply(message) },
      async resync (since) {
        const live = subscription as CloseSubscription
        // closes older than their markers cannot be known: every socket reconnects with a fresh token
        if (Date.now() - since >= live.markerTTL) return registry.closeAll(LIFETIME_REACHED)
        const groups = [...registry.groups.keys()]
        const users = [...registry.users.keys()]
        const missed = await storeCall(live.missed(groups, users), opts.storeTimeout * (1 + Math.ceil((groups.length + users.length) / 500)))
        for (const message of missed) apply(message, message.at + CLOCK_MARGIN)
      },
      error (err) {
        fastify.log.warn({ err }, 'websocket guard lost its close bus connection; closes published meanwhile are applied once it is back')
      }
    }
    subscription = await bus.subscribe(listener)
  }

  // ---- sockets

  // one listener of each for all sockets: `this` is the connection, or the socket, that closed
  const onClose = function (this: object): void {
    const entry = entryOf(this)
    if (entry === undefined) return
    hold(this, undefined)
    registry.remove(entry)
  }

  const watcher: ConnectionWatcher = {
    detach (transport) {
      if (entryOf(transport) !== undefined) (transport as Transport).removeListener('close', onClose)
    },
    reattach (transport) {
      if (entryOf(transport) !== undefined) (transport as Transport).on('close', onClose)
    },
    gone (socket) {
      if (entryOf(socket) === undefined) return
      // taken out of `clients` by someone while still open: its own 'close' is awaited
      if (hasClosed(socket)) onClose.call(socket)
      else (socket as unknown as Transport).on('close', onClose)
    }
  }
  const wss = (fastify as unknown as { websocketServer: WebsocketServer }).websocketServer
  const clientsTell = watch(wss, watcher)

  const onConnection = (socket: GuardedSocket, raw: object): void => {
    const transport = transportOf(raw)
    const entry = entryOf(transport)
    if (entry === undefined) return
    hold(transport, undefined)
    hold(socket, entry)
    if (!clientsTell) (socket as unknown as Transport).on('close', onClose)
    registry.opened(entry, socket)
  }
  wss.on('connection', onConnection)

  /** The socket's deadline in clock() ms, 0 for none. */
  function deadlineOf (session: SessionLike | null, openedAt: number): number {
    let deadline = opts.maxSocketLifetime === false ? Infinity : openedAt + opts.maxSocketLifetime
    if (session !== null) deadline = Math.min(deadline, expiryOf(session) - EPOCH)
    // a deadline already passed (0 would mean none) closes it at once
    return deadline === Infinity ? 0 : Math.max(deadline, 1)
  }

  /** The session cookie's expiry, epoch ms, or Infinity for a cookie without one. */
  function expiryOf (session: SessionLike): number {
    // @fastify/secure-session stamps `__ts` (seconds) on every session it makes or changes
    if (secure) return ((readSession(session, '__ts') as number) + (expirySeconds as number)) * 1000
    const cookie = (session as { cookie?: { originalExpires?: unknown, expires?: unknown } }).cookie
    const expires = cookie?.originalExpires ?? cookie?.expires
    const at = expires === undefined || expires === null ? NaN : new Date(expires as string).getTime()
    return Number.isNaN(at) ? Infinity : at
  }

  async function identifyUser (request: FastifyRequest): Promise<string | null> {
    let user: unknown
    try {
      user = await storeCall((opts.identify as NonNullable<ResolvedOptions['identify']>)(request), opts.storeTimeout)
    } catch (err) {
      // the deadline's 503 says what identify's rejection was; a throw is its own cause
      const cause = err instanceof WebsocketGuardStoreUnavailable && err.cause !== undefined ? err.cause : err
      throw new WebsocketGuardStoreUnavailable('The websocket guard could not identify the user of this upgrade', { cause })
    }
    if (user === null || user === undefined) return null
    if (typeof user !== 'string' || user === '' || user.length > MAX_ID) {
      throw new WebsocketGuardStoreUnavailable('The websocket guard could not identify the user of this upgrade', {
        cause: new TypeError(`identify must return null or a non-empty string of at most ${MAX_ID} characters, got ${typeof user}`)
      })
    }
    return user
  }

  // ---- revalidation

  if (opts.revalidateInterval !== false && (!secure || subscription !== null)) {
    const checking = new Set<string>()

    const sessionExists = async (id: string): Promise<boolean> => await storeCall(new Promise<boolean>((resolve, reject) => {
      (sessionStore as NonNullable<typeof sessionStore>).get(id, (err, session) => {
        if (err === null || err === undefined) resolve(session !== null && session !== undefined)
        else if ((err as { code?: unknown }).code === 'ENOENT') resolve(false)
        else reject(err)
      })
    }), opts.storeTimeout)

    // one store read per session group, however many sockets it has; a group still being
    // checked from the last interval is not asked again
    const checkSessions = (): void => {
      for (const [group, head] of registry.groups) {
        const id = (head as TrackedEntry).sessionId
        if (id === null || checking.has(group)) continue
        checking.add(group)
        sessionExists(id).then((exists) => {
          if (exists) return
          ended.add(group)
          registry.closeGroup(group, FOUND_GONE)
        }, (err: unknown) => {
          fastify.log.warn({ err }, 'websocket guard could not revalidate a session; it keeps its sockets until the next check')
        }).finally(() => { checking.delete(group) })
      }
    }

    // @fastify/secure-session has no store to ask: the markers of closes are what there is
    const checkMarkers = (): void => {
      if (checking.size > 0 || registry.groups.size === 0) return
      checking.add('')
      storeCall((subscription as CloseSubscription).missed([...registry.groups.keys()], []), opts.storeTimeout).then((missed) => {
        for (const message of missed) apply(message)
      }, (err: unknown) => {
        fastify.log.warn({ err }, 'websocket guard could not revalidate its sessions; they keep their sockets until the next check')
      }).finally(() => { checking.clear() })
    }

    const revalidation = setInterval(secure ? checkMarkers : checkSessions, opts.revalidateInterval)
    revalidation.unref()
    fastify.addHook('onClose', async () => { clearInterval(revalidation) })
  }

  // ---- shutdown

  // 1001 'going away', before @fastify/websocket's own preClose closes every socket without a
  // code (1005): Fastify runs its preClose hooks from an onClose hook it adds when the app is
  // ready, and onClose hooks run last added first, so one added from onReady runs before them
  fastify.addHook('onReady', function closeFirst (done) {
    try {
      this.addHook('onClose', (_instance, next) => { registry.closeAll(SHUTTING_DOWN); next() })
    } catch (err) {
      // a Fastify that refuses hooks once ready: the preClose below still closes them, as 1005
      fastify.log.debug({ err }, 'websocket guard could not add its shutdown hook; sockets close as @fastify/websocket closes them')
    }
    done()
  })
  fastify.addHook('preClose', (done) => {
    // those opened since, which @fastify/websocket's preClose closed already; the signals abort
    registry.closeAll(SHUTTING_DOWN)
    done()
  })
  fastify.addHook('onClose', async () => {
    registry.deadlines.stop()
    wss.off('connection', onConnection)
    unwatch(wss, watcher)
    removeEnder(ender)
    await subscription?.close()
  })

  /** The last checks, the deadline armed, the result. */
  const admitNow = (request: FastifyRequest, entry: SocketEntry, origin: string | null, token: string | null): GuardResult => {
    if (entry.closing !== null || ended.has(entry.group as string)) {
      throw new NoWebsocketTokenStored('No websocket token: the session of this upgrade ended while it was checked')
    }
    if (entry instanceof TrackedEntry && entry.deadline !== 0) registry.deadlines.add(entry, entry.deadline)
    if (opts.revalidateInterval !== false && !secure) {
      const session = sessionOf(request, opts.sessionKey)
      ;(entry as TrackedEntry).sessionId = (session === null ? undefined : sessionIdOf(session)) ?? null
      sessionStore ??= (request as unknown as { sessionStore: typeof sessionStore }).sessionStore
    }
    return new GuardResult(origin, token, entry)
  }

  const tracker: SocketTracker = {
    reserve (request, route) {
      const transport = transportOf(request.raw)
      // its close has been emitted already: the upgrade cannot complete
      if (transport.destroyed === true) return null
      const session = sessionOf(request, opts.sessionKey)
      const openedAt = clock()
      const deadline = deadlineOf(session, openedAt)
      let entry: SocketEntry
      if (deadline !== 0 || tracksMore) {
        // the deadline is armed once the upgrade is admitted
        entry = new TrackedEntry(openedAt)
        ;(entry as TrackedEntry).deadline = deadline
      } else {
        entry = new SocketEntry(openedAt)
      }
      entry.route = route
      if (session !== null) learn(session, request)
      // without a session, a group of its own; a cookie session's is written into it
      registry.add(entry, (session === null ? undefined : groupOf(session)) ?? newGroup(session))
      hold(transport, entry)
      transport.on('close', onClose)
      return entry
    },

    admit (request, entry, origin, token) {
      // synchronous unless identify has to be waited for
      if (opts.identify === undefined) return admitNow(request, entry, origin, token)
      return identifyUser(request).then((user) => {
        if (user !== null) registry.setUser(entry as TrackedEntry, user)
        return admitNow(request, entry, origin, token)
      })
    },

    release (entry) {
      registry.remove(entry)
    }
  }

  return {
    backend: {
      ...issuing,
      issue (request, session, path) {
        learn(session, request)
        stampGroup(session)
        // as synchronous as the backend's own
        return issuing.issue(request, session, path)
      }
    },
    tracker,
    closeSession,
    closeUser
  }
}

/**
 * @fastify/secure-session's class is wrapped for its first write, with or without the socket's
 * life: the session's token store id goes with it (the login, for a session that has one), so
 * that tabs asking for their first tokens at once from the same cookie all find them in the
 * store (cookie sessions always keep their tokens in a store: pickBackend). `keys` are the ones
 * the guard writes itself, whose writes stamp nothing. The returned backend wraps the class on
 * the first session it sees, should the probe at registration have failed.
 */
function stampStoreIds (fastify: FastifyInstance, keys: readonly string[], backend: TokenBackend): TokenBackend {
  const stamp = backend.stamp as NonNullable<TokenBackend['stamp']>
  const stamper: Stamper = { plugin: '@fastify/secure-session', keys, stamp: (session) => { stamp(session as SessionLike) } }
  addStamper(stamper)
  fastify.addHook('onClose', async () => { removeStamper(stamper) })
  const wrap = (session: SessionLike): void => { wrapSecureSession(session) }
  probeSessionClass(fastify, true, wrap)
  return {
    ...backend,
    issue (request, session, path) {
      wrap(session)
      return backend.issue(request, session, path)
    }
  }
}

/**
 * Wraps the app's session class at registration, so that a session ended before any token
 * was issued in this process (a logout on a fresh instance) is seen too: @fastify/session
 * makes one through its `decryptSession` decorator, @fastify/secure-session through
 * `createSecureSession`. Should that fail (a custom id generator that needs a real request),
 * the class is wrapped when its first session is seen.
 */
function probeSessionClass (fastify: FastifyInstance, secure: boolean, learn: (session: SessionLike, request: object) => void): void {
  const decorators = fastify as unknown as {
    decryptSession?: (id: string, request: object, callback: () => void) => void
    createSecureSession?: (data: object) => SessionLike
  }
  try {
    if (secure) {
      learn((decorators.createSecureSession as NonNullable<typeof decorators.createSecureSession>)({}), {})
    } else {
      const request: { session?: SessionLike } = {}
      ;(decorators.decryptSession as NonNullable<typeof decorators.decryptSession>)('-', request, () => {})
      learn(request.session as SessionLike, request)
    }
  } catch (err) {
    fastify.log.debug({ err }, 'websocket guard could not make a probe session; it wraps the session class when it first sees one')
  }
}

/**
 * @fastify/secure-session keeps its `expiry` (seconds) to itself; what it does with it shows:
 * a session whose `__ts` is older than that decodes as none. A binary search over encoded
 * probe sessions finds it, to the second, once at registration.
 */
function probeSecureSessionExpiry (fastify: FastifyInstance): number {
  const f = fastify as unknown as {
    createSecureSession: (data: object) => SessionLike & { set (key: string, value: unknown): void }
    encodeSecureSession: (session: object) => string
    decodeSecureSession: (cookie: string, log: object) => object | null
  }
  // one no-op for both levels: the decoder may log at either (it uses debug today)
  const silent = (): void => {}
  const quiet = { debug: silent, trace: silent }
  const decodes = (age: number): boolean => {
    const probe = f.createSecureSession({})
    probe.set('__ts', Math.floor(Date.now() / 1000) - age)
    return f.decodeSecureSession(f.encodeSecureSession(probe), quiet) !== null
  }
  let lo = 0
  let hi = 2 ** 31
  // invariant: a session of age lo decodes, one of age hi does not (an expiry beyond 68 years
  // is taken as 68 years)
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2)
    if (decodes(mid)) lo = mid
    else hi = mid
  }
  // the session is refused from `hi` seconds on; closing a second early is on the safe side
  return lo
}
