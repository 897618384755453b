// The deadline on the calls the guard waits for (lib/deadline.ts): calls with one timeout
// share one timer, armed for the earliest deadline. Each call still misses its deadline at
// its own time, a call that answered is never failed, one that missed it stays failed, and
// the timer keeps the process alive only while a call waits.
import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { storeCall, withDeadline } from '../lib/deadline'
import { WebsocketGuardStoreUnavailable } from '../lib/errors'

/** A call that settles when told to. */
function pending<T> (): { call: Promise<T>, resolve: (value: T) => void, reject: (err: Error) => void } {
  let resolve!: (value: T) => void
  let reject!: (err: Error) => void
  const call = new Promise<T>((res, rej) => { resolve = res; reject = rej })
  return { call, resolve, reject }
}

/** When `call` missed its deadline, in ms since `start`. */
async function failedAt (call: Promise<unknown>, start: number): Promise<number> {
  return await call.then(() => { throw new Error('answered') }, () => performance.now() - start)
}

/** Timers of this process that keep it alive. */
const liveTimers = (): number => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length

t.test('a call that answered in time is its answer; one that failed is its failure', async (t) => {
  t.equal(await withDeadline(42, 50, 'x'), 42, 'a value that is no promise')
  t.equal(await withDeadline(Promise.resolve('now'), 50, 'x'), 'now', 'settled already')
  const later = pending<string>()
  const answer = withDeadline(later.call, 1_000, 'x')
  await sleep(10)
  later.resolve('later')
  t.equal(await answer, 'later', 'settled while the deadline was armed')
  const failing = pending<string>()
  const failure = withDeadline(failing.call, 1_000, 'x')
  await sleep(10)
  const err = new Error('store said no')
  failing.reject(err)
  await t.rejects(failure, err, "the call's own rejection passes through")
  await t.rejects(storeCall(Promise.reject(new Error('down')), 50), WebsocketGuardStoreUnavailable, 'storeCall makes it a 503')
})

t.test('calls of one timeout miss their deadlines each at its own time, in order', async (t) => {
  const start = performance.now()
  const missed: Array<[number, number]> = []
  const calls = [0, 30, 60].map((delay, i) => sleep(delay).then(async () => {
    await withDeadline(new Promise(() => {}), 80, 'The hung store').catch((err: unknown) => {
      t.type(err, WebsocketGuardStoreUnavailable, `call ${i}: a 503`)
      t.match((err as Error).message, /^The hung store did not answer within 80 ms$/)
      missed.push([i, performance.now() - start])
    })
  }))
  await Promise.all(calls)
  t.same(missed.map(([i]) => i), [0, 1, 2], 'in the order they were made')
  missed.forEach(([i, at]) => {
    const due = [0, 30, 60][i] as number + 80
    t.ok(at >= due - 1, `call ${i} failed at ${at.toFixed(0)} ms, not before its deadline (${due} ms)`)
  })
})

// (deadlines of a second, 300 ms apart: a busy machine may run a timer late by a lot)
t.test('a call that answers between the deadlines of others is its answer', async (t) => {
  const first = pending<string>()
  const second = pending<string>()
  const third = pending<string>()
  const a = withDeadline(first.call, 1_000, 'x')
  a.catch(() => {})
  await sleep(300)
  const b = withDeadline(second.call, 1_000, 'x')
  await sleep(300)
  const c = withDeadline(third.call, 1_000, 'x')
  second.resolve('b')
  t.equal(await b, 'b', 'the second answered before any deadline')
  await t.rejects(a, WebsocketGuardStoreUnavailable, 'the first missed its own')
  first.resolve('too late')
  await t.rejects(a, WebsocketGuardStoreUnavailable, 'an answer after the deadline changes nothing')
  third.resolve('c')
  t.equal(await c, 'c', 'the third answered after the first missed its deadline, before its own')
})

t.test('the timer keeps the process alive only while a call waits', async (t) => {
  const before = liveTimers()
  // the second call finds the timer the first one left armed
  for (const which of ['first', 'second']) {
    const call = pending<string>()
    const answer = withDeadline(call.call, 5_000, 'x')
    await sleep(0)
    t.equal(liveTimers(), before + 1, `${which} call: one live timer while it waits`)
    call.resolve('ok')
    await answer
    t.equal(liveTimers(), before, `${which} call: none once it answered, though the timer is still armed`)
  }
})

t.test('many calls of one timeout: one timer, and the queue keeps only what waits', async (t) => {
  const before = liveTimers()
  const hung = withDeadline(new Promise(() => {}), 1_000, 'x').catch((err: unknown) => err)
  const calls = Array.from({ length: 3000 }, () => pending<number>())
  const answers = calls.map(async (c) => await withDeadline(c.call, 1_000, 'x'))
  await sleep(0)
  t.equal(liveTimers(), before + 1, '3,001 calls waiting, one timer')
  calls.forEach((c, i) => { c.resolve(i) })
  t.same(await Promise.all(answers), calls.map((_, i) => i), 'each its own answer, in order')
  // the 3,000 that answered are dropped behind the one that is still waiting
  const late = pending<string>()
  const lateAnswer = withDeadline(late.call, 1_000, 'x')
  t.type(await hung, WebsocketGuardStoreUnavailable, 'the hung call missed its deadline')
  late.resolve('late')
  t.equal(await lateAnswer, 'late', 'the call made after the others still waits for its own deadline')
  t.equal(liveTimers(), before, 'nothing left alive')
})

t.test('calls with different timeouts keep their own deadlines', async (t) => {
  const start = performance.now()
  const long = failedAt(withDeadline(new Promise(() => {}), 400, 'x'), start)
  const short = failedAt(withDeadline(new Promise(() => {}), 100, 'x'), start)
  const [longAt, shortAt] = await Promise.all([long, short])
  t.ok(shortAt >= 99 && shortAt <= longAt, `the shorter timeout failed first (${shortAt.toFixed(0)} ms)`)
  t.ok(longAt >= 399, `the longer one at its own deadline (${longAt.toFixed(0)} ms)`)
})

t.test('the first call answers, a later one still misses its own deadline, not the first one\'s', async (t) => {
  const start = performance.now()
  const first = pending<string>()
  const a = withDeadline(first.call, 1_000, 'x')
  await sleep(300)
  const b = failedAt(withDeadline(new Promise(() => {}), 1_000, 'x'), start)
  // the second waits (its deadline armed a moment after the call) before the first answers
  await sleep(0)
  first.resolve('a')
  t.equal(await a, 'a', 'the first answered')
  const at = await b
  t.ok(at >= 1_299, `the second failed at ${at.toFixed(0)} ms, its own deadline (1,300 ms), not the first's (1,000 ms)`)
})
