/**
 * A deadline on every call into a store or a session save: any failure, and any wait longer
 * than `storeTimeout`, becomes a 503, never a pass.
 */
import { WebsocketGuardStoreUnavailable } from '../errors'

/** Rejects a store call that missed its deadline. The error is made only then: capturing
 * its stack on every call cost more than the rest of the guard together. */
function missedDeadline (reject: (err: Error) => void, timeout: number): void {
  reject(new WebsocketGuardStoreUnavailable(`Websocket token store did not answer within ${timeout} ms`))
}

// Already settled: a store call that has answered too wins a race against it.
const PENDING = Symbol('pending')
const stillPending = Promise.resolve(PENDING)

export async function storeCall<T> (call: Promise<T> | T, timeout: number): Promise<T> {
  // A call that has already settled (a synchronous session store) needs no deadline: arming
  // and clearing a timer for each upgrade cost more than checking the token.
  const early = await Promise.race([call, stillPending]).catch(storeUnavailable)
  if (early !== PENDING) return early as T
  let timer: NodeJS.Timeout | undefined
  const deadline = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(missedDeadline, timeout, reject, timeout)
  })
  try {
    // a catch that always throws, then a finally, leaves V8 an unreachable branch to count
    return await Promise.race([call, deadline]).catch(storeUnavailable)
  } finally {
    clearTimeout(timer)
  }
}

function storeUnavailable (err: unknown): never {
  throw err instanceof WebsocketGuardStoreUnavailable ? err : new WebsocketGuardStoreUnavailable(undefined, { cause: err })
}
