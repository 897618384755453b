/**
 * When guarded sockets must close (their session's expiry, `maxSocketLifetime`): one binary
 * min-heap of entries by deadline, each entry knowing its index (so removal is O(log n)), and
 * one timer, armed for the earliest deadline only. A socket that closes first leaves the heap
 * at once: nothing of it waits for its deadline.
 */
import { MAX_TIMER_DELAY } from '../options'
import type { SocketEntry } from './registry'

export class Deadlines {
  private readonly heap: SocketEntry[] = []
  private timer: NodeJS.Timeout | undefined
  /** the deadline the timer is armed for */
  private armedFor = Infinity

  constructor (private readonly expire: (entry: SocketEntry) => void) {}

  get size (): number {
    return this.heap.length
  }

  add (entry: SocketEntry, deadline: number): void {
    entry.deadline = deadline
    entry.heapIndex = this.heap.length
    this.heap.push(entry)
    this.up(entry.heapIndex)
    if (deadline < this.armedFor) this.arm()
  }

  remove (entry: SocketEntry): void {
    const i = entry.heapIndex
    const last = this.heap.pop() as SocketEntry
    entry.heapIndex = -1
    // the timer may stay armed for a removed root: it then finds nothing due and re-arms
    if (last === entry) return
    this.heap[i] = last
    last.heapIndex = i
    this.down(i)
    this.up(last.heapIndex)
  }

  stop (): void {
    clearTimeout(this.timer)
    this.timer = undefined
    this.armedFor = Infinity
  }

  private arm (): void {
    clearTimeout(this.timer)
    const first = this.heap[0]
    if (first === undefined) {
      this.timer = undefined
      this.armedFor = Infinity
      return
    }
    this.armedFor = first.deadline
    // a deadline beyond what a timer can wait for is reached through several waits
    this.timer = setTimeout(() => { this.fire() }, Math.min(Math.max(first.deadline - Date.now(), 0), MAX_TIMER_DELAY))
    this.timer.unref()
  }

  private fire (): void {
    const now = Date.now()
    for (let first = this.heap[0]; first !== undefined && first.deadline <= now; first = this.heap[0]) {
      // expire() closes the entry, which removes it from the heap
      this.expire(first)
    }
    this.arm()
  }

  private up (i: number): void {
    const heap = this.heap
    const entry = heap[i] as SocketEntry
    while (i > 0) {
      const parent = (i - 1) >> 1
      const above = heap[parent] as SocketEntry
      if (above.deadline <= entry.deadline) break
      heap[i] = above
      above.heapIndex = i
      i = parent
    }
    heap[i] = entry
    entry.heapIndex = i
  }

  private down (i: number): void {
    const heap = this.heap
    const n = heap.length
    const entry = heap[i] as SocketEntry
    for (;;) {
      let child = 2 * i + 1
      if (child >= n) break
      const right = child + 1
      if (right < n && (heap[right] as SocketEntry).deadline < (heap[child] as SocketEntry).deadline) child = right
      const below = heap[child] as SocketEntry
      if (below.deadline >= entry.deadline) break
      heap[i] = below
      below.heapIndex = i
      i = child
    }
    heap[i] = entry
    entry.heapIndex = i
  }
}
