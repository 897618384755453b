/**
 * Property-based tests (fast-check): the origin matcher against an independent model of the
 * rules of API.md, the token presentation parser against a model of its own, and the guard
 * over the wire against generated hostile requests. Seeds are random on every run; a failure
 * prints the seed and the shrunk counterexample. FUZZ_SCALE=10 runs ten times as many.
 */
import t, { type Test } from 'tap'
import fc from 'fast-check'
import { randomBytes } from 'node:crypto'
import { Agent, request as httpRequest } from 'node:http'
import { connect as netConnect } from 'node:net'
import { buildApp, Client } from './helpers/app'
import { createOriginMatcher, normaliseOrigin, MAX_ORIGIN_LENGTH } from '../lib/origin'
import { presentedToken, MAX_PRESENTED_LENGTH, MAX_PROTOCOL_ENTRIES, MAX_QUERY_PARAMS } from '../lib/tokens'
import { consumeWebsocketToken, NoWebsocketTokenPresented, WebsocketSecurityError, WebsocketTokenMismatch } from '../lib/index'
import { createRedactor, createUrlRedactor, REDACTED } from '../lib/redact'
import Fastify, { type FastifyServerOptions } from 'fastify'

const scale = Number(process.env.FUZZ_SCALE ?? 1)
const RUNS = {
  redaction: 500 * scale,
  packets: 1000 * scale,
  origins: 1000 * scale,
  entries: 500 * scale,
  regexps: 500 * scale,
  parser: 1000 * scale,
  seed: 500 * scale,
  wire: 200 * scale
}

function check (t: Test, name: keyof typeof RUNS, property: fc.IProperty<any> | fc.IAsyncProperty<any>): Promise<void> | void {
  t.comment(`${name}: ${RUNS[name]} runs`)
  const done = fc.assert(property as any, { numRuns: RUNS[name] }) as Promise<void> | void
  return done
}

// ---------------------------------------------------------------------------------------
// An independent model of API.md "Origins", written with string operations, not regexps.

const ALPHA = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'
const DIGITS = '0123456789'
const HEX = DIGITS + 'abcdefABCDEF'
const LABEL_CHARS = ALPHA + DIGITS + '_-'
const SCHEME_CHARS = ALPHA + DIGITS + '+.-'
const only = (text: string, chars: string): boolean => [...text].every((c) => chars.includes(c))
const lower = (text: string): string => [...text].map((c) => ALPHA.includes(c) ? c.toLowerCase() : c).join('')

interface ModelOrigin { scheme: string, host: string, port: string | null }

function modelScheme (text: string): boolean {
  return text.length > 0 && ALPHA.includes(text[0] as string) && only(text, SCHEME_CHARS)
}

function modelLabels (host: string): boolean {
  return host.split('.').every((label) => label.length > 0 && only(label, LABEL_CHARS))
}

/** host[:port] after the scheme, or null. */
function modelHostPort (rest: string, allowIpv6: boolean): { host: string, port: string | null } | null {
  let host: string
  let after: string
  if (rest.startsWith('[')) {
    const close = rest.indexOf(']')
    if (!allowIpv6 || close < 2 || !only(rest.slice(1, close), HEX + ':.')) return null
    host = rest.slice(0, close + 1)
    after = rest.slice(close + 1)
  } else {
    const colon = rest.indexOf(':')
    host = colon === -1 ? rest : rest.slice(0, colon)
    after = colon === -1 ? '' : rest.slice(colon)
    if (!modelLabels(host)) return null
  }
  if (after === '') return { host, port: null }
  const digits = after.slice(1)
  if (after[0] !== ':' || digits === '' || digits[0] === '0' || digits.length > 5 || !only(digits, DIGITS) || Number(digits) > 65535) return null
  return { host, port: digits }
}

function withDefaults (scheme: string, host: string, port: string | null): ModelOrigin {
  const s = lower(scheme)
  const defaultPort = s === 'http' ? '80' : s === 'https' ? '443' : null
  return { scheme: s, host: lower(host), port: port === defaultPort ? null : port }
}

function modelParse (text: string): ModelOrigin | null {
  if (text.length > MAX_ORIGIN_LENGTH) return null
  const sep = text.indexOf('://')
  if (sep < 1 || !modelScheme(text.slice(0, sep))) return null
  const hp = modelHostPort(text.slice(sep + 3), true)
  return hp === null ? null : withDefaults(text.slice(0, sep), hp.host, hp.port)
}

const serialise = (o: ModelOrigin): string => `${o.scheme}://${o.host}${o.port === null ? '' : ':' + o.port}`

