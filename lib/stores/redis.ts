/**
 * A `TokenStore` on Redis, for several instances behind a load balancer: standalone, Sentinel
 * or Cluster, through node-redis, ioredis or iovalkey.
 *
 * Each session id is one Redis hash, `${prefix}{${id}}`: a field per token hash, whose value
 * is `${seq}:${expiresAt}:${path}` (an empty path means "any guarded route"), plus a `#seq`
 * counter that orders tokens by issue for `maxTokens`. The braces are a Cluster hash tag: any
 * key added for a session later shares its slot, so that one script may touch them all.
 * Issue and consume are each one Lua script that names its key, hence one round trip, routed
 * by a cluster client to the key's node, and atomic across instances: two instances consuming
 * the same token at the same moment are serialised by Redis, and only one of them sees it.
 *
 * With `durability`, the consume is pipelined with `WAIT` on the same connection (`WAIT`
 * counts the acknowledgements of that connection's writes, and cannot wait inside Lua or
 * `MULTI`), so it is still one round trip, and a consume too few replicas hold is an error
 * (503): a failover cannot then promote a replica that still holds a token that opened.
 */
import { createHash } from 'node:crypto'
import { redisCloseBus } from './redis-bus'
import type { ConsumeOutcome, StoredToken, TokenStore } from './types'
import { MAX_TIMER_DELAY } from '../options'
import { WebsocketGuardOptionError } from '../errors'

/** What the store uses of a node-redis (4 and later) client, cluster or sentinel. */
export interface NodeRedisClientLike {
  evalSha (sha1: string, options: { keys: string[], arguments: string[] }): Promise<unknown>
  eval (script: string, options: { keys: string[], arguments: string[] }): Promise<unknown>
  multi (...routing: any[]): unknown
}

/** What the store uses of an ioredis or iovalkey client (standalone, Sentinel) or cluster. */
export interface IORedisClientLike {
  evalsha (sha1: string, numKeys: number, ...args: string[]): Promise<unknown>
  eval (script: string, numKeys: number, ...args: string[]): Promise<unknown>
  pipeline (...args: any[]): unknown
  defineCommand (...args: any[]): unknown
}

export type RedisClientLike = NodeRedisClientLike | IORedisClientLike

export interface RedisDurability {
  /** replicas that must acknowledge a consume; a positive integer */
  replicas: number
  /** longest wait for them, in ms (Redis `WAIT`); default 500. Keep it below `storeTimeout` */
  timeout?: number
}

export interface RedisTokenStoreOptions {
  /**
   * A connected node-redis client (`createClient`, not in `legacyMode`), cluster
   * (`createCluster`) or sentinel (`createSentinel`), or an ioredis / iovalkey `Redis`
   * (standalone or Sentinel) or `Cluster`. It stays yours: the store never connects, quits or
   * listens to it (give it an `error` listener).
   */
  client: RedisClientLike
  /** start of every key the store writes; default `'ws-guard:'`. No braces: the store adds its own hash tag */
  prefix?: string
  /** a consume (or revoke) counts only once this many replicas hold it; off by default */
  durability?: RedisDurability
}

export interface RedisTokenStore extends TokenStore {
  /** Drops every outstanding token of `id` (one `DEL`, with `WAIT` under `durability`). */
  revoke (id: string): Promise<void>
}

function invalid (message: string): TypeError {
  return new WebsocketGuardOptionError(`redisTokenStore: ${message}`)
}

// Field names are token hashes (43 base64url characters); '#' is not one of those.
const SEQ = '#seq'

// KEYS[1] = the session's hash; ARGV = token hash, expiresAt, path ('' = any), maxTokens, now
const ISSUE = `
local key, hash, now, max = KEYS[1], ARGV[1], tonumber(ARGV[5]), tonumber(ARGV[4])
local flat = redis.call('HGETALL', key)
local live = {}
local latest = tonumber(ARGV[2])
for i = 1, #flat, 2 do
  local field = flat[i]
  if field ~= '${SEQ}' and field ~= hash then
    local seq, expiresAt = string.match(flat[i + 1], '^(%d+):([^:]+):')
    expiresAt = tonumber(expiresAt)
    if expiresAt == nil or expiresAt <= now then
      redis.call('HDEL', key, field)
    else
      live[#live + 1] = { tonumber(seq), field, expiresAt }
    end
  end
end
table.sort(live, function (a, b) return a[1] < b[1] end)
local evict = #live - max + 1
for i = 1, #live do
  if i <= evict then
    redis.call('HDEL', key, live[i][2])
  elseif live[i][3] > latest then
    latest = live[i][3]
  end
end
local seq = redis.call('HINCRBY', key, '${SEQ}', 1)
redis.call('HSET', key, hash, seq .. ':' .. ARGV[2] .. ':' .. ARGV[3])
redis.call('PEXPIRE', key, math.max(1, math.ceil(latest - now)))
return 1
`

