// Origin allow-lists (API.md "Origins"): what matches, what is refused at creation, and the
// hostile origins that must never match whatever the list.
import t from 'tap'
import { createOriginMatcher, normaliseOrigin, MAX_ORIGIN_LENGTH, type OriginEntry } from '../lib/origin'

function matcher (origins: OriginEntry | OriginEntry[]): (origin: string) => boolean {
  return createOriginMatcher(origins)
}

t.test('normaliseOrigin lower-cases scheme and host and drops default ports only', async (t) => {
  t.equal(normaliseOrigin('https://app.example.com'), 'https://app.example.com')
  t.equal(normaliseOrigin('HTTPS://App.Example.COM'), 'https://app.example.com')
  t.equal(normaliseOrigin('https://app.example.com:443'), 'https://app.example.com')
  t.equal(normaliseOrigin('http://app.example.com:80'), 'http://app.example.com')
  t.equal(normaliseOrigin('HTTP://localhost:80'), 'http://localhost')
  // a default port belongs to its own scheme only
  t.equal(normaliseOrigin('http://app.example.com:443'), 'http://app.example.com:443')
  t.equal(normaliseOrigin('https://app.example.com:80'), 'https://app.example.com:80')
  t.equal(normaliseOrigin('https://app.example.com:8443'), 'https://app.example.com:8443')
  t.equal(normaliseOrigin('http://127.0.0.1:3000'), 'http://127.0.0.1:3000')
  t.equal(normaliseOrigin('http://[::1]:80'), 'http://[::1]')
  t.equal(normaliseOrigin('http://[FE80::1]:8080'), 'http://[fe80::1]:8080')
  t.equal(normaliseOrigin('chrome-extension://abcdef'), 'chrome-extension://abcdef')
  t.equal(normaliseOrigin('https://app.example.com:65535'), 'https://app.example.com:65535')
  t.equal(normaliseOrigin('https://app.example.com:1'), 'https://app.example.com:1')
})

t.test('normaliseOrigin refuses anything that is not scheme://host[:port]', async (t) => {
  const refused = [
    '', 'null', 'app.example.com', '//app.example.com', 'https://', 'https:app.example.com',
    'https://app.example.com/', 'https://app.example.com/chat', 'https://app.example.com?x',
    'https://app.example.com#x', 'https://user@app.example.com', 'https://user:pw@app.example.com',
    'https://app.example.com.', 'https://app..example.com', 'https://.app.example.com',
    'https://app.example.com:', 'https://app.example.com:0', 'https://app.example.com:0443',
    'https://app.example.com:65536', 'https://app.example.com:999999', 'https://app.example.com:-1',
    'https://app%2eexample.com', 'https://exämple.com', ' https://app.example.com',
    'https://app.example.com ', 'https://app.example.com\t', 'https://app.example.com\n',
    'https://app.example.com\r\n', 'https://app.example.com\u0000', 'https://[::1', 'https://[]',
    'https://app.example.com, https://evil.io', '1https://app.example.com',
    'https://' + 'a'.repeat(MAX_ORIGIN_LENGTH)
  ]
  for (const origin of refused) t.equal(normaliseOrigin(origin), null, JSON.stringify(origin))
  // exactly at the limit is still parsed: the bound is not off by one
  const atLimit = 'https://' + 'a'.repeat(MAX_ORIGIN_LENGTH - 8)
  t.equal(atLimit.length, MAX_ORIGIN_LENGTH)
  t.equal(normaliseOrigin(atLimit), atLimit)
  t.equal(normaliseOrigin(atLimit + 'a'), null)
  for (const value of [undefined, null, 42, ['https://app.example.com'], { toString: () => 'https://app.example.com' }]) {
    t.equal(normaliseOrigin(value as unknown as string), null, `non-string ${typeof value}`)
  }
})

