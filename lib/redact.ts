/**
 * Keeps tokens out of the logs. Fastify logs a request's URL (`incoming request`) before any
 * hook runs, and writes it into other lines too: `Route GET:/x?token=… not found` for a
 * mistyped path, @fastify/websocket's line for an upgrade to a non-websocket route, and at
 * `trace` the raw bytes of a malformed request. Those lines come from loggers this plugin
 * never sees created (the 404 handler, routes declared before it, route-level
 * `childLoggerFactory`s), so redacting per request cannot reach all of them. Every one of them
 * is written through the root pino logger, though, and pino calls `hooks.streamWrite` on each
 * finished line: the plugin installs one there that replaces the token's value wherever it
 * is presented the way the guard or Fastify's query parser would read it. The same reading
 * gives `onReject` a URL it can log.
 */
import type { FastifyInstance } from 'fastify'

export const REDACTED = '[REDACTED]'
// pino's public symbol for its hooks; reading it this way needs no dependency on pino
const hooksSym = Symbol.for('pino.hooks')

function escapeRegExp (text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
}

/**
 * `name` as a query string may spell it: Fastify's query parser decodes `%74oken` to
 * `token`. The guard itself reads only the literal name, but a token sent under another
 * spelling is still a live token, so every spelling is redacted.
 */
function anySpelling (name: string): string {
  let out = ''
  for (const c of name) {
    const hex = c.charCodeAt(0).toString(16).padStart(2, '0').replace(/[a-f]/g, (x) => `[${x}${x.toUpperCase()}]`)
    out += `(?:${escapeRegExp(c)}|%${hex})`
  }
  return out
}

/**
 * Where a query parameter may start. The guard splits the query at `?` and `&`; Fastify's
 * router also starts the query at `#` (`/x#token=T` gives `request.query.token`), and at `;`
 * under `useSemicolonDelimiter`. `;` is redacted whatever that option says: redacting a
 * `;token=` that Fastify would not read loses nothing, and reading the option would mean
 * trusting one more copy of the router's configuration.
 */
const PARAM_START = '[?&#;]'

export type Redactor = (line: string) => string

/**
 * Replaces, in one finished JSON log line, the value of every `param=` that starts a query
 * parameter (after `?`, `&`, `#` or `;`) and of every `${protocolPrefix}…` subprotocol entry.
 * A query value ends where the guard ends it (`&`) or where the text does (a space in a
 * message, the end of the JSON string): Node refuses a request target with any whitespace, so
 * a space is never part of one. An entry ends only at `,` or the end of the string, as the
 * guard reads it. A JSON escape is kept whole, so the line stays valid JSON. Lines that cannot
 * hold either pass after a substring search or two, which keeps the cost off the lines of
 * every other request.
 */
export function createRedactor (param: string, protocolPrefix: string): Redactor {
  const name = anySpelling(param)
  const prefix = escapeRegExp(protocolPrefix)
  // the capture keeps what precedes the value; an entry must start an item of a list or a
  // string (after whitespace as `trim` knows it, which JSON may write as an escape: the tab
  // of `websocket-guard,\twebsocket-guard.T` is `\t` in the line; every escape of a control
  // or Unicode character is taken, one too many costs nothing), so that a host such as
  // `websocket-guard.example.com` in a URL is left alone
  const query = new RegExp(`(${PARAM_START}${name}=)(?:[^&" \\\\]|\\\\.)+`, 'g')
  const protocol = new RegExp(`((?:^|[\\s",:'\\[]|\\\\[bfnrt]|\\\\u[0-9a-fA-F]{4})${prefix})(?:[^,"\\\\]|\\\\.)+`, 'g')
  // the same in raw HTTP bytes, where no JSON escaping applies and a line ends at CR LF
  const rawQuery = new RegExp(`(${PARAM_START}${name}=)[^& \\r\\n]+`, 'g')
  const rawProtocol = new RegExp(`((?:^|[\\s,:])${prefix})[^,\\r\\n]+`, 'g')
  // Node's clientError (logged by Fastify at trace) carries the request's bytes as a JSON array
  const packet = /"rawPacket":\{"type":"Buffer","data":\[([0-9,]*)\]\}/g

  function redactPacket (match: string, data: string): string {
    const text = Buffer.from(data === '' ? [] : data.split(',').map(Number)).toString('latin1')
    // Node logs the bytes of the read that failed to parse, not of the whole request: a
    // request sent in several TCP segments shows only its last, which can begin inside a
    // token (`GET /chat?token=` in one segment, the token in the next). A packet that does
    // not begin with a request line begins inside a line, so that line goes whole.
    const whole = REQUEST_START.test(text) ? text : text.replace(FIRST_LINE, REDACTED)
    const redacted = whole.replace(rawQuery, keep).replace(rawProtocol, keep)
    if (redacted === text) return match
    return `"rawPacket":{"type":"Buffer","data":[${Buffer.from(redacted, 'latin1').join(',')}]}`
  }

  return function redactLine (line: string): string {
    let out = line
    if (out.includes('=') && (out.includes(param) || out.includes('%'))) out = out.replace(query, keep)
    if (out.includes(protocolPrefix)) out = out.replace(protocol, keep)
    // a long needle with a rare first character: the cheapest search of the three
    if (out.includes('Packet":{"type":"Buffer"')) out = out.replace(packet, redactPacket)
    return out
  }
}

