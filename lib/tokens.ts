/**
 * One-time tokens: how they are made, how a client presents one at the upgrade, and how a
 * presented token is matched against the tokens issued to a session. Only SHA-256 hashes of
 * tokens are kept anywhere (session, server-side store), so a leaked session store leaks no
 * usable token.
 */
import { hash as hashOnce, randomFillSync, timingSafeEqual } from 'node:crypto'
import {
  NoWebsocketTokenPresented,
  NoWebsocketTokenStored,
  WebsocketTokenExpired,
  WebsocketTokenMismatch
} from './errors'
import type { ConsumeOutcome, StoredToken } from './stores/types'

export const TOKEN_BYTES = 32
/** 32 bytes in base64url without padding */
export const TOKEN_LENGTH = 43
/**
 * Longest presented value that is hashed at all. Tokens issued here are 43 characters; the
 * margin admits tokens a seed-style application stored itself. Anything longer is refused
 * without work proportional to its length.
 */
export const MAX_PRESENTED_LENGTH = 256
/** query parameters and subprotocol entries looked at before giving up (fail closed) */
export const MAX_QUERY_PARAMS = 256
export const MAX_PROTOCOL_ENTRIES = 32

// Random bytes are drawn from the CSPRNG for 128 tokens at a time: each call into it costs
// several microseconds, more than the rest of the token route's own work. Every byte is
// handed out once (as crypto.randomUUID does with its own cache).
const POOL_TOKENS = 128
const pool = Buffer.allocUnsafeSlow(TOKEN_BYTES * POOL_TOKENS)
let poolOffset = pool.length

export function generateToken (): string {
  if (poolOffset === pool.length) {
    randomFillSync(pool)
    poolOffset = 0
  }
  const token = pool.toString('base64url', poolOffset, poolOffset + TOKEN_BYTES)
  poolOffset += TOKEN_BYTES
  return token
}

export function hashToken (token: string): string {
  // the one-shot form: no Hash object per call
  return hashOnce('sha256', token, 'base64url')
}

/** What the token route answers: the token itself is handed out once and never kept. */
export interface IssuedToken {
  token: string
  expiresAt: number
}

/** A fresh token and the record kept for it. */
export function newToken (tokenTTL: number, path: string | null, now: number): { issued: IssuedToken, record: StoredToken } {
  const token = generateToken()
  const expiresAt = now + tokenTTL
  return { issued: { token, expiresAt }, record: { hash: hashToken(token), expiresAt, path } }
}

/**
 * The record for a presented token, by the rules of API.md: a token is accepted only when it
 * was issued, has not expired and is bound to no path or to this one. Every record is
 * compared, in constant time, so the time taken does not tell which one matched.
 */
export function findToken (records: readonly StoredToken[], hash: string, path: string, now: number): { outcome: ConsumeOutcome, index: number } {
  if (records.length === 0) return { outcome: 'none-stored', index: -1 }
  const presented = Buffer.from(hash, 'base64url')
  let index = -1
  for (let i = 0; i < records.length; i++) {
    const stored = Buffer.from((records[i] as StoredToken).hash, 'base64url')
    if (stored.length === presented.length && timingSafeEqual(stored, presented)) index = i
  }
  if (index === -1) return { outcome: 'mismatch', index }
  const record = records[index] as StoredToken
  if (record.expiresAt <= now) return { outcome: 'expired', index }
  if (record.path !== null && record.path !== path) return { outcome: 'wrong-path', index }
  return { outcome: 'consumed', index }
}

/** Records after issuing `record`: expired ones dropped, then the oldest beyond `maxTokens`. */
export function addToken (records: readonly StoredToken[], record: StoredToken, maxTokens: number, now: number): StoredToken[] {
  let live = 0
  for (const r of records) if (r.expiresAt > now) live++
  // one pass into an array of exactly the kept length: push() would give it room for 17
  let skip = Math.max(0, live + 1 - maxTokens)
  const kept = new Array<StoredToken>(live - skip + 1)
  let n = 0
  for (const r of records) {
    if (r.expiresAt <= now) continue
    if (skip > 0) skip--
    else kept[n++] = r
  }
  kept[n] = record
  return kept
}

/**
 * A record as kept in a session: one string, `hash:expiresAt` or `hash:expiresAt:path`.
 * @fastify/session hashes and serialises the whole session on every request, so every byte
 * a record adds there costs on every request of that session.
 */
export function encodeRecord (record: StoredToken): string {
  const text = record.path === null ? `${record.hash}:${record.expiresAt}` : `${record.hash}:${record.expiresAt}:${record.path}`
  // one flat string: a concatenation is kept as a tree of its parts, twice the memory. The
  // round trip keeps every well-formed string as it is (and a lone surrogate, which no
  // request path can hold, stays a path no request has).
  return Buffer.from(text, 'utf8').toString('utf8')
}

