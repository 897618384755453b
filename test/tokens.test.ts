// Tokens (API.md "Tokens"): generation, hashing, the findToken/addToken rules every store
// shares, and how a presented token is read from the query or a subprotocol entry.
import t from 'tap'
import { createHash } from 'node:crypto'
import {
  addToken,
  assertConsumed,
  findToken,
  generateToken,
  hashToken,
  MAX_PRESENTED_LENGTH,
  MAX_PROTOCOL_ENTRIES,
  MAX_QUERY_PARAMS,
  pathOf,
  presentedToken,
  queryToken,
  TOKEN_BYTES,
  TOKEN_LENGTH
} from '../lib/tokens'
import type { ConsumeOutcome, StoredToken } from '../lib/stores/types'
import {
  NoWebsocketTokenPresented,
  NoWebsocketTokenStored,
  WebsocketSecurityError,
  WebsocketTokenExpired,
  WebsocketTokenMismatch
} from '../lib/errors'

const NOW = 1_767_225_600_000
const PREFIX = 'websocket-guard.'

function record (token: string, expiresAt = NOW + 60_000, path: string | null = null): StoredToken {
  return { hash: hashToken(token), expiresAt, path }
}

t.test('generateToken: 32 random bytes, base64url without padding', async (t) => {
  t.equal(TOKEN_BYTES, 32)
  t.equal(TOKEN_LENGTH, 43)
  const seen = new Set<string>()
  for (let i = 0; i < 200; i++) {
    const token = generateToken()
    t.equal(token.length, TOKEN_LENGTH)
    t.match(token, /^[A-Za-z0-9_-]{43}$/)
    t.equal(Buffer.from(token, 'base64url').length, TOKEN_BYTES)
    seen.add(token)
  }
  t.equal(seen.size, 200, 'no repeats')
})

t.test('hashToken is SHA-256 in base64url', async (t) => {
  const token = generateToken()
  t.equal(hashToken(token), createHash('sha256').update(token).digest('base64url'))
  t.equal(hashToken(token).length, 43)
  t.equal(hashToken(token), hashToken(token))
  t.not(hashToken(token), hashToken(token + 'x'))
  t.not(hashToken(token), token, 'the hash is not the token')
})

t.test('findToken outcomes', async (t) => {
  const a = generateToken()
  const b = generateToken()
  const c = generateToken()
  t.same(findToken([], hashToken(a), '/chat', NOW), { outcome: 'none-stored', index: -1 })
  t.same(findToken([record(a)], hashToken(b), '/chat', NOW), { outcome: 'mismatch', index: -1 })
  t.same(findToken([record(a)], hashToken(a), '/chat', NOW), { outcome: 'consumed', index: 0 })
  t.same(findToken([record(a, NOW + 1)], hashToken(a), '/chat', NOW), { outcome: 'consumed', index: 0 }, 'a millisecond left')
  t.same(findToken([record(a, NOW)], hashToken(a), '/chat', NOW), { outcome: 'expired', index: 0 }, 'expires at expiresAt')
  t.same(findToken([record(a, NOW - 1)], hashToken(a), '/chat', NOW), { outcome: 'expired', index: 0 })
  t.same(findToken([record(a, NOW + 1, '/chat')], hashToken(a), '/chat', NOW), { outcome: 'consumed', index: 0 })
  t.same(findToken([record(a, NOW + 1, '/chat')], hashToken(a), '/other', NOW), { outcome: 'wrong-path', index: 0 })
  t.same(findToken([record(a, NOW + 1, '/chat')], hashToken(a), '/chat/', NOW), { outcome: 'wrong-path', index: 0 })
  t.same(findToken([record(a, NOW + 1, '/chat')], hashToken(a), '/CHAT', NOW), { outcome: 'wrong-path', index: 0 })
  t.same(findToken([record(a, NOW - 1, '/chat')], hashToken(a), '/other', NOW), { outcome: 'expired', index: 0 }, 'expired wins over wrong path')

  const records = [record(a, NOW - 1), record(b, NOW + 10, '/x'), record(c)]
  t.same(findToken(records, hashToken(a), '/x', NOW), { outcome: 'expired', index: 0 })
  t.same(findToken(records, hashToken(b), '/x', NOW), { outcome: 'consumed', index: 1 })
  t.same(findToken(records, hashToken(b), '/y', NOW), { outcome: 'wrong-path', index: 1 })
  t.same(findToken(records, hashToken(c), '/y', NOW), { outcome: 'consumed', index: 2 })
  t.same(findToken(records, hashToken(generateToken()), '/x', NOW), { outcome: 'mismatch', index: -1 })
  t.same(findToken(records, hashToken(a).slice(0, 42), '/x', NOW), { outcome: 'mismatch', index: -1 }, 'a prefix of a hash')
  t.same(findToken(records, '', '/x', NOW), { outcome: 'mismatch', index: -1 })
  t.same(findToken([{ hash: 'not base64url!', expiresAt: NOW + 1, path: null }], hashToken(a), '/x', NOW), { outcome: 'mismatch', index: -1 })
})

