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

/**
 * `call`'s outcome, or a `WebsocketGuardStoreUnavailable` once `timeout` ms have passed;
 * a rejection of `call` passes through as it is.
 */
export async function withDeadline<T> (call: Promise<T> | T, timeout: number, what: string): Promise<T> {
  // A call that has already settled (a synchronous session store) needs no deadline: arming
  // and clearing a timer for each upgrade cost more than checking the token.
  const early = await Promise.race([call, stillPending])
  if (early !== PENDING) return early as T
  let timer: NodeJS.Timeout | undefined
  const deadline = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(missedDeadline, timeout, reject, timeout, what)
  })
  try {
    return await Promise.race([call, deadline])
  } finally {
    clearTimeout(timer)
  }
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
