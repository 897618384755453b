/**
 * A `TokenStore` on Redis, for several instances behind a load balancer. Each session id is
 * one Redis hash (`prefix + id`): a field per token hash, whose value is
 * `${seq}:${expiresAt}:${path}` (an empty path means "any guarded route"), plus a `#seq`
 * counter that orders tokens by issue for `maxTokens`. Issue and consume are each one Lua
 * script, hence one round trip and atomic across instances: two instances consuming the same
 * token at the same moment are serialised by Redis, and only one of them sees it.
 */
import { createHash } from 'node:crypto'
import { redisCloseBus } from './redis-bus'
import type { ConsumeOutcome, StoredToken, TokenStore } from './types'

/** What the store uses of a `redis` (node-redis 4 and later) client or cluster. */
export interface NodeRedisClientLike {
  evalSha (sha1: string, options: { keys: string[], arguments: string[] }): Promise<unknown>
  eval (script: string, options: { keys: string[], arguments: string[] }): Promise<unknown>
}

/** What the store uses of an `ioredis` client or cluster. */
export interface IORedisClientLike {
  evalsha (sha1: string, numKeys: number, ...args: string[]): Promise<unknown>
  eval (script: string, numKeys: number, ...args: string[]): Promise<unknown>
  defineCommand (...args: any[]): unknown
}

export type RedisClientLike = NodeRedisClientLike | IORedisClientLike

export interface RedisTokenStoreOptions {
  /**
   * A connected `redis` (node-redis 4+, not in `legacyMode`) or `ioredis` client. It stays
   * yours: the store never connects, quits or listens to it (give it an `error` listener).
   */
  client: RedisClientLike
  /** prefix of every key the store writes; default `'ws-guard:'` */
  prefix?: string
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
const revokeScript = script("redis.call('DEL', KEYS[1])\nreturn 1")

/** Runs a script by its SHA1 (one round trip); loads it with EVAL only when Redis lacks it. */
type Runner = (script: Script, key: string, args: string[]) => Promise<unknown>

function isNoScript (err: unknown): boolean {
  return err instanceof Error && err.message.startsWith('NOSCRIPT')
}

function runner (client: unknown): Runner {
  const c = client as Record<string, unknown> | null
  if (typeof c === 'object' && c !== null && typeof c.eval === 'function') {
    // ioredis names it evalsha and has defineCommand; node-redis names it evalSha
    if (typeof c.evalsha === 'function' && typeof c.defineCommand === 'function') {
      const io = client as IORedisClientLike
      return async (s, key, args) => {
        try {
          return await io.evalsha(s.sha, 1, key, ...args)
        } catch (err) {
          if (!isNoScript(err)) throw err
          return await io.eval(s.body, 1, key, ...args)
        }
      }
    }
    if (typeof c.evalSha === 'function') {
      const nr = client as NodeRedisClientLike
      return async (s, key, args) => {
        const options = { keys: [key], arguments: args }
        try {
          return await nr.evalSha(s.sha, options)
        } catch (err) {
          if (!isNoScript(err)) throw err
          return await nr.eval(s.body, options)
        }
      }
    }
  }
  throw new TypeError('redisTokenStore: client must be a redis (node-redis 4+) or ioredis client')
}

/**
 * A `TokenStore` on a `redis` or `ioredis` client, atomic across any number of instances.
 * Every key it writes expires with the latest of its tokens; nothing scans keys.
 */
export function redisTokenStore (options: RedisTokenStoreOptions): TokenStore {
  if (typeof options !== 'object' || options === null) {
    throw new TypeError('redisTokenStore: options must be an object with a client')
  }
  const { client, prefix = 'ws-guard:' } = options
  if (typeof prefix !== 'string') throw new TypeError('redisTokenStore: prefix must be a string')
  const run = runner(client)

  return {
    async issue (id: string, token: StoredToken, maxTokens: number): Promise<void> {
      const { hash, expiresAt, path } = token
      if (!Number.isFinite(expiresAt)) throw new TypeError('redisTokenStore: expiresAt must be a finite number')
      if (path === '') throw new TypeError('redisTokenStore: path must be null or a non-empty path')
      if (!Number.isInteger(maxTokens) || maxTokens < 1) throw new TypeError('redisTokenStore: maxTokens must be a positive integer')
      await run(issueScript, prefix + id, [hash, String(expiresAt), path ?? '', String(maxTokens), String(Date.now())])
    },
    async consume (id: string, hash: string, path: string, now: number): Promise<ConsumeOutcome> {
      // String(): a client may map bulk strings to Buffers; anything unknown counts as a mismatch
      return String(await run(consumeScript, prefix + id, [hash, path, String(now)])) as ConsumeOutcome
    },
    async revoke (id: string): Promise<void> {
      await run(revokeScript, prefix + id, [])
    },
    bus: redisCloseBus(client, prefix)
  }
}
