import t from 'tap'
import { buildApp, Client, close } from './helpers/app'

t.test('smoke', async (t) => {
  const { base, opened, rejections } = await buildApp(t)
  const client = new Client(base)
  const token = await client.token()
  t.equal(token.length, 43)
  const r = await client.connect('/chat?token=' + token)
  t.equal(r.opened, true)
  await close(r)
  const again = await client.connect('/chat?token=' + token)
  t.equal(again.status, 403)
  t.same(again.body.code, 'WS_GUARD_NO_TOKEN_STORED')
  const t2 = await client.token()
  const p = await client.connect('/chat', { protocols: ['websocket-guard', 'websocket-guard.' + t2] })
  t.equal(p.opened, true)
  t.equal(p.protocol, 'websocket-guard')
  await close(p)
  t.equal(opened.length, 2)
  t.equal(rejections.length, 1)
  console.error(JSON.stringify(again.body), JSON.stringify(opened))
})
