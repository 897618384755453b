'use strict'
// The close bus's channel in a Redis Cluster: plain PUBLISH (every node forwards it to every
// other over the cluster bus) against sharded SPUBLISH (Redis 7: only the channel's shard, its
// primary and replicas), measured as the time from sending a message to a subscriber on
// another node receiving it, one message at a time. Informative: no goal.
const IORedis = require('ioredis')
const { startCluster, command } = require('../scripts/redis')
const { percentile } = require('./common')

const CHANNEL = 'ws-guard:closes'

/** p50 / p99 (µs) of `ops` messages sent by `publish` until `subscriber` heard each one. */
async function deliveries (publisher, subscriber, verb, ops) {
  const times = []
  let heard = null
  subscriber.on(verb === 'PUBLISH' ? 'message' : 'smessage', () => heard?.())
  await (verb === 'PUBLISH' ? subscriber.subscribe(CHANNEL) : subscriber.ssubscribe(CHANNEL))
  for (let i = 0; i < ops + 50; i++) {
    const got = new Promise((resolve) => { heard = resolve })
    const start = process.hrtime.bigint()
    await publisher.call(verb, CHANNEL, String(i))
    await got
    // the first 50 warm up
    if (i >= 50) times.push(Number(process.hrtime.bigint() - start) / 1000)
  }
  return { p50: percentile(times, 50), p99: percentile(times, 99) }
}

const figure = {
  title: 'Close bus in a 3+3 Redis Cluster: delivery to a subscriber on another node, p50 / p99 (PUBLISH vs SPUBLISH)',
  goal: null,
  async run (ctx = {}) {
    const ops = ctx.quick ? 300 : 3000
    const cluster = await startCluster()
    const open = []
    const connect = (node) => {
      const c = new IORedis({ host: '127.0.0.1', port: node.port })
      c.on('error', () => {})
      open.push(c)
      return c
    }
    try {
      const slot = Number(await command(cluster.nodes[0].port, ['CLUSTER', 'KEYSLOT', CHANNEL]))
      const { primary, replicas } = await cluster.shard(slot)
      const other = (await cluster.shard((slot + 8192) % 16384)).primary
      const cases = [
        ['PUBLISH, subscriber on a primary of another shard', 'PUBLISH', other],
        ['PUBLISH, subscriber on the replica of the publishing node', 'PUBLISH', replicas[0]],
        ['SPUBLISH, subscriber on the replica of the channel\'s primary', 'SPUBLISH', replicas[0]],
        ['PUBLISH, subscriber on the publishing node (reference)', 'PUBLISH', primary],
        ['SPUBLISH, subscriber on the channel\'s primary (reference)', 'SPUBLISH', primary]
      ]
      const rows = []
      for (const [name, verb, at] of cases) {
        const { p50, p99 } = await deliveries(connect(primary), connect(at), verb, ops)
        rows.push({ case: name, value: p50, shown: `${p50.toFixed(0)} µs / ${p99.toFixed(0)} µs`, detail: `${ops} messages, each sent after the previous one was heard` })
      }
      return rows
    } finally {
      for (const c of open) c.disconnect()
      await cluster.stop()
    }
  }
}

module.exports = figure

if (require.main === module) {
  figure.run().then((rows) => { for (const r of rows) console.log(`${r.case}: ${r.shown}`) }, (err) => { console.error(err); process.exitCode = 1 })
}
