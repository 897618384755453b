// A user's callback may throw, reject or hang: none of that crashes the process, opens a
// socket or leaks into a response. onReject gets the URL with tokens redacted.
import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { Writable } from 'node:stream'
import { buildApp, Client, close } from './helpers/app'

function capture (): { logs: any[], stream: Writable } {
  const logs: any[] = []
  return { logs, stream: new Writable({ write (chunk, _enc, cb) { logs.push(JSON.parse(chunk.toString())); cb() } }) }
}

t.test('an async onReject that rejects, or a sync one that throws, is logged at error and changes nothing', async (t) => {
  for (const kind of ['rejects', 'throws', 'hangs'] as const) {
    const { logs, stream } = capture()
    const { base } = await buildApp(t, {
      fastify: { logger: { level: 'warn', stream } },
      guard: {
        onReject: kind === 'rejects'
          ? async () => { throw new Error('audit sink down') }
          : kind === 'throws'
            ? () => { throw new Error('audit sink down') }
            : async () => await new Promise<void>(() => {})
      }
    })
    const client = new Client(base)
    for (let i = 0; i < 3; i++) {
      const r = await client.connect('/chat', { origin: 'https://evil.example' })
      t.equal(r.status, 403, `${kind}: still a 403`)
      t.equal(r.body.code, 'WS_GUARD_ORIGIN_NOT_ALLOWED')
      t.notMatch(JSON.stringify(r.body), /audit sink/, 'the callback error is not in the body')
    }
    const ok = await client.connect('/chat?token=' + await client.token())
    t.equal(ok.opened, true, `${kind}: the server still serves`)
    await close(ok)
    await sleep(20)
    const errors = logs.filter((l) => l.level === 50 && /onReject/.test(l.msg))
    t.equal(errors.length, kind === 'hangs' ? 0 : 3, `${kind}: one error line per failure`)
    if (kind !== 'hangs') t.match(errors[0].err.message, 'audit sink down')
  }
})

t.test('onReject gets { url } with the token redacted, while request.url still holds it', async (t) => {
  const seen: Array<{ url: string, raw: string }> = []
  const { base } = await buildApp(t, {
    guard: { onReject (_error, request, details) { seen.push({ url: details.url, raw: request.url }) } },
    setup (app) { app.get('/other', { websocket: true, guard: { origins: ['https://nowhere.example'] } }, () => {}) }
  })
  const client = new Client(base)
  const token = await client.token()
  await client.connect(`/other?a=1&token=${token}&b=2`)
  await client.connect('/other', { protocols: ['websocket-guard', 'websocket-guard.' + token] })
  t.equal(seen.length, 2)
  t.equal(seen[0]?.url, '/other?a=1&token=[REDACTED]&b=2')
  t.equal(seen[0]?.raw, `/other?a=1&token=${token}&b=2`, 'request.url is the raw URL: do not log it')
  t.notOk(JSON.stringify(seen.map((s) => s.url)).includes(token), 'no token in any details.url')
  const r = await client.connect('/chat?token=' + token)
  t.equal(r.opened, true, 'the refused requests did not consume the token')
  await close(r)
})

t.test('an origins function that throws or rejects refuses with 403; its error is logged, never sent', async (t) => {
  for (const kind of ['throws', 'rejects', 'non-boolean'] as const) {
    const { logs, stream } = capture()
    const { base, rejections } = await buildApp(t, {
      fastify: { logger: { level: 'warn', stream } },
      guard: {
        origins: kind === 'throws'
          ? () => { throw new Error('secret origin db detail') }
          : kind === 'rejects'
            ? async () => { throw new Error('secret origin db detail') }
            : (() => 'yes') as unknown as () => boolean
      }
    })
    const client = new Client(base)
    const tokenRes = await client.getToken('', { origin: base })
    t.equal(tokenRes.status, 403, `${kind}: the token route refuses too`)
    const r = await client.connect('/chat?token=x')
    t.equal(r.status, 403, `${kind}: 403`)
    t.equal(r.body.code, 'WS_GUARD_ORIGIN_NOT_ALLOWED')
    t.notMatch(JSON.stringify(r.body), /secret origin/, 'not in the body')
    t.ok(rejections.some((x) => x.code === 'WS_GUARD_ORIGIN_NOT_ALLOWED'), 'onReject was called')
    if (kind !== 'non-boolean') {
      t.ok(logs.some((l) => l.level === 50 && l.err?.message === 'secret origin db detail'), 'logged at error')
    }
  }
})

t.test('an origins function that never settles fails closed with 503 after storeTimeout', async (t) => {
  const { base, rejections } = await buildApp(t, { guard: { origins: async () => await new Promise<boolean>(() => {}), storeTimeout: 100 } })
  const client = new Client(base)
  const started = Date.now()
  const r = await client.connect('/chat?token=x')
  t.equal(r.status, 503)
  t.equal(r.body.code, 'WS_GUARD_STORE_UNAVAILABLE')
  t.match(r.body.message, /origins function did not answer within 100 ms/)
  t.ok(Date.now() - started >= 90, 'it waited for the deadline')
  t.same(rejections.map((x) => x.code), ['WS_GUARD_STORE_UNAVAILABLE'])
})