t.test('exact entries match their origin, normalised on both sides', async (t) => {
  const match = matcher(['HTTPS://App.Example.com:443/', 'http://localhost:3000'])
  t.equal(match('https://app.example.com'), true)
  t.equal(match('https://APP.example.COM'), true)
  t.equal(match('HTTPS://app.example.com:443'), true)
  t.equal(match('http://localhost:3000'), true)
  t.equal(match('http://LOCALHOST:3000'), true)
  t.equal(match('http://localhost'), false)
  t.equal(match('http://localhost:3001'), false)
  t.equal(match('https://localhost:3000'), false)

  const single = matcher('https://app.example.com')
  t.equal(single('https://app.example.com'), true)
  t.equal(single('https://other.example.com'), false)

  const http = matcher('http://app.example.com:80')
  t.equal(http('http://app.example.com'), true)
  t.equal(http('http://app.example.com:80'), true)
  t.equal(http('https://app.example.com'), false)
})

t.test('hostile origins never match an exact entry', async (t) => {
  const match = matcher(['https://app.example.com', 'http://127.0.0.1:8080', 'https://xn--exmple-cua.com'])
  t.equal(match('https://app.example.com'), true, 'the allowed origin itself')
  t.equal(match('http://127.0.0.1:8080'), true)
  t.equal(match('https://xn--exmple-cua.com'), true)
  const attacks = [
    // suffix / prefix tricks
    'https://app.example.com.evil.io', 'https://evilapp.example.com', 'https://app.example.comevil.io',
    'https://evil.io/https://app.example.com', 'https://app.example.co', 'https://pp.example.com',
    'https://xapp.example.com', 'https://a.app.example.com',
    // scheme swap, port change
    'http://app.example.com', 'wss://app.example.com', 'ws://app.example.com',
    'https://app.example.com:444', 'https://app.example.com:8443', 'http://127.0.0.1', 'http://127.0.0.1:80',
    'https://127.0.0.1:8080',
    // the opaque origin, empty
    'null', 'NULL', '',
    // user-info, path, query, fragment
    'https://user@app.example.com', 'https://app.example.com@evil.io', 'https://evil.io@app.example.com',
    'https://app.example.com:443@evil.io', 'https://app.example.com/', 'https://app.example.com//',
    'https://app.example.com/chat', 'https://app.example.com?', 'https://app.example.com?a=b',
    'https://app.example.com#', 'https://app.example.com#x',
    // trailing dot, percent-encoding, backslashes
    'https://app.example.com.', 'https://app%2eexample.com', 'https://app.example%2ecom',
    'https://%61pp.example.com', 'https://app.example.com%2f', 'https:\\\\app.example.com',
    // IDN: the Unicode form of an allowed punycode host is not converted
    'https://exämple.com', 'https://EXÄMPLE.com', 'https://аpp.example.com',
    // numeric IP forms are not rewritten
    'http://2130706433:8080', 'http://0x7f.0.0.1:8080', 'http://0177.0.0.1:8080', 'http://127.1:8080',
    'http://127.000.000.001:8080', 'http://[::ffff:127.0.0.1]:8080',
    // whitespace, nothing is trimmed
    ' https://app.example.com', 'https://app.example.com ', '\thttps://app.example.com',
    'https://app.example.com\t', 'https://app.example.com\n', 'https:// app.example.com',
    // ports: 0, leading zeros, out of range
    'https://app.example.com:0', 'https://app.example.com:0443', 'https://app.example.com:00443',
    'http://127.0.0.1:08080', 'http://127.0.0.1:73616', 'https://app.example.com:65979',
    // several origins in one header
    'https://app.example.com, https://evil.io', 'https://app.example.com https://evil.io',
    // overlong
    'https://app.example.com' + ':443'.repeat(600), 'https://' + 'a.'.repeat(MAX_ORIGIN_LENGTH) + 'app.example.com'
  ]
  for (const origin of attacks) t.equal(match(origin), false, JSON.stringify(origin))
  for (const value of [undefined, null, 0, 1, true, {}, ['https://app.example.com'], { toString: () => 'https://app.example.com' }]) {
    t.equal(match(value as unknown as string), false, `non-string ${JSON.stringify(value)}`)
  }
})