type ModelEntry = { kind: 'exact', origin: string } | { kind: 'wildcard', scheme: string, domain: string[], port: string | null } | null

function modelEntry (entry: string): ModelEntry {
  if (entry === '*') return null
  const text = entry.endsWith('/') && !entry.endsWith('//') ? entry.slice(0, -1) : entry
  const sep = text.indexOf('://')
  if (sep >= 1 && modelScheme(text.slice(0, sep)) && text.startsWith('*.', sep + 3)) {
    const hp = modelHostPort(text.slice(sep + 5), false)
    if (hp === null) return null
    const o = withDefaults(text.slice(0, sep), hp.host, hp.port)
    const domain = o.host.split('.')
    if (domain.length < 2 && o.host !== 'localhost') return null
    return { kind: 'wildcard', scheme: o.scheme, domain, port: o.port }
  }
  const o = modelParse(text)
  return o === null ? null : { kind: 'exact', origin: serialise(o) }
}

function modelMatches (entries: ModelEntry[], origin: string): boolean {
  const o = modelParse(origin)
  if (o === null) return false
  return entries.some((e) => {
    if (e === null) return false
    if (e.kind === 'exact') return e.origin === serialise(o)
    if (o.host.startsWith('[') || o.scheme !== e.scheme || o.port !== e.port) return false
    const labels = o.host.split('.')
    return labels.length > e.domain.length && labels.slice(-e.domain.length).join('.') === e.domain.join('.')
  })
}

// ---------------------------------------------------------------------------------------
// Generators: near-misses of real origins, with hostile characters anywhere.

const HOSTILE = ['', ' ', '\t', '\n', '\r\n', '\u0000', '/', '//', '\\', '?', '#', '@', '%2e', '%00', '.', '..', ':', '*',
  '\u00e4', '\u212a', '\uff45', '\u0455', '\u200b', '\ufeff', '\ud800', 'null', ',', ', https://evil.io']
const scheme = fc.constantFrom('http', 'https', 'HTTP', 'HtTpS', 'ws', 'wss', 'chrome-extension', 'a+b.c-d', '1http', '', 'ht tp', 'http\u0455')
const label = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom('example', 'EXAMPLE', 'com', 'app', 'a', 'b', 'evil', 'evilexample', 'io', 'localhost', 'xn--bcher-kva', '127', '0', '_', '-') },
  { weight: 1, arbitrary: fc.constantFrom(...HOSTILE) },
  { weight: 1, arbitrary: fc.string({ maxLength: 6 }) }
)
const host = fc.oneof(
  { weight: 6, arbitrary: fc.array(label, { minLength: 1, maxLength: 4 }).map((labels) => labels.join('.')) },
  { weight: 1, arbitrary: fc.constantFrom('[::1]', '[FE80::1]', '[::ffff:127.0.0.1]', '[]', '[::1', '[g::1]', '[::1]]') }
)
const port = fc.option(fc.constantFrom('80', '443', '8080', '8443', '0', '00080', '65535', '65536', '99999', '', '8o', '+80'), { nil: undefined, freq: 2 })
const tail = fc.oneof({ weight: 6, arbitrary: fc.constant('') }, { weight: 1, arbitrary: fc.constantFrom(...HOSTILE, '/x', '?q', '#f', '.evil.io', '@evil.io') })
const userinfo = fc.oneof({ weight: 8, arbitrary: fc.constant('') }, { weight: 1, arbitrary: fc.constantFrom('user@', 'a:b@', '@') })

const origin = fc.oneof(
  { weight: 8, arbitrary: fc.tuple(scheme, userinfo, host, port, tail).map(([s, u, h, p, x]) => `${s}://${u}${h}${p === undefined ? '' : ':' + p}${x}`) },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 40 }) },
  { weight: 1, arbitrary: fc.constantFrom('null', '', 'https://' + 'a'.repeat(MAX_ORIGIN_LENGTH), 'https://' + 'a.'.repeat(1100) + 'com') }
)
const entry = fc.oneof(
  { weight: 3, arbitrary: origin },
  { weight: 2, arbitrary: fc.tuple(scheme, host, port, fc.constantFrom('', '', '/', '//')).map(([s, h, p, x]) => `${s}://*.${h}${p === undefined ? '' : ':' + p}${x}`) },
  { weight: 1, arbitrary: fc.constantFrom('*', 'https://*.com', 'https://*.localhost', 'https://*', 'https://a.*.com', '*.example.com') }
)

