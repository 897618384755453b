/**
 * The close bus of `redisTokenStore`: closes travel between instances over Redis pub/sub, on
 * a connection duplicated from the client the user gave (a subscribed connection can run
 * nothing else), and each also leaves a marker, so that an instance that was not listening
 * when it was published finds it when its subscription is live again.
 *
 * Keys, beside the store's own: `${prefix}closed:${group}` (the last close of a session group,
 * a string) and `${prefix}user:${sha256(id)}` (the last closes of a user id, a short list),
 * both expiring after `MARKER_TTL`. Channels: `${prefix}closes` for every instance, and one
 * `${prefix}ping:${nonce}` per subscription, on which it pings itself to prove it is live.
 */
import { createHash, randomBytes } from 'node:crypto'
import type { CloseBus, CloseListener, CloseMessage, CloseSubscription, MissedClose } from './types'

/** How long a marker outlives its close: an instance cut off for longer may have lost closes. */
export const MARKER_TTL = 10 * 60_000
/** A user's markers kept: closeUser calls for one user within MARKER_TTL beyond this are merged away. */
const USER_MARKERS = 16
/** Markers read per round trip during a resync. */
const BATCH = 500
/** How often a live subscription pings itself; a ping unanswered this long means a gap. */
const HEARTBEAT = 10_000
/** First wait before pinging again after a reconnection, doubled up to HEARTBEAT. */
const FIRST_RETRY = 25
// bounds on what a message may carry (anything else on the channel is ignored)
const MAX_ID = 1024
const MAX_REASON = 123

/** The few commands the bus sends, on the user's client or on its own subscriber. */
interface Commands {
  send (args: string[]): Promise<unknown>
  /** a new connection with the same options, subscribed to `channels` */
  subscriber (channels: string[], onMessage: (channel: string, message: string) => void): Promise<Subscriber>
}

interface Subscriber {
  on (event: 'ready' | 'gap', listener: (err?: unknown) => void): void
  close (): void
}

interface Emitter {
  on (event: string, listener: (...args: any[]) => void): unknown
  removeAllListeners (): unknown
}

interface NodeRedisLike extends Emitter {
  sendCommand (args: string[]): Promise<unknown>
  duplicate (): NodeRedisLike
  connect (): Promise<unknown>
  subscribe (channels: string[], listener: (message: string, channel: string) => void): Promise<unknown>
  disconnect (): Promise<void>
}

interface IORedisLike extends Emitter {
  call (command: string, ...args: string[]): Promise<unknown>
  duplicate (): IORedisLike
  connect (): Promise<unknown>
  status: string
  subscribe (...channels: string[]): Promise<unknown>
  disconnect (): void
}

/**
 * Wraps a duplicated connection's events: `ready` after each (re)connection, `gap` when it is
 * lost. Once closed it reports nothing more (an error still has a listener: unheard, it would
 * crash the process).
 */
function subscriberOf (connection: Emitter & { removeAllListeners (): unknown }, disconnect: () => void, lostOn: string[]): Subscriber {
  const listeners: { ready: Array<(err?: unknown) => void>, gap: Array<(err?: unknown) => void> } = { ready: [], gap: [] }
  connection.on('ready', () => { for (const l of listeners.ready) l() })
  for (const event of lostOn) connection.on(event, (err?: unknown) => { for (const l of listeners.gap) l(err) })
  return {
    on (event, listener) { listeners[event].push(listener) },
    close () {
      connection.removeAllListeners()
      connection.on('error', () => {})
      disconnect()
    }
  }
}

function commandsOf (client: unknown): Commands {
  const c = client as Record<string, unknown>
  if (typeof c.call === 'function') {
    const io = client as IORedisLike
    return {
      send: (args) => io.call(args[0] as string, ...args.slice(1)),
      async subscriber (channels, onMessage) {
        const dup = io.duplicate()
        const subscriber = subscriberOf(dup, () => { dup.disconnect() }, ['error', 'close'])
        dup.on('message', onMessage)
        // a client made with lazyConnect hands its duplicates the same option
        if (dup.status === 'wait') await dup.connect()
        await dup.subscribe(...channels)
        return subscriber
      }
    }
  }
  const nr = client as NodeRedisLike
  return {
    send: (args) => nr.sendCommand(args),
    async subscriber (channels, onMessage) {
      const dup = nr.duplicate()
      // disconnect(): at once, in node-redis 4 and 5 alike
      const subscriber = subscriberOf(dup, () => { dup.disconnect().catch(() => {}) }, ['error', 'end', 'reconnecting'])
      await dup.connect()
      await dup.subscribe(channels, (message, channel) => onMessage(channel, message))
      return subscriber
    }
  }
}

function parse (text: string): (CloseMessage & { from: string, at: number }) | null {
  let m: Record<string, unknown>
  try {
    m = JSON.parse(text)
  } catch {
    return null
  }
  if (typeof m !== 'object' || m === null) return null
  const { scope, id, code, reason, except, ended, from, at } = m
  if (scope !== 'session' && scope !== 'user') return null
  if (typeof id !== 'string' || id === '' || id.length > MAX_ID) return null
  if (typeof code !== 'number' || !Number.isInteger(code) || code < 4000 || code > 4999) return null
  if (typeof reason !== 'string' || Buffer.byteLength(reason) > MAX_REASON) return null
  if (except !== null && (typeof except !== 'string' || except.length > MAX_ID)) return null
  if (typeof ended !== 'boolean' || typeof from !== 'string' || typeof at !== 'number') return null
  return { scope, id, code, reason, except, ended, from, at }
}