t.test('wildcards stand for one or more whole labels, with scheme and port matched', async (t) => {
  const match = matcher('https://*.example.com')
  t.equal(match('https://a.example.com'), true)
  t.equal(match('https://a.b.example.com'), true)
  t.equal(match('https://A.Example.COM'), true)
  t.equal(match('https://a.example.com:443'), true)
  t.equal(match('https://x-1_y.example.com'), true)
  const never = [
    'https://example.com', 'https://.example.com', 'https://evilexample.com', 'https://a.evilexample.com',
    'https://a.example.com.evil.io', 'https://a.example.com.', 'https://a.example.co', 'https://a.example.comm',
    'http://a.example.com', 'https://a.example.com:8443', 'https://a.example.com/', 'https://user@a.example.com',
    'https://a.example.com?x', 'https://a%2eexample.com', 'https://evil.io/.example.com', 'null', '',
    'https://a.example.com ', 'https://ä.example.com', 'wss://a.example.com'
  ]
  for (const origin of never) t.equal(match(origin), false, JSON.stringify(origin))

  const withPort = matcher(['http://*.example.com:8080/', 'HTTPS://*.Example.org:443'])
  t.equal(withPort('http://a.example.com:8080'), true)
  t.equal(withPort('http://a.b.example.com:8080'), true)
  t.equal(withPort('http://a.example.com'), false)
  t.equal(withPort('http://a.example.com:80'), false)
  t.equal(withPort('http://a.example.com:8081'), false)
  t.equal(withPort('https://a.example.com:8080'), false)
  t.equal(withPort('http://example.com:8080'), false)
  t.equal(withPort('http://a.example.com:8080.evil.io'), false)
  t.equal(withPort('https://a.example.org'), true)
  t.equal(withPort('https://example.org'), false)

  const local = matcher('http://*.localhost:3000')
  t.equal(local('http://app.localhost:3000'), true)
  t.equal(local('http://localhost:3000'), false)
})

t.test('RegExp entries are tested against the normalised origin, anchored only', async (t) => {
  const match = matcher([/^https:\/\/(app|admin)\.example\.com$/, /^http:\/\/localhost:\d+$/i])
  t.equal(match('https://app.example.com'), true)
  t.equal(match('HTTPS://ADMIN.example.com:443'), true, 'normalised before the test')
  t.equal(match('https://app.example.com.evil.io'), false)
  t.equal(match('https://app.example.com/'), false, 'an unparsable origin never reaches the RegExp')
  t.equal(match('http://localhost:5173'), true)
  t.equal(match('http://localhost'), false)
  t.equal(match('https://app.example.com:8443'), false)

  const pass = (re: RegExp): void => { t.doesNotThrow(() => matcher(re), String(re)) }
  const refuse = (re: RegExp, reason: RegExp): void => {
    t.throws(() => matcher(re), { name: 'TypeError', message: reason }, String(re))
  }
  pass(/^https:\/\/a\.example\.com$/)
  pass(/^https:\/\/a\.example\.com\\$/) // an escaped backslash, then a real end anchor
  pass(/^(?:a|b)$/)
  pass(/^[|]x$/)
  pass(/^\|x$/)
  pass(/^[\]|]$/)
  pass(/^[(|]$/)
  refuse(/https:\/\/app\.example\.com/, /^origins: .*anchored/)
  refuse(/^https:\/\/app\.example\.com/, /anchored/)
  refuse(/https:\/\/app\.example\.com$/, /anchored/)
  refuse(/^https:\/\/app\.example\.com\$/, /anchored/)
  refuse(/^https:\/\/app\.example\.com\\\$/, /anchored/)
  refuse(/^https:\/\/a\.example\.com|https:\/\/b\.example\.com$/, /top-level \|/)
  refuse(/^a$|^b$/, /top-level \|/)
  refuse(/^(a)|(b)$/, /top-level \|/)
  refuse(/^[a]|b$/, /top-level \|/)
  refuse(/^https:\/\/app\.example\.com$/m, /^origins: .*m flag/)

  const unanchored = /example\.com/
  t.throws(() => matcher(unanchored), /origins/)
})

