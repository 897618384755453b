/**
 * TEMPORARY (until wip-lib's options.ts lands): the lifecycle options read from the raw
 * options object, with the same defaults and rules as API.md. Replaced by the fields of
 * ResolvedOptions on merge.
 */
import type { FastifyRequest } from 'fastify'
import { boolean, fail, MAX_TIMER_DELAY, positive } from '../options'

export interface LifecycleOptions {
  closeOnSessionEnd: boolean
  identify: ((request: FastifyRequest) => string | null | Promise<string | null>) | undefined
  maxSocketLifetime: number | false
  revalidateInterval: number | false
}

function durationOrFalse (options: Record<string, unknown>, name: string): number | false {
  if (options[name] === false || options[name] === undefined) return false
  return positive(options, name, 0, false, MAX_TIMER_DELAY)
}

export function lifecycleOptions (input: unknown): LifecycleOptions {
  const options = (input ?? {}) as Record<string, unknown>
  if (options.identify !== undefined && typeof options.identify !== 'function') fail('identify', 'must be a function')
  return {
    closeOnSessionEnd: boolean(options, 'closeOnSessionEnd', true),
    identify: options.identify as LifecycleOptions['identify'],
    maxSocketLifetime: durationOrFalse(options, 'maxSocketLifetime'),
    revalidateInterval: durationOrFalse(options, 'revalidateInterval')
  }
}