t.test('addToken drops expired records and evicts the oldest beyond maxTokens', async (t) => {
  const tokens = Array.from({ length: 5 }, () => generateToken())
  const fresh = record(tokens[4] as string)
  t.same(addToken([], fresh, 8, NOW), [fresh])
  const old = [record(tokens[0] as string, NOW), record(tokens[1] as string, NOW + 5), record(tokens[2] as string, NOW - 1)]
  const input = old.slice()
  t.same(addToken(old, fresh, 8, NOW), [old[1], fresh], 'expired ones gone, expiry at now counts as expired')
  t.same(old, input, 'the input array is not mutated')

  const live = tokens.slice(0, 4).map((tok) => record(tok))
  t.same(addToken(live, fresh, 4, NOW), [live[1], live[2], live[3], fresh], 'the oldest evicted')
  t.same(addToken(live, fresh, 2, NOW), [live[3], fresh])
  t.same(addToken(live, fresh, 1, NOW), [fresh])
  t.same(addToken(live, fresh, 5, NOW), [...live, fresh], 'exactly maxTokens kept')
})

t.test('assertConsumed maps outcomes to the security errors', async (t) => {
  t.doesNotThrow(() => assertConsumed('consumed'))
  const cases: Array<[ConsumeOutcome, new () => WebsocketSecurityError, string]> = [
    ['none-stored', NoWebsocketTokenStored, 'WS_GUARD_NO_TOKEN_STORED'],
    ['mismatch', WebsocketTokenMismatch, 'WS_GUARD_TOKEN_MISMATCH'],
    ['wrong-path', WebsocketTokenMismatch, 'WS_GUARD_TOKEN_MISMATCH'],
    ['expired', WebsocketTokenExpired, 'WS_GUARD_TOKEN_EXPIRED']
  ]
  for (const [outcome, Class, code] of cases) {
    t.throws(() => assertConsumed(outcome), Class, outcome)
    t.throws(() => assertConsumed(outcome), { code, statusCode: 403 }, outcome)
  }
  t.throws(() => assertConsumed('wrong-path'), { message: /bound to another path/ })
  // a custom store that answers something unknown fails closed
  t.throws(() => assertConsumed('yes' as ConsumeOutcome), WebsocketTokenMismatch)
  t.throws(() => assertConsumed(undefined as unknown as ConsumeOutcome), WebsocketTokenMismatch)
})

