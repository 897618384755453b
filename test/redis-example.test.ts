// examples/cluster, as a user runs it (the built package, instances in their own processes,
// a round-robin balancer in front): a token fetched through one instance opens on another,
// once. Needs `npm run build` first, as `npm test` does.
import t from 'tap'
import WebSocket from 'ws'
import { Client, close } from './helpers/app'
import { redisSkip, startRedis } from './helpers/redis'

// eslint-disable-next-line @typescript-eslint/no-require-imports
const { startCluster } = require('../examples/cluster/index.js')

/** Opens a socket and resolves with its first message (the instance's welcome). */
function welcome (url: string, cookie: string): Promise<any> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url, { headers: { cookie, origin: new URL(url.replace(/^ws/, 'http')).origin } })
    socket.once('message', (data) => {
      socket.close()
      resolve(JSON.parse(String(data)))
    })
    socket.once('unexpected-response', (_req, res) => {
      socket.terminate()
      reject(new Error(`upgrade refused with ${String(res.statusCode)}`))
    })
    socket.once('error', reject)
  })
}

// the example's instances pick node-redis or ioredis for their tokens
for (const kind of ['node-redis', 'ioredis']) {
  t.test(`examples/cluster with tokens through ${kind}`, { skip: redisSkip(t) }, async (t) => {
    const redis = await startRedis(t)
    const cluster = await startCluster({ port: 0, redisUrl: redis.url, tokenClient: kind === 'ioredis' ? 'ioredis' : 'redis' })
    t.teardown(() => cluster.close())
    t.equal(cluster.instances.length, 2)

    const page = await fetch(cluster.url + '/')
    t.equal(page.status, 200)
    t.match(await page.text(), /One token, any instance, once/)

    // the balancer alternates: the token request and the upgrade reach different instances
    const user = new Client(cluster.url)
    const issued = await user.getToken()
    t.equal(issued.status, 200)
    const hello = await welcome(cluster.url.replace(/^http/, 'ws') + '/chat?token=' + String(issued.body.token), user.cookie)
    t.equal(hello.type, 'welcome')
    t.match(issued.headers.get('x-instance'), /^[ab]$/)
    t.not(hello.instance, issued.headers.get('x-instance'), 'issued by one instance, opened on the other')
    const replay = await user.connect('/chat?token=' + String(issued.body.token))
    t.equal(replay.status, 403)

    const token = await user.token()
    const results = await Promise.all(Array.from({ length: 16 }, () => user.connect('/chat?token=' + token)))
    t.equal(results.filter((r) => r.opened).length, 1, 'one of 16 simultaneous upgrades opened')
    await Promise.all(results.map(close))
  })
}