/**
 * Origins that come near an entry: its own text re-cased, its `*` replaced by labels, by
 * nothing (the bare domain) or glued to the domain (`evilexample.com`), a default port, a
 * hostile tail.
 */
function near (entries: string[]): fc.Arbitrary<string> {
  const star = fc.oneof(
    fc.array(label, { minLength: 1, maxLength: 2 }).map((labels) => labels.join('.') + '.'),
    fc.constantFrom('', 'evil', '*.', '.', 'a..')
  )
  return fc.tuple(fc.constantFrom(...entries), star, fc.boolean(), fc.constantFrom('', '', ':443', ':80', ':8080'), tail)
    .map(([e, replacement, upper, p, x]) => {
      let text = e.replace('*.', replacement).replace(/\/$/, '')
      if (upper) text = text.toUpperCase()
      return text + p + x
    })
}

t.test('origin matcher agrees with the model of the rules', async (t) => {
  const valid = fc.array(entry, { minLength: 1, maxLength: 4 }).filter((es) => es.every((e) => modelEntry(e) !== null))
  let matched = 0
  let refused = 0
  await check(t, 'origins', fc.property(
    valid.chain((es) => fc.tuple(fc.constant(es), fc.array(fc.oneof(origin, near(es)), { minLength: 1, maxLength: 6 }))),
    ([entries, origins]) => {
      const match = createOriginMatcher(entries)
      const model = entries.map(modelEntry)
      for (const o of origins) {
        const expected = modelMatches(model, o)
        if (match(o) !== expected) throw new Error(`${JSON.stringify(entries)} vs ${JSON.stringify(o)}: matcher ${String(match(o))}`)
        if (expected) matched++
        else refused++
        const normalised = normaliseOrigin(o)
        const parsed = modelParse(o)
        if (normalised !== (parsed === null ? null : serialise(parsed))) throw new Error(`normalise ${JSON.stringify(o)}`)
        // a normalised origin normalises to itself and matches the entry it came from
        if (normalised !== null && (normaliseOrigin(normalised) !== normalised || !createOriginMatcher(o)(normalised))) {
          throw new Error(`not idempotent: ${JSON.stringify(o)}`)
        }
      }
    }
  ))
  t.comment(`origins matched: ${matched}, refused: ${refused}`)
  t.ok(matched > 0 && refused > 0, 'both answers were exercised')
})

t.test('an allow-list compiles exactly when every entry is valid by the model', async (t) => {
  await check(t, 'entries', fc.property(fc.array(entry, { minLength: 1, maxLength: 3 }), (entries) => {
    const valid = entries.every((e) => modelEntry(e) !== null)
    let error: unknown = null
    try { createOriginMatcher(entries) } catch (err) { error = err }
    if (valid ? error !== null : !(error instanceof TypeError)) throw new Error(`${JSON.stringify(entries)}: ${String(error)}`)
  }))
})

// RegExps from a small grammar whose anchoring is known by construction.
const atom = fc.constantFrom('https', ':\\/\\/', '[a-z]+', '\\.', 'example', 'com', '(a|b)', '(?:x|y)', '[|)]', '[\\]|]', '\\|', '\\(', '.*', '\\$', '[0-9]{2,4}', ':', '(?=a)')
const regexp = fc.record({
  caret: fc.boolean(),
  atoms: fc.array(atom, { minLength: 1, maxLength: 6 }),
  alternation: fc.option(fc.nat({ max: 6 }), { nil: undefined }),
  end: fc.constantFrom('$', '$', '\\$', '\\\\$', ''),
  flags: fc.subarray(['g', 'i', 'm', 's', 'u', 'y'])
}).map(({ caret, atoms, alternation, end, flags }) => {
  const parts: string[] = [...atoms]
  const alt = alternation !== undefined && alternation < parts.length
  if (alt) parts.splice(alternation as number, 0, '|')
  const anchored = caret && (end === '$' || end === '\\\\$') && !alt
  return { re: new RegExp((caret ? '^' : '') + parts.join('') + end, flags.join('')), accepted: anchored && !flags.includes('m') }
})

// RegExps that do match: an origin escaped, a label or the port widened, anchored, any flags.
const SAMPLES = ['https://a.example.com', 'https://app.example.com:8443', 'http://[::1]:3000', 'chrome-extension://abc']
const escape = (text: string): string => text.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')
const matching = fc.tuple(fc.constantFrom(...SAMPLES), fc.constantFrom('', 'label', 'port'), fc.subarray(['g', 'i', 's', 'u', 'y']))
  .map(([sample, widen, flags]) => {
    let source = escape(sample)
    if (widen === 'label') source = source.replace(/^([a-z-]+:\\\/\\\/)[a-z]+/, '$1[a-z]+')
    if (widen === 'port') source = source.replace(/(:[0-9]+)?$/, '(?::[0-9]+)?')
    return { re: new RegExp(`^${source}$`, flags.join('')), accepted: true, sample }
  })

