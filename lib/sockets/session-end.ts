/**
 * Session end: `destroy()` and `regenerate()` of @fastify/session's sessions, `delete()` and
 * `regenerate()` of @fastify/secure-session's, end the session's socket group. The methods are
 * wrapped once per session class (its prototype, shared by every session that class makes),
 * so that a request costs nothing until one of them is called, and a session with no group
 * reaches the original method untouched. What they return and throw is unchanged: callback and
 * promise forms of @fastify/session's methods settle as before, once the end has been handed
 * on; @fastify/secure-session's are synchronous, and the end follows them.
 *
 * The wrappers are process-wide (every app of the process shares the class), so each plugin
 * instance registers an `Ender`; a session of @fastify/session knows its request, whose
 * `server.websocketGuard` names the instance that owns it.
 */
import type { SessionPluginName } from '../options'

/** What one session held when it ended, read before the session plugin clears it. */
export interface Ended {
  session: object
  group: unknown
  stored: unknown
}

/**
 * One plugin instance's side of a cookie session's first write (@fastify/secure-session):
 * what the session must carry from then on (its group, its token store id) goes with it.
 */
export interface Stamper {
  plugin: SessionPluginName
  /**
   * the keys the guard writes itself: a write of one of them stamps nothing, and (for an
   * Ender) a regenerated session does not carry them over
   */
  keys: readonly string[]
  /** a cookie session is written: what it has not got yet goes with that write */
  stamp (session: object): void
}

/** One plugin instance's side of a session end. */
export interface Ender extends Stamper {
  /** what `session` holds that its end must act on, or `null` for nothing */
  capture (session: object): Ended | null
  /** drops the tokens and closes the sockets; never rejects (it logs) */
  end (ended: Ended): Promise<void>
}

const enders = new Set<Ender>()
const stampers = new Set<Stamper>()
/** the decorator object (`fastify.websocketGuard`) of each instance */
const byDecorator = new WeakMap<object, Ender>()
/** each wrapped @fastify/session prototype, and the symbol under which its sessions keep their request */
const wrapped = new WeakMap<object, symbol | undefined>()

export function addEnder (ender: Ender, decorator: object): void {
  enders.add(ender)
  stampers.add(ender)
  byDecorator.set(decorator, ender)
}

export function removeEnder (ender: Ender): void {
  enders.delete(ender)
  stampers.delete(ender)
}

/** A stamper of its own: the token store ids of cookie sessions, with or without session ends. */
export function addStamper (stamper: Stamper): void {
  stampers.add(stamper)
}

export function removeStamper (stamper: Stamper): void {
  stampers.delete(stamper)
}

type Pending = Array<[Ender, Ended]>

function pending (session: object, plugin: SessionPluginName, requestSymbol: symbol | undefined): Pending | null {
  let candidates: Iterable<Ender> = enders
  if (requestSymbol !== undefined) {
    const request = (session as Record<symbol, { server?: { websocketGuard?: unknown } } | undefined>)[requestSymbol]
    const owner = byDecorator.get(request?.server?.websocketGuard as object)
    if (owner !== undefined) candidates = [owner]
  }
  const found: Pending = []
  for (const ender of candidates) {
    if (ender.plugin !== plugin) continue
    const ended = ender.capture(session)
    if (ended !== null) found.push([ender, ended])
  }
  return found.length === 0 ? null : found
}

async function endAll (found: Pending): Promise<void> {
  await Promise.all(found.map(([ender, ended]) => ender.end(ended)))
}

/**
 * Calls `method` with a callback once the end is handed on. A throw from the method reaches
 * the callback; one from the callback itself is rethrown as an async store would have it.
 */
function thenCall (ending: Promise<void>, method: (done: Callback) => unknown, callback: Callback): undefined {
  let called = false
  const done: Callback = (err) => {
    called = true
    callback(err)
  }
  ending.then(() => method(done)).catch((err: unknown) => {
    if (!called) return callback(err)
    process.nextTick(() => { throw err })
  })
  return undefined
}

