/** Tokens in a server-side `TokenStore`, found through a random id kept in the session. */
import type { ResolvedOptions } from '../options'
import { derivedId, randomId, readSession, writeSession, type SessionLike } from '../session'
import { TOKEN_TABLE, type TokenTable } from '../stores/memory'
import type { TokenStore } from '../stores/types'
import { assertConsumed, hashToken, newToken, type IssuedToken } from '../tokens'
import { isThenable, storeAnswer } from '../deadline'
import type { TokenBackend } from './index'

export function storeBackend (opts: ResolvedOptions, store: TokenStore, owned: boolean): TokenBackend {
  const { sessionKey, tokenTTL, maxTokens, storeTimeout } = opts
  // the in-memory store answers at once: called synchronously, nothing waits on it
  const table = (store as { [TOKEN_TABLE]?: TokenTable })[TOKEN_TABLE]
  function idOf (session: SessionLike): string {
    let id = readSession(session, sessionKey)
    if (typeof id !== 'string') {
      id = storeId(session)
      writeSession(session, sessionKey, id)
    }
    return id as string
  }
  return {
    stamp (session) {
      idOf(session)
    },
    issue (_request, session, path) {
      const id = idOf(session)
      const { issued, record } = newToken(tokenTTL, path, Date.now())
      if (table !== undefined) {
        table.issue(id, record, maxTokens)
        return issued
      }
      return issuedOnce(storeAnswer(store.issue(id, record, maxTokens), storeTimeout), issued)
    },
    consume (_request, session, token, path) {
      const id = readSession(session, sessionKey)
      if (typeof id !== 'string') return assertConsumed('none-stored')
      if (table !== undefined) return assertConsumed(table.consume(id, hashToken(token), path, Date.now()))
      const outcome = storeAnswer(store.consume(id, hashToken(token), path, Date.now()), storeTimeout)
      return isThenable(outcome) ? outcome.then(assertConsumed) : assertConsumed(outcome)
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

function issuedOnce (stored: Promise<void> | void, issued: IssuedToken): Promise<IssuedToken> | IssuedToken {
  return isThenable(stored) ? stored.then(() => issued) : issued
}

/**
 * The id of a session's tokens in the store. Two first token requests of one session (two
 * tabs opening at once) both find no id; a random id each would let the session saved last
 * orphan the other's token. Derived from @fastify/session's session id, both agree. The
 * cookie sessions of @fastify/secure-session have no id to derive from: a random one there,
 * written with the session's first write (`stamp`, called from its class's `set`), which is
 * the login for a session that has one.
 */
function storeId (session: SessionLike): string {
  return derivedId(session, '') ?? randomId()
}