// KEYS[1] = the session's hash; ARGV = token hash, request path, now. The rules of findToken.
const CONSUME = `
local key = KEYS[1]
local value = redis.call('HGET', key, ARGV[1])
local expiresAt, path
if value then
  expiresAt, path = string.match(value, '^%d+:([^:]+):(.*)$')
  expiresAt = tonumber(expiresAt)
end
if expiresAt == nil then
  if redis.call('HLEN', key) - redis.call('HEXISTS', key, '${SEQ}') > 0 then return 'mismatch' end
  return 'none-stored'
end
if expiresAt <= tonumber(ARGV[3]) then return 'expired' end
if path ~= '' and path ~= ARGV[2] then return 'wrong-path' end
redis.call('HDEL', key, ARGV[1])
if redis.call('HLEN', key) - redis.call('HEXISTS', key, '${SEQ}') == 0 then redis.call('DEL', key) end
return 'consumed'
`

interface Script {
  body: string
  sha: string
}

function script (body: string): Script {
  return { body, sha: createHash('sha1').update(body).digest('hex') }
}

const issueScript = script(ISSUE)
const consumeScript = script(CONSUME)

/** One command of the store's: a script by SHA1 or by body, or a DEL, on one key. */
type Call =
  | { op: 'evalsha' | 'eval', script: Script, key: string, args: string[] }
  | { op: 'del', key: string }

/** How the store talks to one client library. */
interface Wire {
  /** sends `call` alone; a cluster client routes it to the key's node and follows redirections */
  one (call: Call): Promise<unknown>
  /**
   * sends `call` and `WAIT replicas timeout` in one pipeline on one connection to the key's
   * node (no MULTI: WAIT cannot wait inside one); resolves with both replies, rejects with
   * the first error among them
   */
  withWait (call: Call, replicas: number, timeout: number): Promise<[unknown, unknown]>
  /** a plain read of `key`, whose MOVED makes a cluster client learn the slot's new node */
  reroute (key: string): Promise<unknown>
}

interface IORedisPipeline {
  evalsha (sha1: string, numKeys: number, ...args: string[]): IORedisPipeline
  eval (script: string, numKeys: number, ...args: string[]): IORedisPipeline
  del (key: string): IORedisPipeline
  wait (replicas: number, timeout: number): IORedisPipeline
  // null is a transaction's answer to a failed WATCH; a pipeline always has its replies
  exec (): Promise<Array<[Error | null, unknown]>>
}

interface IORedisClient extends IORedisClientLike {
  pipeline (): IORedisPipeline
  del (key: string): Promise<unknown>
  pttl (key: string): Promise<unknown>
}

function ioredisWire (io: IORedisClient): Wire {
  function add (p: IORedisPipeline, call: Call): IORedisPipeline {
    if (call.op === 'del') return p.del(call.key)
    return call.op === 'evalsha'
      ? p.evalsha(call.script.sha, 1, call.key, ...call.args)
      : p.eval(call.script.body, 1, call.key, ...call.args)
  }
  return {
    one (call) {
      if (call.op === 'del') return io.del(call.key)
      return call.op === 'evalsha'
        ? io.evalsha(call.script.sha, 1, call.key, ...call.args)
        : io.eval(call.script.body, 1, call.key, ...call.args)
    },
    async withWait (call, replicas, timeout) {
      // an ioredis Cluster sends a pipeline whose keys share a slot to that slot's node
      const results = await add(io.pipeline(), call).wait(replicas, timeout).exec()
      for (const [err] of results) if (err !== null) throw err
      return [results[0]?.[1], results[1]?.[1]]
    },
    reroute: (key) => io.pttl(key)
  }
}

