// The error classes (API.md "Result and errors"): hierarchy, stable codes, status, names.
import t from 'tap'
import {
  NoWebsocketTokenPresented,
  NoWebsocketTokenStored,
  WebsocketGuardBadRequest,
  WebsocketGuardStoreUnavailable,
  WebsocketOriginNotAllowed,
  WebsocketSecurityError,
  WebsocketTokenExpired,
  WebsocketTokenMismatch
} from '../lib/errors'

t.test('error classes: hierarchy, codes, status, names', async (t) => {
  const cases: Array<[new (message?: string) => WebsocketSecurityError, string, string]> = [
    [WebsocketOriginNotAllowed, 'WebsocketOriginNotAllowed', 'WS_GUARD_ORIGIN_NOT_ALLOWED'],
    [NoWebsocketTokenPresented, 'NoWebsocketTokenPresented', 'WS_GUARD_NO_TOKEN_PRESENTED'],
    [NoWebsocketTokenStored, 'NoWebsocketTokenStored', 'WS_GUARD_NO_TOKEN_STORED'],
    [WebsocketTokenMismatch, 'WebsocketTokenMismatch', 'WS_GUARD_TOKEN_MISMATCH'],
    [WebsocketTokenExpired, 'WebsocketTokenExpired', 'WS_GUARD_TOKEN_EXPIRED']
  ]
  const codes = new Set<string>()
  for (const [Class, name, code] of cases) {
    const error = new Class()
    t.ok(error instanceof Class, name)
    t.ok(error instanceof WebsocketSecurityError, `${name} extends WebsocketSecurityError`)
    t.ok(error instanceof Error)
    t.equal(error.name, name)
    t.equal(error.code, code)
    t.equal(error.statusCode, 403)
    t.type(error.message, 'string')
    t.not(error.message, '')
    t.match(String(error), new RegExp(`^${name}: `))
    t.equal(new Class('custom').message, 'custom')
    codes.add(code)
    for (const [Other] of cases) if (Other !== Class) t.notOk(error instanceof Other, `${name} is not a ${Other.name}`)
  }
  t.equal(codes.size, 5)
  const base = new WebsocketSecurityError()
  t.equal(base.name, 'WebsocketSecurityError')
  t.equal(base.statusCode, 403)
  t.equal(base.code, 'WS_GUARD_SECURITY_ERROR')
  t.ok(base instanceof Error)
  t.equal(new WebsocketSecurityError('why').message, 'why')

  // not security verdicts: neither is a WebsocketSecurityError
  const cause = new Error('ECONNREFUSED')
  const down = new WebsocketGuardStoreUnavailable(undefined, { cause })
  t.equal(down.statusCode, 503)
  t.equal(down.code, 'WS_GUARD_STORE_UNAVAILABLE')
  t.equal(down.name, 'WebsocketGuardStoreUnavailable')
  t.equal(down.cause, cause)
  t.not(down.message, '')
  t.notOk(down instanceof WebsocketSecurityError)
  t.equal(new WebsocketGuardStoreUnavailable('slow').message, 'slow')
  const bad = new WebsocketGuardBadRequest('bad path')
  t.equal(bad.statusCode, 400)
  t.equal(bad.code, 'WS_GUARD_BAD_REQUEST')
  t.equal(bad.name, 'WebsocketGuardBadRequest')
  t.equal(bad.message, 'bad path')
  t.notOk(bad instanceof WebsocketSecurityError)
})
