/**
 * Listening to the guard's diagnostics channels from a test: a real subscriber on each of the
 * four channels (nothing is faked or replaced), and the checks every message must pass: its
 * fields exactly API.md's, a plain object of plain values, no secret and no URL query in it.
 */
import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import type { Test } from 'tap'

export const CHANNELS = {
  token: 'fastify-websocket-guard:token',
  accept: 'fastify-websocket-guard:accept',
  reject: 'fastify-websocket-guard:reject',
  close: 'fastify-websocket-guard:close'
} as const

export type ChannelKind = keyof typeof CHANNELS
export const KINDS = Object.keys(CHANNELS) as ChannelKind[]

/** API.md "Diagnostics channels", sorted. */
export const FIELDS: Record<ChannelKind, string[]> = {
  token: ['expiresAt', 'path', 'requestId', 'route'],
  accept: ['origin', 'requestId', 'route', 'transport'],
  reject: ['code', 'origin', 'requestId', 'route', 'statusCode'],
  close: ['code', 'durationMs', 'reason', 'route']
}

export type Messages = Record<ChannelKind, any[]>

export interface Recorder {
  /** every message so far, by channel, in order */
  messages: Messages
  /** the messages published while `run` ran */
  during (run: () => Promise<unknown>): Promise<Messages>
  /** unsubscribes (also done in teardown) */
  stop (): void
}

/** Subscribes to every channel until the test ends. */
export function recordDiagnostics (t: Test): Recorder {
  const messages: Messages = { token: [], accept: [], reject: [], close: [] }
  const listeners = KINDS.map((kind) => {
    const listener = (message: unknown): void => { messages[kind].push(message) }
    subscribe(CHANNELS[kind], listener)
    return () => unsubscribe(CHANNELS[kind], listener)
  })
  let stopped = false
  const stop = (): void => {
    if (stopped) return
    stopped = true
    for (const off of listeners) off()
  }
  t.teardown(stop)
  return {
    messages,
    async during (run) {
      const before = KINDS.map((kind) => messages[kind].length)
      await run()
      return Object.fromEntries(KINDS.map((kind, i) => [kind, messages[kind].slice(before[i])])) as Messages
    },
    stop
  }
}

/** Every string anywhere in `value`: keys and values, however deep. */
export function stringsIn (value: unknown, seen = new Set<unknown>()): string[] {
  if (typeof value === 'string') return [value]
  if (typeof value !== 'object' || value === null || seen.has(value)) return []
  seen.add(value)
  return Object.entries(value).flatMap(([key, v]) => [key, ...stringsIn(v, seen)])
}

/**
 * Every message: exactly its channel's fields, a plain object whose values are strings,
 * numbers or null, and no string in it that holds any of `secrets` or looks like a URL query.
 * Returns how many messages it checked.
 */
export function checkMessages (t: Test, messages: Messages, secrets: string[]): number {
  t.ok(secrets.every((s) => s.length >= 8), 'every secret searched for is long enough to mean something')
  const problems: string[] = []
  let count = 0
  for (const kind of KINDS) {
    for (const message of messages[kind]) {
      count++
      const shown = `${kind} ${JSON.stringify(message)}`
      if (Object.getPrototypeOf(message) !== Object.prototype) problems.push(`${shown}: not a plain object`)
      if (Object.keys(message).sort().join() !== FIELDS[kind].join()) problems.push(`${shown}: fields are not ${FIELDS[kind].join(', ')}`)
      for (const value of Object.values(message)) {
        if (!(value === null || typeof value === 'string' || typeof value === 'number')) problems.push(`${shown}: a value that is not plain`)
      }
      for (const text of stringsIn(message)) {
        if (secrets.some((secret) => text.includes(secret))) problems.push(`${kind}: a secret in one of its strings`)
        if (/[?#;=]/.test(text)) problems.push(`${shown}: ${JSON.stringify(text)} looks like a URL query`)
      }
    }
  }
  t.same(problems, [], `${count} messages: API.md's fields, plain, no secret (${secrets.length} searched for), no query`)
  return count
}
