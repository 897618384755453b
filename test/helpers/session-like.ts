/**
 * The two shapes of session the seed functions accept (API.md "Functions"), for tests that
 * run the same checks on both.
 */
import type { SessionLike } from '../../lib/session'

/** Like a @fastify/session or @fastify/secure-session session: data behind get/set only. */
export class GetSetSession {
  readonly data: Record<string, unknown> = {}
  sets = 0
  get (key: string): unknown { return this.data[key] }
  set (key: string, value: unknown): void { this.sets++; this.data[key] = value }
}

export function kinds (): Array<{ name: string, make: () => SessionLike, read: (s: SessionLike) => Record<string, unknown> }> {
  return [
    { name: 'plain object', make: () => ({}), read: (s) => s as Record<string, unknown> },
    { name: 'get/set session', make: () => new GetSetSession(), read: (s) => (s as GetSetSession).data }
  ]
}
