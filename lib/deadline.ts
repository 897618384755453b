/**
 * A deadline on every call the guard waits for and does not control: a store call, a session
 * save, a user's `origins` function. Missing it is a 503, never a pass.
 */
import { WebsocketGuardStoreUnavailable } from './errors'

/** Rejects a call that missed its deadline. The error is made only then: capturing its
 * stack on every call cost more than the rest of the guard together. */
function missedDeadline (reject: (err: Error) => void, timeout: number, what: string): void {
  reject(new WebsocketGuardStoreUnavailable(`${what} did not answer within ${timeout} ms`))
}

// Already settled: a call that has answered too wins a race against it.
const PENDING = Symbol('pending')
const stillPending = Promise.resolve(PENDING)

/** The lane of each timeout that has calls waiting, or a timer still armed. */
const lanes = new Map<number, Lane>()

/**
 * A call waiting for its deadline: `reject` until it settles or misses it, then `null`.
 * Entries of one lane (one timeout) are in deadline order: the order they were added.
 */
interface Waiting {
  readonly at: number
  reject: ((err: Error) => void) | null
  readonly what: string
}

/**
 * The calls waiting with one timeout, and one timer for all of them, armed for the earliest
 * deadline: a timer of their own each cost more than the rest of a store call's wait (Node.js
 * makes and drops a timer list for a duration that has no other timer, and asks libuv each
 * time). The timer keeps the process alive only while a call waits; one that fires with none
 * left is not armed again.
 */
class Lane {
  private queue: Waiting[] = []
  private head = 0
  private waiting = 0
  private timer: NodeJS.Timeout | null = null

  constructor (private readonly timeout: number) {}

  static for (timeout: number): Lane {
    let lane = lanes.get(timeout)
    if (lane === undefined) {
      lane = new Lane(timeout)
      lanes.set(timeout, lane)
    }
    return lane
  }

  add (reject: (err: Error) => void, what: string): Waiting {
    const entry: Waiting = { at: performance.now() + this.timeout, reject, what }
    this.queue.push(entry)
    // the first to wait: a timer left armed by the last ones keeps the process alive again
    if (this.waiting++ === 0) {
      if (this.timer === null) this.arm(this.timeout)
      else this.timer.ref()
    }
    return entry
  }

  /** Whether `entry` was still waiting (it has not missed its deadline); it waits no more. */
  settle (entry: Waiting): boolean {
    if (entry.reject === null) return false
    entry.reject = null
    if (--this.waiting === 0) {
      // nothing left to wait for: the armed timer no longer keeps the process alive
      this.empty()
      ;(this.timer as NodeJS.Timeout).unref()
    } else {
      this.drop()
    }
    return true
  }

  /**
   * Settled entries at the front leave, so that the queue holds no more than what waits
   * (called while some entry waits: the loop stops at it).
   */
  private drop (): void {
    while ((this.queue[this.head] as Waiting).reject === null) this.head++
    this.compact()
  }

  private empty (): void {
    this.queue.length = 0
    this.head = 0
  }

  private compact (): void {
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head)
      this.head = 0
    }
  }

  private arm (delay: number): void {
    this.timer = setTimeout(() => { this.expire() }, delay)
  }

  private expire (): void {
    this.timer = null
    // the monotonic clock: a deadline does not move with the wall clock
    const now = performance.now()
    while (this.head < this.queue.length) {
      const entry = this.queue[this.head] as Waiting
      if (entry.reject !== null) {
        if (entry.at > now) break
        const reject = entry.reject
        entry.reject = null
        this.waiting--
        missedDeadline(reject, this.timeout, entry.what)
      }
      this.head++
    }
    if (this.waiting > 0) {
      this.compact()
      // the earliest deadline left (Node.js may fire a timer up to a millisecond early by this clock)
      this.arm((this.queue[this.head] as Waiting).at - now)
    } else {
      this.empty()
      lanes.delete(this.timeout)
    }
  }
}

/**
 * `call`'s outcome, or a `WebsocketGuardStoreUnavailable` once `timeout` ms have passed;
 * a rejection of `call` passes through as it is.
 */
export async function withDeadline<T> (call: Promise<T> | T, timeout: number, what: string): Promise<T> {
  // A call that has already settled (a synchronous session store) needs no deadline: arming
  // and clearing a timer for each upgrade cost more than checking the token.
  const early = await Promise.race([call, stillPending])
  if (early !== PENDING) return early as T
  const lane = Lane.for(timeout)
  return await new Promise<T>((resolve, reject) => {
    const entry = lane.add(reject, what)
    ;(call as Promise<T>).then(
      (value) => { if (lane.settle(entry)) resolve(value) },
      (err: unknown) => { if (lane.settle(entry)) reject(err as Error) }
    )
  })
}

/** A store call (or session save) with a deadline; any failure becomes a 503. */
export async function storeCall<T> (call: Promise<T> | T, timeout: number): Promise<T> {
  return await withDeadline(call, timeout, 'Websocket token store').catch(storeUnavailable)
}

/**
 * `storeCall` where nothing must wait: a call that answered at once (not a promise) is its
 * own answer, with no promise, race or timer.
 */
export function storeAnswer<T> (call: Promise<T> | T, timeout: number): Promise<T> | T {
  return isThenable(call) ? storeCall(call, timeout) : call
}

export function isThenable<T> (value: Promise<T> | T): value is Promise<T> {
  return typeof (value as { then?: unknown } | null)?.then === 'function'
}

function storeUnavailable (err: unknown): never {
  throw err instanceof WebsocketGuardStoreUnavailable ? err : new WebsocketGuardStoreUnavailable(undefined, { cause: err })
}
