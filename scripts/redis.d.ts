// Types of scripts/redis.js, for the TypeScript tests.
import type { ChildProcess } from 'node:child_process'

export declare const REDIS_SERVER: string | null
export declare const REDIS_CLI: string | null
/** why Redis tests cannot run here, with the Debian package to install */
export declare const MISSING: string

export type Reply = string | number | null | Reply[]

export declare function freePort (): Promise<number>
/** one command on a fresh connection; an error reply rejects */
export declare function command (port: number, args: Array<string | number>, options?: { timeout?: number }): Promise<any>
/** `INFO section` as an object of its `name:value` lines */
export declare function info (port: number, section: string): Promise<Record<string, string>>
/** polls `check` until it resolves truthy; rejects naming `what` after `limit` ms */
export declare function waitFor<T> (what: string, check: () => Promise<T> | T, options?: { limit?: number, every?: number }): Promise<T>

/** waits until the server on `port` counts `count` (default 1) replicas as online, as WAIT does */
export declare function replicasOnline (port: number, count?: number, options?: { limit?: number, every?: number }): Promise<boolean>

export interface RedisServer {
  host: string
  port: number
  /** `redis://127.0.0.1:PORT` */
  url: string
  readonly process: ChildProcess | null
  /** the server's last few kilobytes of log */
  readonly log: string
  command (...args: Array<string | number>): Promise<any>
  /** kills it and removes its directory */
  stop (): Promise<void>
  /** SIGKILL: the server is gone, connections are reset */
  kill (): Promise<void>
  /** starts it again, empty, on the same port (with `args` instead of its own, if given) */
  restart (args?: string[]): Promise<void>
  /** SIGSTOP: connections stay open but nothing answers */
  pause (): void
  /** SIGCONT */
  resume (): void
}

export declare function startRedis (args?: string[], options?: { ports?: 1 | 2 }): Promise<RedisServer>

export interface RedisCluster {
  nodes: RedisServer[]
  startNodes: Array<{ host: string, port: number }>
  /** the primary and replicas serving `slot`, as `via` (default: the first node) sees them */
  shard (slot: number, via?: RedisServer): Promise<{ primary: RedisServer, replicas: RedisServer[] }>
  /**
   * CLUSTER FAILOVER on a replica of `slot`'s primary, once the replica accepted it; `done`
   * resolves once every node agrees that the replica serves the slot and the old primary is
   * its replica, in sync
   */
  failover (slot: number): Promise<{ from: RedisServer, to: RedisServer, done: Promise<unknown> }>
  stop (): Promise<void>
}

export declare function startCluster (options?: { primaries?: number, replicas?: number, args?: string[] }): Promise<RedisCluster>

export interface SentinelProcess {
  host: string
  port: number
  readonly process: ChildProcess | null
  command (...args: Array<string | number>): Promise<any>
  stop (): Promise<void>
}

export interface RedisSentinel {
  name: string
  primary: RedisServer
  replica: RedisServer
  sentinels: SentinelProcess[]
  sentinelNodes: Array<{ host: string, port: number }>
  /** the primary's port as the Sentinels report it */
  primaryPort (): Promise<number>
  stop (): Promise<void>
}

export declare function startSentinel (options?: {
  name?: string
  sentinels?: number
  quorum?: number
  downAfter?: number
  failoverTimeout?: number
}): Promise<RedisSentinel>

export interface Proxy {
  port: number
  readonly target: number
  /** client bursts that follow an answer: request/answer exchanges */
  readonly roundTrips: number
  readonly connections: number
  /** forward nothing more, either way, until `resume()` */
  pause (): void
  resume (): void
  /** destroy every current connection, with what it held */
  cut (): void
  /** send new connections to `port` */
  retarget (port: number): void
  close (): Promise<void>
}

export declare function startProxy (target: number): Promise<Proxy>

export interface Monitor {
  /** every command the server ran since, `addr` being `lua` for a script's own calls */
  seen: Array<{ addr: string, args: string[] }>
  /** resolves once everything sent before it has been seen */
  settle (): Promise<void>
  close (): void
}

export declare function monitor (port: number): Promise<Monitor>
