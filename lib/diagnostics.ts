/**
 * Diagnostics channels (`node:diagnostics_channel`, as Fastify publishes its own): what the
 * guard decided, for metrics and audit. Each publish function checks `hasSubscribers` first,
 * so that with nobody subscribed no message is built and nothing is published. A message is
 * a plain object with exactly the fields API.md lists, and never carries a token or a URL:
 * `route` is the route's pattern, `origin` the Origin header as sent (cut, as in the logs).
 */
import { channel } from 'node:diagnostics_channel'
import type { FastifyRequest } from 'fastify'
import type { IncomingMessage } from 'node:http'
import type { Refusal } from './errors'
import { queryToken } from './tokens'

export const tokenChannel = channel('fastify-websocket-guard:token')
export const acceptChannel = channel('fastify-websocket-guard:accept')
export const rejectChannel = channel('fastify-websocket-guard:reject')
export const closeChannel = channel('fastify-websocket-guard:close')

/** `fastify-websocket-guard:token`: a token was issued. */
export interface TokenMessage {
  requestId: string
  route: string | null
  /** the path the token is bound to, or `null` */
  path: string | null
  expiresAt: number
}

/** `fastify-websocket-guard:accept`: an upgrade passed the guard. */
export interface AcceptMessage {
  requestId: string
  route: string | null
  origin: string | null
  /** where the token came, `null` where the route checks no token */
  transport: 'query' | 'protocol' | null
}

/** `fastify-websocket-guard:reject`: a refusal (403, 503 or 500), as `onReject` gets it. */
export interface RejectMessage {
  /** `null` for an upgrade refused before Fastify made a request of it */
  requestId: string | null
  route: string | null
  origin: string | null
  code: string
  statusCode: number
}

export type CloseReason = 'session-ended' | 'lifetime' | 'revalidation'

/** `fastify-websocket-guard:close`: the guard closed a socket. */
export interface CloseMessage {
  route: string
  code: number
  reason: CloseReason
  durationMs: number
}

// as the guard's log lines: an attacker chooses the header's length
const MAX_ORIGIN = 256

function originOf (header: string | string[] | undefined): string | null {
  return typeof header === 'string' ? header.slice(0, MAX_ORIGIN) : null
}

/** Outside any route (a not-found handler) Fastify has no pattern to give. */
function routeOf (request: FastifyRequest): string | null {
  return request.routeOptions.url ?? null
}

export function publishToken (request: FastifyRequest, path: string | null, expiresAt: number): void {
  if (!tokenChannel.hasSubscribers) return
  const message: TokenMessage = { requestId: request.id, route: routeOf(request), path, expiresAt }
  tokenChannel.publish(message)
}

/**
 * `token` is the consumed token (`null`: none checked). The guard took exactly one, from the
 * query or a subprotocol entry, so the query holds the parameter only when it came that way.
 */
export function publishAccept (request: FastifyRequest, token: string | null, queryParam: string): void {
  if (!acceptChannel.hasSubscribers) return
  const message: AcceptMessage = {
    requestId: request.id,
    route: routeOf(request),
    origin: originOf(request.headers.origin),
    transport: token === null ? null : queryToken(request.url, queryParam) === undefined ? 'protocol' : 'query'
  }
  acceptChannel.publish(message)
}

export function publishReject (request: FastifyRequest, error: Refusal): void {
  if (!rejectChannel.hasSubscribers) return
  const message: RejectMessage = {
    requestId: request.id,
    route: routeOf(request),
    origin: originOf(request.headers.origin),
    code: error.code,
    statusCode: error.statusCode
  }
  rejectChannel.publish(message)
}

/**
 * A refusal of an upgrade that no Fastify request stands for (refused at `handleUpgrade`):
 * no request id, and for `route` the request path, without its query, as the log line has it.
 */
export function publishUpgradeReject (req: IncomingMessage, path: string, error: Refusal): void {
  if (!rejectChannel.hasSubscribers) return
  const message: RejectMessage = {
    requestId: null,
    route: path,
    origin: originOf(req.headers.origin),
    code: error.code,
    statusCode: error.statusCode
  }
  rejectChannel.publish(message)
}

/**
 * For the socket-lifecycle code: the guard closed a socket of `route` (its pattern) that
 * opened at `openedAt` (epoch ms). A close at shutdown is not published.
 */
export function publishClose (route: string, code: number, reason: CloseReason, openedAt: number): void {
  if (!closeChannel.hasSubscribers) return
  // a clock stepped back must not give a negative duration
  const message: CloseMessage = { route, code, reason, durationMs: Math.max(0, Date.now() - openedAt) }
  closeChannel.publish(message)
}