// a method, a request target and a version: what no piece of a token followed by the rest of
// a request line (`…T HTTP/1.1`) or of a header can look like
const REQUEST_START = /^(?:\r?\n)*[A-Z-]+ [^ \r\n]+ HTTP\//
const FIRST_LINE = /^[^\r\n]+/

function keep (_match: string, before: string): string {
  return before + REDACTED
}

/**
 * A redactor for request URLs, for `onReject`'s `details.url`: every value of `param` that
 * the guard or Fastify's query parser could read (after `?`, `&`, `#` or `;`, the name in any
 * percent-encoded spelling) becomes `[REDACTED]`, up to the `&` that ends it. Compiled once
 * per plugin instance; a URL with no `=`, or with neither the name nor a `%`, comes back as it
 * is after a substring search or two.
 */
export function createUrlRedactor (param: string): (url: string) => string {
  const query = new RegExp(`(${PARAM_START}${anySpelling(param)}=)[^&]+`, 'g')
  return function redactUrl (url: string): string {
    if (!url.includes('=') || !(url.includes(param) || url.includes('%'))) return url
    return url.replace(query, keep)
  }
}

/**
 * Installs the redactor as the `streamWrite` hook of Fastify's root logger, ahead of any
 * `streamWrite` the user configured. Child loggers read the hooks through their prototype,
 * so request loggers made before or after, by any factory, are covered. The hooks object is
 * replaced on this logger only, never mutated: a `loggerInstance` the user passed keeps its own.
 */
export function redactTokenLogs (fastify: FastifyInstance, param: string, protocolPrefix: string): void {
  const log = fastify.log as unknown as Record<string | symbol, any>
  const hooks = log[hooksSym]
  if (typeof hooks !== 'object' || hooks === null) {
    if (isNullLogger(log)) return
    throw new Error('fastify-websocket-guard: option redactLogs needs Fastify\'s pino logger to redact tokens from the logs; set redactLogs: false if your logger redacts them itself')
  }
  const redact = createRedactor(param, protocolPrefix)
  const previous = hooks.streamWrite as ((line: string) => string) | undefined
  const streamWrite = typeof previous === 'function' ? (line: string) => previous(redact(line)) : redact
  log[hooksSym] = { ...hooks, streamWrite }
  assertRedacting(log)
}

const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace']

/** Fastify's logger when logging is off: one no-op for every level, and its own child. */
function isNullLogger (log: Record<string | symbol, any>): boolean {
  const noop = log.info
  return typeof noop === 'function' && noop.name === 'noop' && LEVELS.every((level) => log[level] === noop) && log.child({}) === log
}

/**
 * pino before 9.6 ignores `hooks.streamWrite`. Rather than let tokens through, log one line
 * through a copy of the logger whose hook throws: if the hook is not reached, refuse to start.
 */
function assertRedacting (log: Record<string | symbol, any>): void {
  const level = log.level as string
  const method = log[level]
  // at 'silent' nothing is ever written (a later change of level keeps the hook)
  if (level === 'silent') return
  const probe = Object.create(log) as Record<string | symbol, any>
  const reached = new Error('reached')
  probe[hooksSym] = { ...log[hooksSym], streamWrite () { throw reached } }
  try {
    method.call(probe, 'fastify-websocket-guard: checking that log lines can be redacted')
  } catch (err) {
    if (err === reached) return
    throw err
  }
  throw new Error('fastify-websocket-guard: option redactLogs needs pino 9.6 or later (hooks.streamWrite); update pino or set redactLogs: false')
}