/**
 * The close bus of a Redis client: node-redis (4 and later) or ioredis / iovalkey, standalone.
 * `heartbeat` (ms) is for tests.
 */
export function redisCloseBus (client: unknown, prefix: string, { heartbeat: every = HEARTBEAT } = {}): CloseBus {
  const commands = commandsOf(client)
  const closesChannel = `${prefix}closes`
  const groupKey = (id: string): string => `${prefix}closed:${id}`
  const userKey = (id: string): string => `${prefix}user:${createHash('sha256').update(id).digest('base64url')}`

  return {
    async subscribe (listener: CloseListener): Promise<CloseSubscription> {
      const nonce = randomBytes(9).toString('base64url')
      const pingChannel = `${prefix}ping:${nonce}`
      // the subscription's state: when it was last known live, and since when it may have missed closes
      let gapSince: number | null = null
      let lastLive = Date.now()
      let pingsSent = 0
      let pingAnswered = 0
      let pingSentAt = 0
      let retry: NodeJS.Timeout | undefined
      let retryDelay = FIRST_RETRY
      let resyncing = false
      let gaps = 0
      let closed = false

      function gap (err?: unknown): void {
        gaps++
        // a reconnecting client fails again and again: one report per gap
        if (gapSince === null) listener.error(err)
        gapSince ??= lastLive
      }

      function ping (): void {
        if (closed) return
        pingSentAt = Date.now()
        commands.send(['PUBLISH', pingChannel, String(++pingsSent)]).catch(gap)
      }

      /** Pings, with backoff, until the subscription answers and the resync succeeds. */
      function pingUntilAnswered (): void {
        clearTimeout(retry)
        ping()
        retry = setTimeout(pingUntilAnswered, retryDelay)
        retry.unref()
        retryDelay = Math.min(retryDelay * 2, every)
      }

      function answered (seq: number): void {
        if (seq !== pingsSent) return
        pingAnswered = seq
        lastLive = Date.now()
        if (resyncing) return
        clearTimeout(retry)
        if (gapSince === null) {
          retryDelay = FIRST_RETRY
          return
        }
        const since = gapSince
        const seen = gaps
        resyncing = true
        // the gap stays open until the listener has read the markers (and any new gap since)
        listener.resync(since).then(() => {
          if (gaps === seen) gapSince = null
          resyncing = false
          retryDelay = FIRST_RETRY
        }, (err: unknown) => {
          listener.error(err)
          resyncing = false
          retry = setTimeout(pingUntilAnswered, retryDelay)
          retry.unref()
        })
      }

      function onMessage (channel: string, text: string): void {
        if (channel === pingChannel) return answered(Number(text))
        const message = parse(text)
        // our own closes were applied here before they were published
        if (message === null || message.from === nonce) return
        const { from: _from, at: _at, ...close } = message
        listener.message(close)
      }

      const subscriber = await commands.subscriber([closesChannel, pingChannel], onMessage)
      subscriber.on('gap', gap)
      subscriber.on('ready', () => { if (gapSince !== null) pingUntilAnswered() })
      // a connection that died silently answers no ping: that is a gap too
      const heartbeat = setInterval(() => {
        if (pingAnswered !== pingsSent && Date.now() - pingSentAt >= every) gap()
        ping()
      }, every)
      heartbeat.unref()

      return {
        markerTTL: MARKER_TTL,
        async publish (message) {
          const text = JSON.stringify({ ...message, from: nonce, at: Date.now() })
          const ttl = String(MARKER_TTL)
          // sent together, in this order, on one connection: the marker is there before anyone hears the close
          const sent = message.scope === 'session'
            ? [commands.send(['SET', groupKey(message.id), text, 'PX', ttl])]
            : [
                commands.send(['RPUSH', userKey(message.id), text]),
                commands.send(['LTRIM', userKey(message.id), String(-USER_MARKERS), '-1']),
                commands.send(['PEXPIRE', userKey(message.id), ttl])
              ]
          sent.push(commands.send(['PUBLISH', closesChannel, text]))
          await Promise.all(sent)
        },
        async missed (groups, users) {
          const found: MissedClose[] = []
          const reads = [
            ...groups.map((id) => ['GET', groupKey(id)]),
            ...users.map((id) => ['LRANGE', userKey(id), '0', '-1'])
          ]
          for (let i = 0; i < reads.length; i += BATCH) {
            const replies = await Promise.all(reads.slice(i, i + BATCH).map((args) => commands.send(args)))
            for (const reply of replies) {
              for (const text of Array.isArray(reply) ? reply : [reply]) {
                const message = text === null ? null : parse(String(text))
                if (message === null) continue
                const { from: _from, ...close } = message
                found.push(close)
              }
            }
          }
          return found
        },
        async close () {
          closed = true
          clearInterval(heartbeat)
          clearTimeout(retry)
          subscriber.close()
        }
      }
    }
  }
}