t.test('RegExp entries: refused unless anchored, then tested on the normalised origin with no state', async (t) => {
  const candidates = ['https://a.example.com', 'HTTPS://A.EXAMPLE.COM:443', 'https://app.example.com.evil.io', 'https://example.com:8443', 'x|y', '$']
  let matched = 0
  await check(t, 'regexps', fc.property(fc.oneof(regexp.map((r) => ({ ...r, sample: undefined })), matching), fc.array(fc.oneof(origin, fc.constantFrom(...candidates)), { maxLength: 4 }), ({ re, accepted, sample }, generated) => {
    let match: ((o: string) => boolean) | null = null
    try { match = createOriginMatcher(re) } catch (err) {
      if (accepted || !(err instanceof TypeError)) throw new Error(`${String(re)} refused: ${String(err)}`)
      return
    }
    if (!accepted) throw new Error(`${String(re)} accepted`)
    const plain = new RegExp(re.source, re.flags.replace(/[gy]/g, ''))
    const origins = sample === undefined ? generated : [sample, sample.toUpperCase(), ...generated]
    for (const o of origins) {
      const parsed = modelParse(o)
      const expected = parsed !== null && plain.test(serialise(parsed))
      if (expected) matched++
      // twice in a row: a g or y flag must not carry lastIndex from one request to the next
      if (match(o) !== expected || match(o) !== expected) throw new Error(`${String(re)} on ${JSON.stringify(o)}`)
    }
    if (re.lastIndex !== 0) throw new Error('the caller\'s RegExp was used')
  }))
  t.ok(matched > 0, `${matched} origins matched a RegExp`)
})

// ---------------------------------------------------------------------------------------
// Token presentation: query strings and Sec-WebSocket-Protocol headers.

const PARAM = 'token'
const PREFIX = 'websocket-guard.'
const value = fc.oneof(
  fc.constantFrom('', 'abc', 'a=b', '%20', 'x'.repeat(MAX_PRESENTED_LENGTH), 'x'.repeat(MAX_PRESENTED_LENGTH + 1), '\u00e4', 'a,b', ' '),
  fc.string({ maxLength: 12 })
)
const segment = fc.oneof(
  { weight: 3, arbitrary: value.map((v) => `${PARAM}=${v}`) },
  { weight: 1, arbitrary: fc.constantFrom(PARAM, `${PARAM}=`, 'tok%65n=abc', 'TOKEN=abc', 'tokens=abc', 'x=1', '', '=', '=token', '?token=abc', 'token&') },
  { weight: 1, arbitrary: fc.string({ maxLength: 10 }) }
)
const url = fc.oneof(
  { weight: 6, arbitrary: fc.tuple(fc.constantFrom('/chat', '/', '/a?b', ''), fc.array(segment, { maxLength: 6 })).map(([p, segs]) => segs.length === 0 ? p : `${p}?${segs.join('&')}`) },
  { weight: 1, arbitrary: fc.tuple(fc.integer({ min: MAX_QUERY_PARAMS - 2, max: MAX_QUERY_PARAMS + 2 }), fc.boolean()).map(([n, tok]) => '/chat?' + Array.from({ length: n }, (_, i) => tok && i === 0 ? 'token=abc' : `p${i}=1`).join('&')) },
  { weight: 1, arbitrary: fc.string({ maxLength: 30 }) }
)
const entryText = fc.oneof(
  { weight: 3, arbitrary: value.map((v) => PREFIX + v) },
  { weight: 2, arbitrary: fc.constantFrom('websocket-guard', 'chat', '', ' ', 'Websocket-Guard.abc', 'xwebsocket-guard.abc', `${PREFIX}${PREFIX}a`, ` ${PREFIX}abc `) },
  { weight: 1, arbitrary: fc.string({ maxLength: 10 }) }
)
const header = fc.option(fc.oneof(
  { weight: 6, arbitrary: fc.tuple(fc.array(entryText, { maxLength: 5 }), fc.constantFrom(',', ', ', ' ,')).map(([es, sep]) => es.join(sep)) },
  { weight: 1, arbitrary: fc.tuple(fc.integer({ min: MAX_PROTOCOL_ENTRIES - 2, max: MAX_PROTOCOL_ENTRIES + 2 }), fc.boolean()).map(([n, tok]) => Array.from({ length: n }, (_, i) => tok && i === n - 1 ? PREFIX + 'abc' : `p${i}`).join(', ')) },
  { weight: 1, arbitrary: fc.string({ maxLength: 30 }) }
), { nil: undefined })

