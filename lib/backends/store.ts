/** Tokens in a server-side `TokenStore`, found through a random id kept in the session. */
import { randomBytes } from 'node:crypto'
import type { ResolvedOptions } from '../options'
import { readSession, writeSession } from '../session'
import type { TokenStore } from '../stores/types'
import { assertConsumed, hashToken, newToken } from '../tokens'
import { storeCall } from './deadline'
import type { TokenBackend } from './index'

export function storeBackend (opts: ResolvedOptions, store: TokenStore, owned: boolean): TokenBackend {
  return {
    async issue (_request, session, path) {
      let id = readSession(session, opts.sessionKey)
      if (typeof id !== 'string') {
        id = randomBytes(16).toString('base64url')
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