/** `keys` without the ones a regenerated session must not inherit from the ended one. */
function without (keys: unknown, found: Pending): unknown {
  if (!Array.isArray(keys)) return keys
  const dropped = new Set(found.flatMap(([ender]) => ender.keys))
  return keys.filter((key) => !dropped.has(key))
}

type Callback = (err?: unknown) => void

interface FastifySessionProto {
  destroy (this: object, callback?: Callback): Promise<void> | undefined
  regenerate (this: object, keys?: string[] | Callback, callback?: Callback): Promise<void> | undefined
}

/**
 * Wraps the class of `session` (a @fastify/session session) once; `request` is the request it
 * belongs to, from which the symbol that keeps it is learnt.
 */
export function wrapFastifySession (session: object, request: object): void {
  const proto = Object.getPrototypeOf(session) as FastifySessionProto | null
  // a bare object (outside the session cookie's path, @fastify/session leaves `{}`) is no session class
  if (proto === null || wrapped.has(proto) || typeof proto.destroy !== 'function' || typeof proto.regenerate !== 'function') return
  const requestSymbol = Object.getOwnPropertySymbols(session).find((s) => (session as Record<symbol, unknown>)[s] === request)
  wrapped.set(proto, requestSymbol)
  const { destroy, regenerate } = proto

  proto.destroy = function destroyAndEnd (this: object, callback?: Callback) {
    const found = pending(this, '@fastify/session', requestSymbol)
    if (found === null) return destroy.apply(this, arguments as unknown as [Callback?])
    const ending = endAll(found)
    if (typeof callback !== 'function') return ending.then(async () => await destroy.call(this))
    return thenCall(ending, (done) => destroy.call(this, done), callback)
  }

  proto.regenerate = function regenerateAndEnd (this: object, keys?: string[] | Callback, callback?: Callback) {
    const found = pending(this, '@fastify/session', requestSymbol)
    if (found === null) return regenerate.apply(this, arguments as unknown as [string[]?, Callback?])
    if (typeof keys === 'function') {
      callback = keys
      keys = undefined
    }
    const kept = without(keys, found) as string[] | undefined
    const ending = endAll(found)
    if (typeof callback !== 'function') return ending.then(async () => await regenerate.call(this, kept))
    return thenCall(ending, (done) => regenerate.call(this, kept, done), callback)
  }
}

interface SecureSessionProto {
  delete (this: object): void
  regenerate (this: object, ignoredFields?: string[]): void
  set (this: object, key: string, value: unknown): void
}

/** Wraps the class of @fastify/secure-session's sessions once; `session` is one of them (or its Proxy). */
export function wrapSecureSession (session: object): void {
  const proto = Object.getPrototypeOf(session) as SecureSessionProto | null
  if (proto === null || wrapped.has(proto) || typeof proto.delete !== 'function' || typeof proto.regenerate !== 'function' || typeof proto.set !== 'function') return
  wrapped.set(proto, undefined)
  const { delete: remove, regenerate, set } = proto

  // A cookie session's group is random and kept in the cookie: made by its first write (the
  // login, for a session that has one), every later request of the session carries the same
  // one, where groups made by concurrent first token requests would differ.
  let stamping = false
  proto.set = function setAndStamp (this: object, key: string, value: unknown) {
    if (!stamping) {
      stamping = true
      try {
        for (const stamper of stampers) if (stamper.plugin === '@fastify/secure-session' && !stamper.keys.includes(key)) stamper.stamp(this)
      } finally {
        stamping = false
      }
    }
    set.call(this, key, value)
  }

  proto.delete = function deleteAndEnd (this: object) {
    const found = pending(this, '@fastify/secure-session', undefined)
    remove.call(this)
    // the cookie is cleared in onSend; the tokens and sockets go meanwhile (end() never rejects)
    if (found !== null) void endAll(found)
  }

  proto.regenerate = function regenerateAndEnd (this: object, ignoredFields?: string[]) {
    const found = pending(this, '@fastify/secure-session', undefined)
    if (found === null) return regenerate.call(this, ignoredFields)
    regenerate.call(this, without(ignoredFields, found) as string[] | undefined)
    void endAll(found)
  }
}
