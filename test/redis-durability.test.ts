// Spent tokens and failover, shown both ways. A primary and a replica whose replication link
// runs through a TCP proxy the test holds (pausing the replica's process is not enough: a
// command already in its socket buffer is applied on resume); the app instances reach the
// primary through a second proxy, the address a failover moves, as a virtual IP or a DNS name
// would. Each round consumes a token, kills the primary with the link held, promotes the
// replica and replays the token.
import t, { type Test } from 'tap'
import { redisTokenStore, type RedisDurability } from '../lib/index'
import { Client, close, type ConnectResult } from './helpers/app'
import {
  APP_ORIGIN, buildInstance, inSync, redisClient, redisSkip, replicasOnline, startProxy, startRedis,
  type ClientKind, type Instance, type Proxy, type RedisServer
} from './helpers/redis'

const ROUNDS = 20

interface Pair {
  /** what the app connects to */
  front: Proxy
  /** the replication link */
  link: Proxy
  primary: RedisServer
  replica: RedisServer
  /** kills the primary with whatever the link holds, promotes the replica, brings the old primary back as its replica, moves the front */
  failover (): Promise<void>
}

async function startPair (t: Test): Promise<Pair> {
  // A diskless sync streams the commands that follow it only from the replica's first
  // acknowledgement, which it sends once a second; a sync through a file (tiny here) at once
  const sync = ['--repl-diskless-sync', 'no']
  const first = await startRedis(t, sync)
  const link = await startProxy(t, first.port)
  const replicaOf = [...sync, '--replicaof', '127.0.0.1', String(link.port)]
  const second = await startRedis(t, replicaOf)
  const front = await startProxy(t, first.port)
  await replicasOnline(first.port)
  const pair: Pair = {
    front,
    link,
    primary: first,
    replica: second,
    async failover () {
      const { primary, replica } = pair
      await primary.kill()
      link.cut()
      await replica.command('REPLICAOF', 'NO', 'ONE')
      // the old primary comes back empty, as a replica of the new one: acknowledgements again
      link.retarget(replica.port)
      link.resume()
      await primary.restart(replicaOf)
      await replicasOnline(replica.port)
      front.retarget(replica.port)
      front.cut()
      pair.primary = replica
      pair.replica = primary
    }
  }
  return pair
}

/** Two instances (tokens through node-redis on one, ioredis on the other), both reaching the pair's front. */
async function instances (t: Test, pair: Pair, durability?: RedisDurability): Promise<Instance[]> {
  const out: Instance[] = []
  for (const kind of ['node-redis', 'ioredis'] as ClientKind[]) {
    // reconnect at once: the test moves the front faster than a default backoff would notice
    const { client } = await redisClient(t, kind, `redis://127.0.0.1:${pair.front.port}`, { reconnectEvery: 20 })
    out.push(await buildInstance(t, {
      sessions: 'secure-session',
      store: redisTokenStore({ client, ...(durability === undefined ? {} : { durability }) }),
      guard: { storeTimeout: 3000 }
    }))
  }
  return out
}

/** Connects, again while the store is unavailable (the instance's client still reconnecting). */
async function connectOnceReachable (user: Client, url: string): Promise<ConnectResult> {
  const end = Date.now() + 15_000
  for (;;) {
    const result = await user.connect(url)
    if (result.status !== 503 || Date.now() > end) return result
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

t.test('without durability, a failover right after a consume brings the token back', { skip: redisSkip(t) }, async (t) => {
  const pair = await startPair(t)
  const apps = await instances(t, pair)
  let reopened = 0
  for (let round = 0; round < ROUNDS; round++) {
    const app = apps[round % 2] as Instance
    const user = new Client(app.base, APP_ORIGIN)
    const token = await user.token()
    await inSync(pair.primary, pair.replica)
    pair.link.pause()
    const first = await user.connect('/chat?token=' + token)
    t.equal(first.opened, true, `round ${round}: opens`)
    await close(first)
    await pair.failover()
    const replay = await connectOnceReachable(user, '/chat?token=' + token)
    if (replay.opened) reopened++
    await close(replay)
  }
  t.equal(reopened, ROUNDS, `the spent token opened again after ${reopened} of ${ROUNDS} failovers`)
})

t.test('with durability: { replicas: 1 }, a token that opened never opens again after a failover', { skip: redisSkip(t) }, async (t) => {
  const pair = await startPair(t)
  const apps = await instances(t, pair, { replicas: 1, timeout: 300 })
  let refused = 0
  let unavailable = 0
  let heldOpened = 0
  for (let round = 0; round < ROUNDS; round++) {
    const app = apps[round % 2] as Instance
    const user = new Client(app.base, APP_ORIGIN)
    const acked = await user.token()
    const held = await user.token()
    await inSync(pair.primary, pair.replica)
    // the replica acknowledges this consume: it opens
    const first = await user.connect('/chat?token=' + acked)
    t.equal(first.opened, true, `round ${round}: an acknowledged consume opens`)
    await close(first)
    // no replica can acknowledge this one: 503, nothing opens (the token is spent on the primary)
    pair.link.pause()
    const lost = await user.connect('/chat?token=' + held)
    t.equal(lost.opened, false, `round ${round}: an unacknowledged consume opens nothing`)
    if (lost.status === 503 && lost.body.code === 'WS_GUARD_STORE_UNAVAILABLE') unavailable++
    await pair.failover()
    const replay = await connectOnceReachable(user, '/chat?token=' + acked)
    if (!replay.opened && replay.status === 403) refused++
    await close(replay)
    // the replica never learnt that the held token was spent: it may open, once in all
    const again = [await connectOnceReachable(user, '/chat?token=' + held), await user.connect('/chat?token=' + held)]
    const opens = again.filter((r) => r.opened).length
    heldOpened += opens
    t.ok(opens <= 1, `round ${round}: the unacknowledged token opened ${opens} time(s) after the failover`)
    t.equal(again[1]?.opened, false)
    await Promise.all(again.map(close))
  }
  t.equal(refused, ROUNDS, `an acknowledged token was refused after ${refused} of ${ROUNDS} failovers`)
  t.equal(unavailable, ROUNDS, `an unacknowledged consume answered 503 in ${unavailable} of ${ROUNDS} rounds`)
  t.comment(`the unacknowledged tokens opened ${heldOpened} time(s) in ${ROUNDS} rounds, at most once each`)
})