type Expected = { error: typeof NoWebsocketTokenPresented | typeof WebsocketTokenMismatch } | { token: string, protocols: string | undefined, viaProtocol: boolean }

/** The presentation rules of API.md, by splitting. */
function modelPresented (target: string, protocols: string | undefined): Expected {
  const none = { error: NoWebsocketTokenPresented }
  const q = target.indexOf('?')
  const values: string[] = []
  if (q !== -1) {
    const segments = target.slice(q + 1).split('&')
    if (segments.length > MAX_QUERY_PARAMS) return none
    for (const s of segments) {
      const eq = s.indexOf('=')
      if ((eq === -1 ? s : s.slice(0, eq)) === PARAM) values.push(eq === -1 ? '' : s.slice(eq + 1))
    }
  }
  if (values.length > 1) return none
  const check = (v: string | undefined, rest: Omit<Extract<Expected, { token: string }>, 'token'>): Expected =>
    v === undefined || v === '' ? none : v.length > MAX_PRESENTED_LENGTH ? { error: WebsocketTokenMismatch } : { token: v, ...rest }
  if (protocols === undefined || !protocols.includes(PREFIX)) return check(values[0], { protocols, viaProtocol: false })
  const entries = protocols.split(',')
  if (entries.length > MAX_PROTOCOL_ENTRIES) return none
  const trimmed = entries.map((e) => e.trim())
  const tokens = trimmed.filter((e) => e.startsWith(PREFIX))
  if (tokens.length === 0) return check(values[0], { protocols, viaProtocol: false })
  if (tokens.length + values.length > 1) return none
  const rest = trimmed.filter((e) => e !== '' && !e.startsWith(PREFIX))
  // a token entry offered alone would fail the browser's connection once the token is spent
  if (rest.length === 0) return none
  return check((tokens[0] as string).slice(PREFIX.length), { protocols: rest.join(', '), viaProtocol: true })
}

t.test('token presentation parser: only security errors, and exactly the model\'s answer', async (t) => {
  const outcomes: Record<string, number> = {}
  await check(t, 'parser', fc.property(url, header, (target, protocols) => {
    const expected = modelPresented(target, protocols)
    const outcome = 'error' in expected ? expected.error.name : expected.viaProtocol ? 'via protocol' : 'via query'
    outcomes[outcome] = (outcomes[outcome] ?? 0) + 1
    let actual: ReturnType<typeof presentedToken> | null = null
    try {
      actual = presentedToken(target, protocols, PARAM, PREFIX)
    } catch (err) {
      if (!(err instanceof WebsocketSecurityError)) throw err
      if (!('error' in expected) || err.constructor !== expected.error) {
        throw new Error(`${JSON.stringify([target, protocols])}: threw ${(err as Error).name}, expected ${JSON.stringify(expected)}`)
      }
      return
    }
    if ('error' in expected) throw new Error(`${JSON.stringify([target, protocols])}: let through ${JSON.stringify(actual)}`)
    if (actual.token !== expected.token || actual.protocols !== expected.protocols || actual.viaProtocol !== expected.viaProtocol) {
      throw new Error(`${JSON.stringify([target, protocols])}: ${JSON.stringify(actual)} vs ${JSON.stringify(expected)}`)
    }
    // never an empty or overlong token, never the token entry left for ws to select
    if (actual.token === '' || actual.token.length > MAX_PRESENTED_LENGTH || actual.protocols?.split(',').some((e) => e.trim().startsWith(PREFIX)) === true) {
      throw new Error('malformed token let through')
    }
  }))
  t.comment(`parser outcomes: ${JSON.stringify(outcomes)}`)
  t.equal(Object.keys(outcomes).length, 4, 'every outcome was exercised')
})

t.test('consumeWebsocketToken (the seed\'s function): only security errors on any path and session value', async (t) => {
  const stored = fc.oneof(fc.string({ maxLength: 8 }), fc.constant(undefined), fc.constant(null), fc.array(fc.anything(), { maxLength: 3 }), fc.anything())
  await check(t, 'seed', fc.property(url, stored, (path, value) => {
    const session: Record<string, unknown> = { websocket_token: value }
    try {
      const token = consumeWebsocketToken(path, session)
      // only a plain stored string can match a presented one here
      if (token !== value || session.websocket_token !== undefined) throw new Error(`${JSON.stringify([path, value])} consumed ${token}`)
    } catch (err) {
      if (!(err instanceof WebsocketSecurityError)) throw err
    }
  }))
})