t.test('queryToken reads exactly one raw parameter', async (t) => {
  t.equal(queryToken('/chat', 'token'), undefined)
  t.equal(queryToken('/chat?', 'token'), undefined)
  t.equal(queryToken('/chat?token=abc', 'token'), 'abc')
  t.equal(queryToken('/chat?a=1&token=abc&b=2', 'token'), 'abc')
  t.equal(queryToken('/chat?a&b&token=abc', 'token'), 'abc', 'parameters without =')
  t.equal(queryToken('/chat?token=', 'token'), '')
  t.equal(queryToken('/chat?token', 'token'), '', 'a bare key is an empty value')
  t.equal(queryToken('/chat?token&x=1', 'token'), '')
  t.equal(queryToken('/chat?token=a=b', 'token'), 'a=b', 'only the first = splits')
  t.equal(queryToken('/chat?token=%41', 'token'), '%41', 'nothing decoded')
  t.equal(queryToken('/chat?&&token=abc&&', 'token'), 'abc')
  t.equal(queryToken('/chat?x=token=abc', 'token'), undefined, 'the name inside a value is not the param')
  for (const url of ['/chat?xtoken=abc', '/chat?token2=abc', '/chat?tok=abc', '/chat?Token=abc', '/chat?%74oken=abc', '/chat?token%3Dabc', '/chat?tokentoken=abc', '/chat?a=1&xtoken=abc']) {
    t.equal(queryToken(url, 'token'), undefined, url)
  }
  t.equal(queryToken('/chat?t=abc', 't'), 'abc', 'a custom parameter')
  t.equal(queryToken('/chat?token=abc', 't'), undefined)
  for (const url of ['/chat?token=a&token=b', '/chat?token=a&token=a', '/chat?token=a&token', '/chat?token&token', '/chat?token=&token=']) {
    t.throws(() => queryToken(url, 'token'), NoWebsocketTokenPresented, url)
  }
})

t.test('queryToken gives up on too many parameters, failing closed', async (t) => {
  const params = (n: number): string => Array.from({ length: n }, (_, i) => `p${i}=1`).join('&')
  t.equal(queryToken(`/chat?${params(MAX_QUERY_PARAMS - 1)}&token=abc`, 'token'), 'abc', 'the last allowed parameter')
  t.throws(() => queryToken(`/chat?${params(MAX_QUERY_PARAMS)}&token=abc`, 'token'), { message: /Too many query parameters/, code: 'WS_GUARD_NO_TOKEN_PRESENTED' })
  t.throws(() => queryToken(`/chat?token=abc&${params(MAX_QUERY_PARAMS)}`, 'token'), NoWebsocketTokenPresented, 'even after the token')
  // a long run of parameters without '=' (once quadratic to scan) is still read correctly
  const noEquals = Array.from({ length: MAX_QUERY_PARAMS - 2 }, () => 'x'.repeat(40)).join('&')
  t.equal(queryToken(`/chat?${noEquals}&token=abc`, 'token'), 'abc')
  t.equal(queryToken(`/chat?${noEquals}&token`, 'token'), '')
  t.equal(queryToken(`/chat?${noEquals}`, 'token'), undefined)
})

t.test('presentedToken: query transport', async (t) => {
  const token = generateToken()
  t.same(presentedToken('/chat?token=' + token, undefined, 'token', PREFIX), { token, protocols: undefined, viaProtocol: false })
  t.same(presentedToken('/chat?token=' + token, 'chat.v1, other', 'token', PREFIX), { token, protocols: 'chat.v1, other', viaProtocol: false }, 'other protocols untouched')
  t.same(presentedToken('/chat?token=' + token, 'x-websocket-guard.abc', 'token', PREFIX),
    { token, protocols: 'x-websocket-guard.abc', viaProtocol: false }, 'a protocol merely containing the prefix is not a token entry')
  t.same(presentedToken('/chat?token=' + token, 'websocket-guard', 'token', PREFIX), { token, protocols: 'websocket-guard', viaProtocol: false })
  t.same(presentedToken('/chat?t=' + token, undefined, 't', PREFIX), { token, protocols: undefined, viaProtocol: false })
})

