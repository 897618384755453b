/** Tokens in a server-side `TokenStore`, found through a random id kept in the session. */
import { hash, randomBytes } from 'node:crypto'
import type { ResolvedOptions } from '../options'
import { readSession, writeSession, type SessionLike } from '../session'
import type { TokenStore } from '../stores/types'
import { assertConsumed, hashToken, newToken } from '../tokens'
import { storeCall } from '../deadline'
import type { TokenBackend } from './index'

export function storeBackend (opts: ResolvedOptions, store: TokenStore, owned: boolean): TokenBackend {
  return {
    async issue (_request, session, path) {
      let id = readSession(session, opts.sessionKey)
      if (typeof id !== 'string') {
        id = storeId(session)
        writeSession(session, opts.sessionKey, id)
      }
      const { issued, record } = newToken(opts.tokenTTL, path, Date.now())
      await storeCall(store.issue(id as string, record, opts.maxTokens), opts.storeTimeout)
      return issued
    },
    async consume (_request, session, token, path) {
      const id = readSession(session, opts.sessionKey)
      if (typeof id !== 'string') return assertConsumed('none-stored')
      assertConsumed(await storeCall(store.consume(id, hashToken(token), path, Date.now()), opts.storeTimeout))
    },
    async revoke (_session, stored) {
      // the id stays: tokens issued from now on are the session's again
      if (typeof stored === 'string') await store.revoke?.(stored)
    },
    async close () {
      // a store the user passed in is theirs to close
      if (owned) await store.close?.()
    }
  }
}

/**
 * The id of a session's tokens in the store. Two first token requests of one session (two
 * tabs opening at once) both find no id; a random id each would let the session saved last
 * orphan the other's token. Derived from @fastify/session's session id, both agree. The
 * cookie sessions of @fastify/secure-session have no id to derive from: a random one there.
 */
function storeId (session: SessionLike): string {
  const sessionId = (session as { sessionId?: unknown }).sessionId
  if (typeof sessionId !== 'string') return randomBytes(16).toString('base64url')
  return hash('sha256', 'fastify-websocket-guard:' + sessionId, 'base64url').slice(0, 22)
}