// ---------------------------------------------------------------------------------------
// Redaction: from what was logged, neither the guard nor Fastify's query parser (with or
// without useSemicolonDelimiter) can read back a token that either of them would have read
// from the request, and onReject's URL is the one the log shows.

/** Every value the guard would take for a token, from the query or from one entry, were it alone. */
function guardReadable (url: string, protocols: string | undefined): string[] {
  const q = url.indexOf('?')
  const values: string[] = []
  if (q !== -1) {
    for (const s of url.slice(q + 1).split('&')) {
      const eq = s.indexOf('=')
      if ((eq === -1 ? s : s.slice(0, eq)) === PARAM) values.push(eq === -1 ? '' : s.slice(eq + 1))
    }
  }
  for (const entry of protocols?.split(',') ?? []) {
    if (entry.trim().startsWith(PREFIX)) values.push(entry.trim().slice(PREFIX.length))
  }
  return values
}

type Reader = (path: string) => Promise<string[]>

/**
 * A real server that answers every request target with the values of PARAM that Fastify's
 * query parser read from it, requested over one kept-alive connection with the target exactly
 * as written (`#` included, which `inject` and any URL object would drop).
 */
async function fastifyReader (t: Test, useSemicolonDelimiter: boolean): Promise<Reader> {
  // where Fastify 5 reads it (the top-level option is deprecated); find-my-way's types omit it
  const app = Fastify({ routerOptions: { useSemicolonDelimiter } as FastifyServerOptions['routerOptions'] })
  t.teardown(() => app.close())
  app.get('/q', async (request) => [(request.query as Record<string, unknown>)[PARAM] ?? []].flat())
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as { port: number }
  const agent = new Agent({ keepAlive: true, maxSockets: 1 })
  t.teardown(() => agent.destroy())
  return (path) => new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, agent }, (res) => {
      let data = ''
      res.setEncoding('latin1')
      res.on('data', (chunk) => { data += chunk })
      // a 404 (`/q;…` without the option is another path) or a 400 (a path that does not
      // decode, `/q;%`) reads nothing
      res.on('end', () => res.statusCode === 200 ? resolve(JSON.parse(data)) : res.statusCode === 404 || res.statusCode === 400 ? resolve([]) : reject(new Error(`${res.statusCode} for ${path}`)))
    })
    req.on('error', reject)
    req.end()
  })
}

const unredacted = (values: string[]): string[] => values.filter((v) => v !== '' && v !== REDACTED)