interface NodeRedisMulti {
  evalSha (sha1: string, options: { keys: string[], arguments: string[] }): NodeRedisMulti
  eval (script: string, options: { keys: string[], arguments: string[] }): NodeRedisMulti
  del (key: string): NodeRedisMulti
  wait (replicas: number, timeout: number): NodeRedisMulti
  execAsPipeline (): Promise<unknown[]>
}

interface NodeRedisClient extends NodeRedisClientLike {
  multi (routing?: string): NodeRedisMulti
  del (key: string): Promise<unknown>
  pTTL (key: string): Promise<unknown>
}

function nodeRedisWire (nr: NodeRedisClient): Wire {
  return {
    one (call) {
      if (call.op === 'del') return nr.del(call.key)
      const options = { keys: [call.key], arguments: call.args }
      return call.op === 'evalsha' ? nr.evalSha(call.script.sha, options) : nr.eval(call.script.body, options)
    },
    async withWait (call, replicas, timeout) {
      // a cluster's multi(key) pipeline goes to the node serving key's slot; a client's or
      // a sentinel's, to its (leased) primary connection. Replies come back in order, so the
      // first error is the first command's when it failed
      let multi = nr.multi(call.key)
      if (call.op === 'del') {
        multi = multi.del(call.key)
      } else {
        const options = { keys: [call.key], arguments: call.args }
        multi = call.op === 'evalsha' ? multi.evalSha(call.script.sha, options) : multi.eval(call.script.body, options)
      }
      const [reply, acks] = await multi.wait(replicas, timeout).execAsPipeline()
      return [reply, acks]
    },
    reroute: (key) => nr.pTTL(key)
  }
}

function wireOf (client: unknown): Wire {
  const c = client as Record<string, unknown> | null
  if (typeof c === 'object' && c !== null && typeof c.eval === 'function') {
    // ioredis and iovalkey name it evalsha and have pipeline; node-redis names it evalSha
    if (typeof c.evalsha === 'function' && typeof c.pipeline === 'function' && typeof c.defineCommand === 'function') {
      return ioredisWire(client as IORedisClient)
    }
    if (typeof c.evalSha === 'function' && typeof c.multi === 'function') {
      return nodeRedisWire(client as NodeRedisClient)
    }
  }
  throw invalid('client must be a node-redis (4+) client, cluster or sentinel, or an ioredis or iovalkey client or cluster')
}

function startsWith (err: unknown, ...prefixes: string[]): boolean {
  return err instanceof Error && prefixes.some((p) => err.message.startsWith(p))
}

interface Durability {
  replicas: number
  timeout: number
}

const OPTIONS = new Set(['client', 'prefix', 'durability'])
const DURABILITY_OPTIONS = new Set(['replicas', 'timeout'])

function checkDurability (value: unknown): Durability | null {
  if (value === undefined) return null
  if (typeof value !== 'object' || value === null) throw invalid('durability must be an object { replicas, timeout? }')
  const unknown = Object.keys(value).find((k) => !DURABILITY_OPTIONS.has(k))
  if (unknown !== undefined) throw invalid(`unknown option durability.${unknown} (known: replicas, timeout)`)
  const { replicas, timeout = 500 } = value as RedisDurability
  if (typeof replicas !== 'number' || !Number.isSafeInteger(replicas) || replicas < 1) {
    throw invalid('durability.replicas must be a positive integer')
  }
  // WAIT 0 would wait forever; WAIT takes whole milliseconds
  if (typeof timeout !== 'number' || !(timeout > 0) || !(timeout <= MAX_TIMER_DELAY)) {
    throw invalid(`durability.timeout must be a positive number of milliseconds, at most ${MAX_TIMER_DELAY}`)
  }
  return { replicas, timeout: Math.ceil(timeout) }
}

/**
 * A `TokenStore` on Redis, atomic across any number of instances. Every key it writes
 * expires with the latest of its tokens; nothing scans keys.
 */