t.test('presentedToken: subprotocol transport', async (t) => {
  const token = generateToken()
  t.same(presentedToken('/chat', `websocket-guard, websocket-guard.${token}`, 'token', PREFIX),
    { token, protocols: 'websocket-guard', viaProtocol: true })
  t.throws(() => presentedToken('/chat', `websocket-guard.${token}`, 'token', PREFIX),
    { code: 'WS_GUARD_NO_TOKEN_PRESENTED', message: /offered alone: offer the bare protocol too/ }, 'the only entry: refused, a browser would fail the connection')
  t.same(presentedToken('/chat', ` websocket-guard.${token} ,\tchat.v1 ,  websocket-guard `, 'token', PREFIX),
    { token, protocols: 'chat.v1, websocket-guard', viaProtocol: true }, 'optional whitespace around entries')
  t.same(presentedToken('/chat', `a,b,websocket-guard.${token},c`, 'token', PREFIX),
    { token, protocols: 'a, b, c', viaProtocol: true }, 'order of the others kept')
  t.same(presentedToken('/chat', `a, , websocket-guard.${token},`, 'token', PREFIX),
    { token, protocols: 'a', viaProtocol: true }, 'empty entries dropped')
  t.same(presentedToken('/chat?other=1', `p, p.${token}`, 'token', 'p.'), { token, protocols: 'p', viaProtocol: true }, 'a custom protocol')
  t.same(presentedToken('/chat?xtoken=1', `websocket-guard, websocket-guard.${token}`, 'token', PREFIX),
    { token, protocols: 'websocket-guard', viaProtocol: true }, 'xtoken= is not a token in the query')
})

t.test('presentedToken: none, empty or more than one is NoWebsocketTokenPresented', async (t) => {
  const token = generateToken()
  const cases: Array<[string, string | undefined]> = [
    ['/chat', undefined],
    ['/chat', 'websocket-guard'],
    ['/chat', 'chat.v1, other'],
    ['/chat', ''],
    ['/chat?token=', undefined],
    ['/chat?token', undefined],
    ['/chat?token=', 'websocket-guard'],
    ['/chat', 'websocket-guard.'],
    ['/chat', 'websocket-guard, websocket-guard.'],
    ['/chat', 'websocket-guard.  '],
    [`/chat?token=${token}&token=${token}`, undefined],
    ['/chat', `websocket-guard.${token}, websocket-guard.${token}`],
    ['/chat', `websocket-guard.a, websocket-guard.b`],
    [`/chat?token=${token}`, `websocket-guard.${token}`],
    ['/chat?token=', `websocket-guard.${token}`],
    ['/chat?token', `websocket-guard.${token}`],
    ['/chat?xtoken=a&token2=b', undefined]
  ]
  for (const [url, protocols] of cases) {
    t.throws(() => presentedToken(url, protocols, 'token', PREFIX), NoWebsocketTokenPresented, `${url} ${JSON.stringify(protocols)}`)
  }
})

t.test('presentedToken bounds hostile input', async (t) => {
  const long = 'a'.repeat(MAX_PRESENTED_LENGTH + 1)
  const max = 'a'.repeat(MAX_PRESENTED_LENGTH)
  t.equal(presentedToken('/chat?token=' + max, undefined, 'token', PREFIX).token, max, 'the longest accepted value')
  t.throws(() => presentedToken('/chat?token=' + long, undefined, 'token', PREFIX), { code: 'WS_GUARD_TOKEN_MISMATCH', message: /too long/ })
  t.throws(() => presentedToken('/chat', 'websocket-guard, websocket-guard.' + long, 'token', PREFIX), WebsocketTokenMismatch)
  t.throws(() => presentedToken('/chat?token=' + 'a'.repeat(1_000_000), undefined, 'token', PREFIX), WebsocketTokenMismatch)

  const entries = (n: number): string => Array.from({ length: n }, (_, i) => `p${i}`).join(', ')
  const token = generateToken()
  t.same(presentedToken('/chat', `${entries(MAX_PROTOCOL_ENTRIES - 1)}, websocket-guard.${token}`, 'token', PREFIX).token, token, 'the last allowed entry')
  t.throws(() => presentedToken('/chat', `${entries(MAX_PROTOCOL_ENTRIES)}, websocket-guard.${token}`, 'token', PREFIX),
    { code: 'WS_GUARD_NO_TOKEN_PRESENTED', message: /Too many subprotocol entries/ })
  t.throws(() => presentedToken('/chat', `websocket-guard.${token},${','.repeat(100_000)}`, 'token', PREFIX), NoWebsocketTokenPresented)
})

t.test('pathOf is the request target without its query', async (t) => {
  t.equal(pathOf('/chat'), '/chat')
  t.equal(pathOf('/chat?token=abc'), '/chat')
  t.equal(pathOf('/chat?'), '/chat')
  t.equal(pathOf('/a/b?x?y'), '/a/b')
})