t.test('redacted log lines give back no token to the guard nor to Fastify\'s query parser; onReject\'s URL is the logged one', async (t) => {
  const readers: Record<'default' | 'semicolon', Reader> = { default: await fastifyReader(t, false), semicolon: await fastifyReader(t, true) }
  const redact = createRedactor(PARAM, PREFIX)
  const redactUrl = createUrlRedactor(PARAM)
  // targets as Node accepts them (printable ASCII, no space), every spelling of the name, a
  // query started by `?`, `#` or `;` and parameters joined by any of those or `&`
  const spelled = fc.constantFrom('token', '%74oken', 'tok%65n', '%74%6F%6B%65%6E', '%74%6f%6b%65%6e', 'Token', 'token%3D', 'to+ken')
  const raw = fc.string({ maxLength: 10, unit: fc.constantFrom(...'aZ09-_.~%"\\\'/?=&,;+:@#[]'.split('')) })
  const parameter = fc.oneof(fc.tuple(spelled, fc.boolean(), raw).map(([k, eq, v]) => eq ? `${k}=${v}` : k), raw)
  const target = fc.array(fc.tuple(fc.constantFrom('?', '&', '#', ';'), parameter), { minLength: 1, maxLength: 5 })
    .map((ps) => '/q' + ps.map(([d, p]) => d + p).join(''))
  // entries after any whitespace `trim` removes, which JSON writes as an escape or as itself
  const space = fc.constantFrom('', ' ', '\t', ' \t', '\n', '\u000b', '\f', '\u00a0', '\u2028', '\ufeff', '\u0085')
  const spaced = fc.array(fc.tuple(space, entryText, space).map(([a, e, b]) => a + e + b), { maxLength: 4 }).map((es) => es.join(','))
  const protocols = fc.option(fc.oneof(header.map((h) => h ?? ''), spaced), { nil: undefined })
  const seen = { fastifyOnly: 0, hash: 0, semicolon: 0, escapedEntry: 0 }

  await check(t, 'redaction', fc.asyncProperty(target, protocols, async (u, h) => {
    const line = JSON.stringify({ req: { url: u, headers: { 'sec-websocket-protocol': h } }, msg: `Route GET:${u} not found` }) + '\n'
    const logged = JSON.parse(redact(line))
    const loggedHeader: string | undefined = logged.req.headers['sec-websocket-protocol']
    const loggedUrls: string[] = [logged.req.url, logged.msg.slice('Route GET:'.length, -' not found'.length)]
    for (const loggedUrl of loggedUrls) {
      if (loggedUrl !== redactUrl(u)) throw new Error(`onReject would get ${JSON.stringify(redactUrl(u))}, the log shows ${JSON.stringify(loggedUrl)}`)
    }
    const back = unredacted(guardReadable(logged.req.url, loggedHeader))
    if (back.length > 0) throw new Error(`the guard reads ${JSON.stringify(back)} back from ${JSON.stringify([logged.req.url, loggedHeader])}`)
    for (const [name, read] of Object.entries(readers)) {
      const before = unredacted(await read(u))
      const after = logged.req.url === u ? before : unredacted(await read(logged.req.url))
      if (after.length > 0) throw new Error(`Fastify (${name}) reads ${JSON.stringify(after)} (was ${JSON.stringify(before)}) from ${JSON.stringify(logged.req.url)}`)
      if (before.length > 0 && unredacted(guardReadable(u, undefined)).length === 0) {
        seen.fastifyOnly++
        // where Fastify's router started the query
        const starts = [u.indexOf('?', 1), u.indexOf('#', 1), name === 'semicolon' ? u.indexOf(';', 1) : -1].filter((i) => i !== -1)
        const first = u[Math.min(...starts)]
        if (first === '#') seen.hash++
        if (first === ';') seen.semicolon++
      }
    }
    let original: string | null = null
    try { original = presentedToken(u, h, PARAM, PREFIX).viaProtocol ? 'entry' : null } catch {}
    if (original !== null && /\\[tnrf]|\\u[0-9a-f]{4}/.test(JSON.stringify(h))) seen.escapedEntry++
  }))
  t.comment(`tokens the redactor had to find: ${JSON.stringify(seen)}`)
  t.ok(seen.fastifyOnly > 0, 'tokens that only Fastify reads')
  t.ok(seen.hash > 0, 'tokens after a `#`')
  t.ok(seen.semicolon > 0, 'tokens after a `;` under useSemicolonDelimiter')
  t.ok(seen.escapedEntry > 0, 'subprotocol entries that JSON writes after an escape')
})

t.test('a malformed request, logged from any point where TCP split it, shows no piece of a token', async (t) => {
  const redact = createRedactor(PARAM, PREFIX)
  // token values of letters nothing else in these requests has, so that any left is a leak
  const secret = fc.string({ minLength: 1, maxLength: 43, unit: fc.constantFrom('Q', 'X', 'Z') })
  const filler = fc.string({ maxLength: 8, unit: fc.constantFrom(...'abc09-_.~%=/'.split('')) })
  const delimiter = fc.constantFrom('?', '&', '#', ';')
  const name = fc.constantFrom('token', '%74oken', 'tok%65n', '%74%6F%6B%65%6E')
  const query = fc.array(fc.oneof(
    fc.tuple(delimiter, name, secret).map(([d, n, v]) => `${d}${n}=${v}`),
    fc.tuple(delimiter, filler).map(([d, f]) => d + f)
  ), { maxLength: 4 }).map((ps) => '/chat' + ps.join(''))
  const entry = fc.oneof(secret.map((v) => PREFIX + v), filler, fc.constant('websocket-guard'))
  const entries = fc.array(fc.tuple(fc.constantFrom('', ' ', '\t', ' \t'), entry).map(([w, e]) => w + e), { minLength: 1, maxLength: 4 }).map((es) => es.join(','))
  const request = fc.tuple(query, fc.option(fc.tuple(fc.constantFrom(':', ': '), entries), { nil: undefined }), fc.constantFrom('Host x', 'Host: x\r\nno colon', 'Host: x\r\n\u0000'))
    .map(([target, protocol, bad]) => `GET ${target} HTTP/1.1\r\n${protocol === undefined ? '' : `Sec-WebSocket-Protocol${protocol[0]}${protocol[1]}\r\n`}${bad}\r\n\r\n`)
  const packet = /"rawPacket":\{"type":"Buffer","data":\[([0-9,]*)\]\}/
  let inside = 0

  await check(t, 'packets', fc.property(request, fc.nat(), (text, n) => {
    // Node logs the bytes of the read that failed: any suffix of the request
    const segment = text.slice(n % (text.length + 1))
    const line = JSON.stringify({ level: 10, err: { type: 'Error', code: 'HPE_INVALID_HEADER_TOKEN', rawPacket: Buffer.from(segment, 'latin1') }, msg: 'client error' })
    const data = packet.exec(JSON.parse(JSON.stringify(redact(line))))?.[1]
    if (data === undefined) throw new Error(`no packet left in ${redact(line)}`)
    const shown = Buffer.from(data === '' ? [] : data.split(',').map(Number)).toString('latin1')
    if (/[QXZ]/.test(shown)) throw new Error(`${JSON.stringify(segment)} is logged as ${JSON.stringify(shown)}`)
    if (/^[QXZ]/.test(segment)) inside++
  }))
  t.ok(inside > 0, `${inside} segments began inside a token`)
})

