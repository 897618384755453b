/**
 * Keeps tokens out of Fastify's own request log lines. Fastify logs the request URL
 * (`incoming request`) before any hook runs, so the only place to intervene is the child
 * logger each request gets: ours wraps the factory already set and gives the child a `req`
 * serializer that redacts the token parameter from whatever the user's serializer returns.
 */
import type { FastifyInstance } from 'fastify'

export const REDACTED = '[REDACTED]'
// pino registers its symbols globally; reading it this way needs no dependency on pino
const serializersSym = Symbol.for('pino.serializers')

/** `url` with every value of `param` replaced; the same string when there is none. */
export function redactUrl (url: string, param: string): string {
  const queryStart = url.indexOf('?')
  if (queryStart === -1) return url
  let out = url.slice(0, queryStart + 1)
  let start = queryStart + 1
  while (start <= url.length) {
    let end = url.indexOf('&', start)
    if (end === -1) end = url.length
    const segment = url.slice(start, end)
    out += segment === param || segment.startsWith(param + '=') ? `${param}=${REDACTED}` : segment
    if (end < url.length) out += '&'
    start = end + 1
  }
  return out
}

type Serializer = (value: any) => any

function redactingSerializer (base: Serializer | undefined, param: string): Serializer {
  return function redactedReq (req) {
    const out = base === undefined ? { method: req.method, url: req.url } : base(req)
    if (out === null || typeof out !== 'object') return typeof out === 'string' ? redactUrl(out, param) : out
    const copy: Record<string, unknown> = { ...out }
    for (const key of Object.keys(copy)) {
      const value = copy[key]
      if (typeof value === 'string' && value.includes(param)) copy[key] = redactUrl(value, param)
    }
    return copy
  }
}

export function redactTokenLogs (fastify: FastifyInstance, param: string): void {
  const previous = fastify.childLoggerFactory
  const marker = '?' + param
  const inner = '&' + param
  fastify.setChildLoggerFactory(function redactingChildLoggerFactory (logger, bindings, options, rawReq) {
    const url = rawReq.url ?? ''
    // only requests that can carry a token pay for a serializer of their own
    if (!url.includes(marker) && !url.includes(inner)) {
      return previous.call(this, logger, bindings, options, rawReq)
    }
    const base: Serializer | undefined = options.serializers?.req ?? (logger as any)[serializersSym]?.req
    return previous.call(this, logger, bindings, {
      ...options,
      serializers: { ...options.serializers, req: redactingSerializer(base, param) }
    }, rawReq)
  })
}