/** The record a session string stands for, or `null` for anything malformed (fail closed). */
export function decodeRecord (text: string): StoredToken | null {
  const first = text.indexOf(':')
  if (first < 1) return null
  let second = text.indexOf(':', first + 1)
  if (second === -1) second = text.length
  // Number('') is 0 and Number(' 1') is 1: only digits, so that no other string passes
  const expiry = text.slice(first + 1, second)
  if (!DIGITS.test(expiry)) return null
  const path = second === text.length ? null : text.slice(second + 1)
  if (path === '') return null
  return { hash: text.slice(0, first), expiresAt: Number(expiry), path }
}

const DIGITS = /^[0-9]{1,16}$/

/** Throws the security error that an outcome other than `'consumed'` stands for. */
export function assertConsumed (outcome: ConsumeOutcome): void {
  switch (outcome) {
    case 'consumed': return
    case 'none-stored': throw new NoWebsocketTokenStored()
    case 'expired': throw new WebsocketTokenExpired()
    case 'wrong-path': throw new WebsocketTokenMismatch('Presented websocket token is bound to another path')
    default: throw new WebsocketTokenMismatch()
  }
}

/** A token as presented at an upgrade. */
export interface PresentedToken {
  token: string
  /** the `Sec-WebSocket-Protocol` value without the token entry (never empty when it came that way) */
  protocols: string | undefined
  viaProtocol: boolean
}

function checkPresentedValue (value: string | undefined): string {
  if (value === undefined || value === '') {
    throw new NoWebsocketTokenPresented()
  }
  if (value.length > MAX_PRESENTED_LENGTH) {
    throw new WebsocketTokenMismatch('Presented websocket token is too long')
  }
  return value
}

/** The one value of `param` in a request target, `undefined` when absent; throws when repeated. */
export function queryToken (url: string, param: string): string | undefined {
  const queryStart = url.indexOf('?')
  if (queryStart === -1) return undefined
  let found: string | undefined
  let count = 0
  let start = queryStart + 1
  // the first '=' at or after `start`: searched again only once passed, so a long query of
  // parameters without '=' is scanned once, not once per parameter
  let eq = url.indexOf('=', start)
  for (let seen = 0; start <= url.length; seen++) {
    if (seen === MAX_QUERY_PARAMS) {
      throw new NoWebsocketTokenPresented('Too many query parameters')
    }
    let end = url.indexOf('&', start)
    if (end === -1) end = url.length
    if (eq !== -1 && eq < start) eq = url.indexOf('=', start)
    const keyEnd = eq === -1 || eq > end ? end : eq
    if (keyEnd - start === param.length && url.startsWith(param, start)) {
      if (++count > 1) throw new NoWebsocketTokenPresented('More than one websocket token presented')
      found = keyEnd === end ? '' : url.slice(keyEnd + 1, end)
    }
    start = end + 1
  }
  return found
}

/**
 * The token presented in the query parameter or as a `${protocol}.${token}` subprotocol
 * entry: exactly one, non-empty, in one place. Anything else is `NoWebsocketTokenPresented`.
 */
export function presentedToken (url: string, protocolHeader: string | undefined, param: string, protocolPrefix: string): PresentedToken {
  const fromQuery = queryToken(url, param)
  if (protocolHeader === undefined || protocolHeader.indexOf(protocolPrefix) === -1) {
    return { token: checkPresentedValue(fromQuery), protocols: protocolHeader, viaProtocol: false }
  }
  const entries = protocolHeader.split(',', MAX_PROTOCOL_ENTRIES + 1)
  if (entries.length > MAX_PROTOCOL_ENTRIES) {
    throw new NoWebsocketTokenPresented('Too many subprotocol entries')
  }
  let fromProtocol: string | undefined
  const rest: string[] = []
  for (const raw of entries) {
    const entry = raw.trim()
    if (entry.startsWith(protocolPrefix)) {
      if (fromProtocol !== undefined || fromQuery !== undefined) {
        throw new NoWebsocketTokenPresented('More than one websocket token presented')
      }
      fromProtocol = entry.slice(protocolPrefix.length)
    } else if (entry !== '') {
      rest.push(entry)
    }
  }
  if (fromProtocol === undefined) {
    return { token: checkPresentedValue(fromQuery), protocols: protocolHeader, viaProtocol: false }
  }
  if (rest.length === 0) {
    // a browser fails a connection whose offered protocols were all refused, after the
    // token is spent: refuse it before anything is consumed
    throw new NoWebsocketTokenPresented('The websocket token subprotocol entry was offered alone: offer the bare protocol too, e.g. [protocol, `${protocol}.${token}`]')
  }
  return {
    token: checkPresentedValue(fromProtocol),
    protocols: rest.join(', '),
    viaProtocol: true
  }
}

/** The request path of a request target: everything before the query. */
export function pathOf (url: string): string {
  const q = url.indexOf('?')
  return q === -1 ? url : url.slice(0, q)
}