export function redisTokenStore (options: RedisTokenStoreOptions): RedisTokenStore {
  if (typeof options !== 'object' || options === null) {
    throw invalid('options must be an object with a client')
  }
  const unknown = Object.keys(options).find((k) => !OPTIONS.has(k))
  if (unknown !== undefined) throw invalid(`unknown option ${unknown} (known: client, prefix, durability)`)
  const { client, prefix = 'ws-guard:' } = options
  if (typeof prefix !== 'string') throw invalid('prefix must be a string')
  // a brace in the prefix could make the prefix, not the id, the hash tag: every session in one slot
  if (/[{}]/.test(prefix)) throw invalid('prefix must not contain { or }: the store adds a hash tag of its own')
  const wire = wireOf(client)
  const durability = checkDurability(options.durability)

  const keyOf = (id: string): string => `${prefix}{${id}}`

  /** Runs a script by its SHA1 (one round trip); loads it with EVAL only when the node lacks it. */
  async function run (s: Script, key: string, args: string[]): Promise<unknown> {
    try {
      return await wire.one({ op: 'evalsha', script: s, key, args })
    } catch (err) {
      if (!startsWith(err, 'NOSCRIPT')) throw err
      // the client sends this to the node that just answered NOSCRIPT, the key's node
      return await wire.one({ op: 'eval', script: s, key, args })
    }
  }

  /**
   * Sends `call` with WAIT pipelined and resolves with its reply and the acknowledgements.
   * A script the node lacks is sent again by body; a slot that moved (failover, resharding)
   * is looked up again through the cluster client, then the pipeline is sent to its new node.
   */
  async function withWait (call: Call, durability: Durability, redirections = 0): Promise<{ reply: unknown, acks: number }> {
    let answer: [unknown, unknown]
    try {
      answer = await wire.withWait(call, durability.replicas, durability.timeout)
    } catch (err) {
      if (call.op === 'evalsha' && startsWith(err, 'NOSCRIPT')) return await withWait({ ...call, op: 'eval' }, durability, redirections)
      if (!startsWith(err, 'MOVED', 'ASK') || redirections === 3) throw err
      await wire.reroute(call.key)
      return await withWait(call, durability, redirections + 1)
    }
    return { reply: answer[0], acks: Number(answer[1]) }
  }

  function tooFew (what: string, acks: number, { replicas, timeout }: Durability): Error {
    return new Error(`redisTokenStore: ${acks} of ${replicas} replicas acknowledged the ${what} within ${timeout} ms`)
  }

  return {
    async issue (id: string, token: StoredToken, maxTokens: number): Promise<void> {
      const { hash, expiresAt, path } = token
      if (!Number.isFinite(expiresAt)) throw invalid('expiresAt must be a finite number')
      if (path === '') throw invalid('path must be null or a non-empty path')
      if (!Number.isInteger(maxTokens) || maxTokens < 1) throw invalid('maxTokens must be a positive integer')
      // not waited for: a token that a failover loses is refused, never accepted twice
      await run(issueScript, keyOf(id), [hash, String(expiresAt), path ?? '', String(maxTokens), String(Date.now())])
    },
    async consume (id: string, hash: string, path: string, now: number): Promise<ConsumeOutcome> {
      const key = keyOf(id)
      const args = [hash, path, String(now)]
      if (durability === null) {
        // String(): a client may map bulk strings to Buffers; anything unknown counts as a mismatch
        return String(await run(consumeScript, key, args)) as ConsumeOutcome
      }
      const { reply, acks } = await withWait({ op: 'evalsha', script: consumeScript, key, args }, durability)
      const outcome = String(reply) as ConsumeOutcome
      // only a consume writes; a refusal removed nothing a failover could bring back
      // (written so that an answer that is not a number fails closed too)
      if (outcome === 'consumed' && !(acks >= durability.replicas)) throw tooFew('consume', acks, durability)
      return outcome
    },
    async revoke (id: string): Promise<void> {
      const key = keyOf(id)
      if (durability === null) {
        await wire.one({ op: 'del', key })
        return
      }
      const { acks } = await withWait({ op: 'del', key }, durability)
      if (!(acks >= durability.replicas)) throw tooFew('revocation', acks, durability)
    },
    // closes between the instances that share this Redis (lib/stores/redis-bus.ts)
    bus: carriesCloses(client) ? redisCloseBus(client, prefix) : undefined
  }
}

/**
 * Whether the close bus can run on `client`: ioredis and iovalkey in every topology (their
 * `duplicate()` and `call()` work the same on a Cluster and under Sentinel), and a node-redis
 * client. A node-redis cluster routes `sendCommand` by key and a node-redis sentinel has no
 * `duplicate()`: with those, closes stay on the instance that made them.
 */
function carriesCloses (client: unknown): boolean {
  const c = client as Record<string, unknown>
  if (typeof c.call === 'function') return true
  return typeof c.duplicate === 'function' && typeof c.getSlotMaster !== 'function'
}