// ---------------------------------------------------------------------------------------
// The guard over the wire: hostile upgrades and token requests never get a 5xx, nor a 101.

/** Sends one raw request and resolves with its status code (0 when the server just closed). */
function rawStatus (port: number, request: string): Promise<number> {
  return new Promise((resolve) => {
    let data = ''
    const socket = netConnect(port, '127.0.0.1', () => socket.write(request))
    socket.setEncoding('latin1')
    socket.on('data', (chunk) => {
      data += chunk
      if (data.includes('\r\n')) socket.destroy()
    })
    socket.on('close', () => resolve(Number(/^HTTP\/1\.1 (\d{3})/.exec(data)?.[1] ?? 0)))
    socket.on('error', () => {})
  })
}

const headerValue = (arb: fc.Arbitrary<string>): fc.Arbitrary<string> => arb.map((v) => v.replace(/[\r\n]/g, ''))

t.test('the guard never answers 5xx (nor 101) to hostile upgrades and token requests', async (t) => {
  const { app, base } = await buildApp(t, { guard: { origins: ['https://app.example.com', 'https://*.example.org'] } })
  const { port } = app.server.address() as { port: number }
  const client = new Client(base)
  for (let i = 0; i < 3; i++) await client.token()
  const key = randomBytes(16).toString('base64')
  const cookie = fc.oneof(fc.constant(client.cookie), fc.constant(''), headerValue(fc.string({ maxLength: 20 })), fc.constant(client.cookie + 'x'))
  const target = url.map((u) => (u.startsWith('/') ? u : '/chat?' + u).replace(/[\s#]/g, ''))
  const statuses = new Map<number, number>()

  await check(t, 'wire', fc.asyncProperty(
    fc.boolean(), target, fc.option(headerValue(origin), { nil: undefined }), fc.option(headerValue(fc.oneof(header.map((h) => h ?? ''), fc.string())), { nil: undefined }),
    cookie, fc.option(fc.constantFrom('cross-site', 'same-origin', 'none', 'cross-site, same-origin', ''), { nil: undefined }),
    async (upgrade, path, originHeader, protocols, cookieHeader, fetchSite) => {
      const lines = [
        `GET ${upgrade ? path.replace(/^\/[^?]*/, '/chat') : '/websocket-token' + path.replace(/^[^?]*/, '').replace(/token=/, 'path=/')} HTTP/1.1`,
        `Host: 127.0.0.1:${port}`
      ]
      if (upgrade) lines.push('Connection: Upgrade', 'Upgrade: websocket', 'Sec-WebSocket-Version: 13', `Sec-WebSocket-Key: ${key}`)
      if (originHeader !== undefined) lines.push(`Origin: ${originHeader}`)
      if (protocols !== undefined) lines.push(`Sec-WebSocket-Protocol: ${protocols}`)
      if (cookieHeader !== '') lines.push(`Cookie: ${cookieHeader}`)
      if (fetchSite !== undefined) lines.push(`Sec-Fetch-Site: ${fetchSite}`)
      const status = await rawStatus(port, lines.join('\r\n') + '\r\n\r\n')
      statuses.set(status, (statuses.get(status) ?? 0) + 1)
      if (status >= 500 || status === 101 || (upgrade && status === 200)) throw new Error(`${status} for ${JSON.stringify(lines)}`)
    }
  ))
  t.comment(`statuses seen: ${JSON.stringify(Object.fromEntries(statuses))}`)
  t.ok(statuses.has(403), 'refusals were among them')
})