t.test('a RegExp with g or y never leaks lastIndex between calls', async (t) => {
  for (const flags of ['g', 'y', 'gy', 'gi']) {
    const re = new RegExp('^https://app\\.example\\.com$', flags)
    const match = matcher(re)
    for (let i = 0; i < 4; i++) t.equal(match('https://app.example.com'), true, `${flags} call ${i}`)
    t.equal(match('https://evil.io'), false)
    t.equal(match('https://app.example.com'), true)
    // the user's own RegExp object is left alone, and changing it later changes nothing
    t.equal(re.lastIndex, 0)
    re.lastIndex = 5
    t.equal(match('https://app.example.com'), true)
  }
})

t.test('createOriginMatcher refuses what could never be right', async (t) => {
  const refuse = (origins: unknown, message: RegExp, what: string): void => {
    t.throws(() => createOriginMatcher(origins as OriginEntry[]), { name: 'TypeError', message }, what)
  }
  refuse([], /^origins: .*empty/, 'empty list')
  refuse('*', /^origins: .*every site/, 'bare *')
  refuse(['https://app.example.com', '*'], /^origins: /, 'bare * in a list')
  refuse(() => true, /^origins: .*function/, 'a function')
  refuse([() => true], /^origins: .*got function/, 'a function entry')
  refuse([42], /^origins: .*got number/, 'number entry')
  refuse(42, /^origins: .*got number/, 'number')
  refuse(null, /^origins: .*got object/, 'null')
  refuse(undefined, /^origins: .*got undefined/, 'undefined')
  refuse([{}], /^origins: .*got object/, 'object entry')
  const malformed = [
    '', 'null', 'app.example.com', 'https://', 'https:///', 'https://app.example.com/chat',
    'https://app.example.com//', 'https://app.example.com?x', 'https://user@app.example.com',
    'https://app.example.com:0', 'https://app.example.com:65536', 'https://app.example.com:080',
    ' https://app.example.com', 'https://app.example.com.', 'https://exämple.com', 'https://a*.example.com',
    'https://*example.com', 'https://*.*.example.com', 'https://a.*.example.com', '*.example.com',
    'https://*', 'https://*.', 'https://*.example.com.', 'https://*.example.com/chat'
  ]
  for (const entry of malformed) refuse([entry], /^origins: /, JSON.stringify(entry))
  refuse(['https://app.example.com/chat'], /^origins: "https:\/\/app\.example\.com\/chat" is not an origin/, 'message quotes the entry')
  refuse(['https://*.com'], /^origins: wildcard .* top-level domain/, 'a whole TLD')
  refuse(['https://*.COM:443'], /top-level domain/, 'a whole TLD, any case')
  refuse(['https://*.example.com:65536'], /^origins: invalid port/, 'wildcard port out of range')
  refuse(['https://*.example.com:0'], /^origins: /, 'wildcard port 0')
})

t.test('one bad entry refuses the whole list, and lists mix all three kinds', async (t) => {
  t.throws(() => createOriginMatcher(['https://a.example.com', 'https://b.example.com/x']), /origins/)
  const match = createOriginMatcher(['https://a.example.com', 'https://*.b.example.com', /^https:\/\/c\.example\.com$/])
  t.equal(match('https://a.example.com'), true)
  t.equal(match('https://x.b.example.com'), true)
  t.equal(match('https://c.example.com'), true)
  t.equal(match('https://b.example.com'), false)
  t.equal(match('https://d.example.com'), false)
})
