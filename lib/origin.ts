/**
 * Origin matching. The raw `Origin` header is parsed strictly by hand: WHATWG `URL` would
 * percent-decode, apply IDNA, rewrite numeric IPs and accept user-info, each of which would
 * let an attacker make a hostile origin look like an allowed one. Here nothing is trimmed,
 * decoded or converted; only the scheme and host are lower-cased and default ports dropped.
 */

import type { FastifyRequest } from 'fastify'
import { withDeadline } from './deadline'
import { WebsocketGuardOptionError, WebsocketGuardStoreUnavailable, WebsocketOriginNotAllowed } from './errors'

export type OriginEntry = string | RegExp
export type OriginMatcher = (origin: string) => boolean
export type OriginFunction = (origin: string, request: FastifyRequest) => boolean | Promise<boolean>
export type OriginsOption = OriginEntry | OriginEntry[] | OriginFunction

// scheme "://" host [":" port], nothing else: no user-info, path, query or fragment.
// The host is a dot-separated list of non-empty labels, or a bracketed IPv6 literal.
const ORIGIN_RE = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*|\[[0-9A-Fa-f:.]+\])(?::([1-9][0-9]{0,4}))?$/
// An allow-list wildcard entry: the `*` is the whole first label.
const WILDCARD_RE = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/\*\.([A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*)(?::([1-9][0-9]{0,4}))?$/
const DEFAULT_PORTS: Record<string, string> = { http: '80', https: '443' }
// Longer than any origin a browser sends; bounds the work done on a hostile header.
export const MAX_ORIGIN_LENGTH = 2048

function normalise (scheme: string, host: string, port: string | undefined): string | null {
  if (port !== undefined && Number(port) > 65535) return null
  const lowerScheme = scheme.toLowerCase()
  const lowerHost = host.toLowerCase()
  return port === undefined || DEFAULT_PORTS[lowerScheme] === port
    ? `${lowerScheme}://${lowerHost}`
    : `${lowerScheme}://${lowerHost}:${port}`
}

/** The normalised form of a serialised origin, or `null` when it can never match. */
export function normaliseOrigin (origin: string): string | null {
  // exec() would stringify a non-string, and an object's toString can say anything
  if (typeof origin !== 'string' || origin.length > MAX_ORIGIN_LENGTH) return null
  const m = ORIGIN_RE.exec(origin)
  return m === null ? null : normalise(m[1] as string, m[2] as string, m[3])
}

function isAnchored (source: string): boolean {
  if (!source.startsWith('^') || !source.endsWith('$')) return false
  // A `$` preceded by an odd number of backslashes is a literal dollar sign.
  let backslashes = 0
  for (let i = source.length - 2; i >= 0 && source[i] === '\\'; i--) backslashes++
  if (backslashes % 2 === 1) return false
  // `^a|b$` looks anchored but its alternatives are not: refuse a top-level `|`.
  let depth = 0
  let inClass = false
  for (let i = 0; i < source.length; i++) {
    const c = source[i]
    if (c === '\\') { i++; continue }
    if (inClass) { if (c === ']') inClass = false; continue }
    if (c === '[') inClass = true
    else if (c === '(') depth++
    else if (c === ')') depth--
    else if (c === '|' && depth === 0) return false
  }
  return true
}

function compileRegExp (re: RegExp, label: string): RegExp {
  if (!isAnchored(re.source)) {
    throw new WebsocketGuardOptionError(`${label} RegExp ${String(re)} must be anchored at both ends (^...$) and have no top-level |`)
  }
  if (re.multiline) {
    throw new WebsocketGuardOptionError(`${label} RegExp ${String(re)} must not use the m flag (^ and $ would match at line breaks)`)
  }
  // A private copy without g/y: a stateful lastIndex would make matches depend on earlier requests.
  return new RegExp(re.source, re.flags.replace(/[gy]/g, ''))
}

interface CompiledOrigins {
  exact: Set<string>
  wildcards: Array<{ prefix: string, suffix: string }>
  patterns: RegExp[]
}

function compileEntry (entry: unknown, into: CompiledOrigins, label: string): void {
  if (entry instanceof RegExp) {
    into.patterns.push(compileRegExp(entry, label))
    return
  }
  if (typeof entry !== 'string') {
    throw new WebsocketGuardOptionError(`${label} each entry must be a string or a RegExp, got ${typeof entry}`)
  }
  if (entry === '*') {
    throw new WebsocketGuardOptionError(`${label} '*' would allow every site to connect; list the allowed origins`)
  }
  // A lone trailing slash is what people copy from the address bar; ignore it.
  const text = entry.endsWith('/') && !entry.endsWith('//') ? entry.slice(0, -1) : entry
  const wildcard = WILDCARD_RE.exec(text)
  if (wildcard !== null) {
    const domain = wildcard[2] as string
    if (!domain.includes('.') && domain.toLowerCase() !== 'localhost') {
      throw new WebsocketGuardOptionError(`${label} wildcard ${JSON.stringify(entry)} covers a whole top-level domain`)
    }
    const normalised = normalise(wildcard[1] as string, domain, wildcard[3])
    if (normalised === null) throw new WebsocketGuardOptionError(`${label} invalid port in ${JSON.stringify(entry)}`)
    const schemeEnd = normalised.indexOf('://') + 3
    into.wildcards.push({
      prefix: normalised.slice(0, schemeEnd),
      // ".example.com" or ".example.com:8443": the dot forces a whole-label boundary
      suffix: '.' + normalised.slice(schemeEnd)
    })
    return
  }
  const normalised = normaliseOrigin(text)
  if (normalised === null) {
    throw new WebsocketGuardOptionError(`${label} ${JSON.stringify(entry)} is not an origin (scheme://host[:port], no path) nor a wildcard (scheme://*.domain[:port])`)
  }
  into.exact.add(normalised)
}

/** A test of an origin already normalised by `normaliseOrigin`. */
export type NormalisedOriginMatcher = ((normalised: string) => boolean) & {
  /** the exact entries, normalised: a header byte-equal to one is allowed without parsing */
  exact?: ReadonlySet<string>
}

/**
 * Compiles an allow-list once, at registration, into a test of normalised origins: the guard
 * normalises a request's `Origin` once and hands the result here.
 */
export function compileOriginList (origins: OriginEntry | OriginEntry[], label = 'origins:'): NormalisedOriginMatcher {
  if (typeof origins === 'function') {
    throw new WebsocketGuardOptionError(`${label} createOriginMatcher takes strings and RegExps; pass a function as the plugin option instead`)
  }
  const list = Array.isArray(origins) ? origins : [origins]
  if (list.length === 0) {
    throw new WebsocketGuardOptionError(`${label} an empty list would refuse every connection`)
  }
  const compiled: CompiledOrigins = { exact: new Set(), wildcards: [], patterns: [] }
  for (const entry of list) compileEntry(entry, compiled, label)
  const { exact, wildcards, patterns } = compiled

  return Object.assign(function matchNormalised (normalised: string): boolean {
    if (exact.has(normalised)) return true
    for (const { prefix, suffix } of wildcards) {
      // at least one label before the suffix: "https://" + "a" + ".example.com"
      if (normalised.length > prefix.length + suffix.length &&
          normalised.startsWith(prefix) && normalised.endsWith(suffix)) {
        return true
      }
    }
    for (const re of patterns) {
      if (re.test(normalised)) return true
    }
    return false
  }, { exact })
}

/**
 * Compiles an allow-list once, at registration. The returned matcher takes the raw
 * `Origin` header value and does no allocation beyond normalising it.
 */
export function createOriginMatcher (origins: OriginEntry | OriginEntry[]): OriginMatcher {
  const matches = compileOriginList(origins)
  return function matchOrigin (origin: string): boolean {
    const normalised = normaliseOrigin(origin)
    return normalised !== null && matches(normalised)
  }
}

/** How an origin is checked: a compiled allow-list, a user function, or same-origin. */
export type OriginCheck =
  | { kind: 'list', match: NormalisedOriginMatcher }
  | { kind: 'function', fn: OriginFunction, timeout: number }
  | { kind: 'same-origin' }

/**
 * Compiles an `origins` option (the plugin's or a route's), once, at declaration. `timeout`
 * bounds a function's answer.
 */
export function compileOrigins (origins: unknown, option: string, timeout: number): OriginCheck {
  if (origins === undefined) return { kind: 'same-origin' }
  if (typeof origins === 'function') return { kind: 'function', fn: origins as OriginFunction, timeout }
  return { kind: 'list', match: compileOriginList(origins as OriginEntry | OriginEntry[], `fastify-websocket-guard: option ${option}`) }
}

/**
 * The normalised origin when `check` allows it; otherwise throws `WebsocketOriginNotAllowed`
 * (with the origin it expected, under the same-origin default). Synchronous but for a user
 * function's answer.
 */
function allowedOrigin (check: OriginCheck, origin: string, request: FastifyRequest): string | Promise<string> {
  switch (check.kind) {
    case 'list': {
      // A header byte-equal to a normalised entry is that entry: nothing to parse. The set
      // holds only strings that normalise to themselves, so this allows nothing more.
      if (check.match.exact?.has(origin) === true) return origin
      const normalised = normaliseOrigin(origin)
      if (normalised !== null && check.match(normalised)) return normalised
      break
    }
    case 'function': {
      const normalised = normaliseOrigin(origin)
      if (normalised !== null) return askOriginFunction(check, origin, request).then((allowed) => allowedOrRefused(allowed, normalised))
      break
    }
    default: {
      // injectWS makes requests without a socket (no protocol) and maybe without a Host
      const own = `${request.protocol ?? 'http'}://${request.host || 'localhost'}`
      // byte-equal to what this request's own origin spells: one parse instead of two
      const expected = normaliseOrigin(own)
      if (origin === own && expected !== null) return expected
      if (expected !== null && expected === normaliseOrigin(origin)) return expected
      throw new WebsocketOriginNotAllowed(undefined, expected)
    }
  }
  throw new WebsocketOriginNotAllowed()
}

function allowedOrRefused (allowed: boolean, normalised: string): string {
  if (allowed) return normalised
  throw new WebsocketOriginNotAllowed()
}

/** Only `true` allows. A throw or rejection refuses (logged here, never sent); a hang is a 503. */
async function askOriginFunction (check: { fn: OriginFunction, timeout: number }, origin: string, request: FastifyRequest): Promise<boolean> {
  try {
    return (await withDeadline(check.fn(origin, request), check.timeout, 'The origins function')) === true
  } catch (err) {
    if (err instanceof WebsocketGuardStoreUnavailable) throw err
    request.log.error({ err }, 'websocket guard: the origins function threw; origin refused')
    return false
  }
}

/**
 * The upgrade's origin decision: the normalised allowed origin, or `null` when none was sent
 * and the route allows that; throws `WebsocketOriginNotAllowed` otherwise.
 */
export function upgradeOrigin (check: OriginCheck, allowMissing: boolean, request: FastifyRequest): string | null | Promise<string> {
  const header = request.headers.origin
  if (header === undefined) {
    if (allowMissing) return null
    throw new WebsocketOriginNotAllowed('Origin header missing')
  }
  return allowedOrigin(check, header, request)
}

/**
 * The token request's origin decision. A cross-site page may make the browser send this
 * request, but must get no token. A same-site one (a sibling subdomain's <img> or no-cors
 * fetch) sends no Origin yet could make us issue tokens that evict the user's pending ones:
 * it must show an allowed Origin.
 */
export function checkTokenRequestOrigin (check: OriginCheck, request: FastifyRequest): string | Promise<string> | undefined {
  const site = request.headers['sec-fetch-site']
  const header = request.headers.origin
  if (site !== undefined && site !== 'same-origin' && site !== 'none' &&
      (header === undefined || site.includes('cross-site'))) {
    throw new WebsocketOriginNotAllowed('Cross-site token request')
  }
  if (header !== undefined) return allowedOrigin(check, header, request)
  return undefined
}
