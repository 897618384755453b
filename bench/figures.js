'use strict'
// Every figure `npm run bench` prints, declared once: `{ title, goal, run }`.
// - goal: data (`{ max: 1.06 }`, `{ min: 0.95 }`, `{ equal: 1 }`, optional `unit`), or null
//   for a figure that only informs; its text and its check both come from it (common.js).
// - run(ctx): resolves with rows `{ case, value, shown, detail, noise? }`: `value` is the
//   number the goal checks, `shown` how it prints, `detail` what it was computed from, and
//   `noise` the A/A noise floor of the measurement it came from. `run: null` is a slot:
//   declared, reported as not measured yet.
// Figures that share a measurement get it through `ctx.once(key, fn)`, which measures once
// per run. To add a figure, add an object to this list.
const { consumeLatency } = require('./redis-consume')
const { flows, tokenRoute, memory, ratio, noise, median } = require('./measure')
const { roundTrips } = require('./redis')
const { hotPath } = require('./hot-path')
const { instructions } = require('./instructions')
const { join } = require('node:path')

// Every comparison of the connection flow runs these five servers side by side: the guard,
// the check a user would write by hand, the floor (a hook that checks nothing: what any
// hook-based check costs), the unguarded baseline, and a second baseline for the A/A pair
// that measures the noise.
const FIVE = {
  guard: { variant: 'guard' },
  'hand-written': { variant: 'hand-written' },
  floor: { variant: 'floor' },
  baseline: { variant: 'baseline' },
  'baseline-2': { variant: 'baseline' }
}
const SETUPS = {
  'logger off': { logger: 'off', sessions: 'memory' },
  'logger on': { logger: 'on', sessions: 'memory' },
  'logger off, sessions in Redis': { logger: 'off', sessions: 'redis' },
  'logger on, sessions in Redis': { logger: 'on', sessions: 'redis' }
}
const IN_PROCESS = ['logger off', 'logger on']
const IN_REDIS = ['logger off, sessions in Redis', 'logger on, sessions in Redis']

const label = (setup) => setup.replace(', sessions in Redis', '-redis').replace(' ', '-')
const flowsIn = (ctx, setup) => ctx.once(`flows ${setup}`, () => flows(ctx, label(setup), SETUPS[setup], FIVE))

const us = (v) => `${v.toFixed(1)} µs`
const times = (v) => `${v.toFixed(3)}×`
const pct = (v) => `±${(v * 100).toFixed(1)}%`

/** Rows of server CPU per flow, `a` over `b`, one per setup. */
function flowRatio (a, b, setups) {
  return async (ctx) => {
    const rows = []
    for (const setup of setups) {
      const { cpu } = await flowsIn(ctx, setup)
      const aa = noise(cpu['baseline-2'], cpu.baseline)
      const value = ratio(cpu[a], cpu[b])
      rows.push({ case: setup, value, shown: times(value), detail: `medians: ${a} ${us(median(cpu[a]))}, ${b} ${us(median(cpu[b]))} per flow; ${cpu[a].length} rounds; noise ${pct(aa.floor)}`, noise: aa.floor })
    }
    return rows
  }
}

function tokenRouteIn (ctx, logger) {
  return ctx.once(`token route logger ${logger}`, () => tokenRoute(ctx, `token-route-logger-${logger}`, { logger, sessions: 'memory' }, {
    guard: { variant: 'guard' },
    baseline: { variant: 'baseline' },
    'baseline-2': { variant: 'baseline' }
  }))
}

const redisRoundTrips = (ctx) => ctx.once('redis round trips', async () => {
  const { redisTokenStore } = ctx.package()
  const { port } = await ctx.redis()
  const ops = ctx.quick ? 50 : 200
  const out = {}
  for (const client of ['node-redis', 'ioredis']) out[client] = await roundTrips(redisTokenStore, port, client, ops)
  return out
})

const memoryFigures = (ctx) => ctx.once('memory', () => memory(ctx))
const B = (v) => `${Math.round(v)} B`
const MB = (v) => `${(v / 1048576).toFixed(1)} MB`

module.exports = [
  {
    title: 'Noise floor: baseline-2 / baseline (A/A), server CPU per flow',
    goal: null,
    async run (ctx) {
      const rows = []
      for (const setup of Object.keys(SETUPS)) {
        const { cpu } = await flowsIn(ctx, setup)
        const aa = noise(cpu['baseline-2'], cpu.baseline)
        rows.push({ case: setup, value: aa.median, shown: times(aa.median), detail: `per-round ratios ${aa.q1.toFixed(3)}–${aa.q3.toFixed(3)} (interquartile) over ${cpu.baseline.length} rounds; noise floor ${pct(aa.floor)}` })
      }
      return rows
    }
  },
  {
    title: 'Guard / hand-written check: server CPU per flow (token request + upgrade)',
    goal: { max: 0.93 },
    run: flowRatio('guard', 'hand-written', IN_PROCESS)
  },
  {
    title: 'Guard / unguarded baseline: server CPU per flow, logger off, in-process sessions',
    goal: { max: 1.06 },
    run: flowRatio('guard', 'baseline', ['logger off'])
  },
  {
    title: 'Guard / unguarded baseline: server CPU per flow, logger on, in-process sessions',
    goal: { max: 1.04 },
    run: flowRatio('guard', 'baseline', ['logger on'])
  },
  {
    title: 'Guard / unguarded baseline: server CPU per flow, sessions in Redis (connect-redis)',
    goal: { max: 1.10 },
    run: flowRatio('guard', 'baseline', IN_REDIS)
  },
  {
    title: 'Hand-written check / unguarded baseline: server CPU per flow',
    goal: null,
    run: flowRatio('hand-written', 'baseline', Object.keys(SETUPS))
  },
  {
    title: 'Guard / hand-written check: server CPU per flow, sessions in Redis (connect-redis)',
    goal: null,
    run: flowRatio('guard', 'hand-written', IN_REDIS)
  },
  {
    title: 'Token route, 8 tokens outstanding per session / a route that writes one session value: throughput per second of server CPU',
    goal: { min: 0.95 },
    async run (ctx) {
      const rows = []
      for (const logger of ['off', 'on']) {
        const { rate, cpu } = await tokenRouteIn(ctx, logger)
        // requests per CPU-second, a over b, is CPU per request, b over a
        const value = ratio(cpu.baseline, cpu.guard)
        const aa = noise(cpu.baseline, cpu['baseline-2'])
        rows.push({ case: `logger ${logger}`, value, shown: times(value), detail: `medians: ${us(median(cpu.guard))} vs ${us(median(cpu.baseline))} server CPU per request; wall clock ${Math.round(median(rate.guard))} vs ${Math.round(median(rate.baseline))} req/s (${times(ratio(rate.guard, rate.baseline))}); ${cpu.guard.length} rounds; noise ${pct(aa.floor)}`, noise: aa.floor })
      }
      return rows
    }
  },
  {
    // BENCH_PREVIOUS_DIR=dir (a copy of an earlier dist/) pairs this build against that one
    title: 'This build / the previous build (BENCH_PREVIOUS_DIR): guard server CPU per flow',
    goal: null,
    async run (ctx) {
      const previous = process.env.BENCH_PREVIOUS_DIR
      if (previous === undefined || previous === '') return []
      const rows = []
      for (const setup of ctx.quick ? ['logger off'] : IN_PROCESS.concat(['logger off, sessions in Redis'])) {
        const { cpu } = await ctx.once(`pair ${setup}`, () => flows(ctx, `pair-${label(setup)}`, SETUPS[setup], {
          guard: { variant: 'guard' },
          previous: { variant: 'guard', packageDir: previous },
          baseline: { variant: 'baseline' },
          'baseline-2': { variant: 'baseline' }
        }))
        const aa = noise(cpu['baseline-2'], cpu.baseline)
        const value = ratio(cpu.guard, cpu.previous)
        rows.push({ case: setup, value, shown: times(value), detail: `medians: this build ${us(median(cpu.guard))}, previous ${us(median(cpu.previous))}, baseline ${us(median(cpu.baseline))} per flow; this/baseline ${times(ratio(cpu.guard, cpu.baseline))}, previous/baseline ${times(ratio(cpu.previous, cpu.baseline))}; ${cpu.guard.length} rounds; noise ${pct(aa.floor)}`, noise: aa.floor })
      }
      return rows
    }
  },
  // the lifecycle figures: heap per socket, closeSession over two instances, revalidation reads, upgrade CPU on / off (goal 1.02)
  ...require('./lifecycle'),
  // the diagnostics figures: no subscriber / publishing removed (goal 1.01), every channel subscribed, their A/A
  ...require('./diagnostics'),
  { title: 'Redis store consume latency p50 / p99, standalone Redis', goal: null, run: consumeLatency('standalone') },
  { title: 'Redis store consume latency p50 / p99, Redis Cluster', goal: null, run: consumeLatency('cluster') },
  { title: 'Redis store consume latency p50 / p99, with replica durability', goal: null, run: consumeLatency('standalone, durability: { replicas: 1 }') },
  {
    title: 'Redis store: round trips per issue and per consume',
    goal: { equal: 1 },
    async run (ctx) {
      const trips = await redisRoundTrips(ctx)
      return Object.entries(trips).flatMap(([client, t]) => [
        { case: `${client}, issue`, value: t.issue, shown: t.issue.toFixed(2), detail: `the first after SCRIPT FLUSH: ${t.first.issue} (script loading)` },
        { case: `${client}, consume`, value: t.consume, shown: t.consume.toFixed(2), detail: `the first after SCRIPT FLUSH: ${t.first.consume} (script loading)` }
      ])
    }
  },
  {
    title: 'Session backend: heap bytes a token adds to a session',
    goal: { max: 200, unit: ' B' },
    async run (ctx) {
      const { session } = await memoryFigures(ctx)
      return [
        { case: 'first token (its array, the record, the hash)', value: session.first, shown: `+${B(session.first)}`, detail: `JSON of a token for an external session store: ${B(session.serialised)}` },
        { case: 'each further token', value: session.next, shown: `+${B(session.next)}`, detail: '' }
      ]
    }
  },
  {
    title: 'In-memory token store (the default with @fastify/secure-session): heap bytes per token',
    goal: { max: 200, unit: ' B' },
    async run (ctx) {
      const { store } = await memoryFigures(ctx)
      return [
        { case: 'a session\'s first token (its entry and the token)', value: store.first, shown: B(store.first), detail: `plus the session's id, ${B(store.idBytes)}` },
        { case: 'each further token', value: store.next, shown: B(store.next), detail: '' }
      ]
    }
  },
  {
    title: 'A flooded session keeps at most maxTokens (8) tokens',
    goal: { max: 8 },
    async run (ctx) {
      const { flood, floodedSession: f, store } = await memoryFigures(ctx)
      const cut = f.sent < flood ? ` (stopped at the time limit, of ${flood.toLocaleString('en-US')})` : ''
      return [
        { case: `@fastify/session, ${f.sent.toLocaleString('en-US')} token requests${cut}`, value: f.kept, shown: String(f.kept), detail: `heap growth ${B(f.growth)}` },
        { case: `in-memory store, one id, ${flood.toLocaleString('en-US')} tokens`, value: store.kept, shown: String(store.kept), detail: 'tokens still consumable' }
      ]
    }
  },
  {
    title: 'In-memory token store: heap still held once its tokens expired, as a share of what they held',
    goal: { max: 0.05 },
    async run (ctx) {
      const { many, store } = await memoryFigures(ctx)
      // a store that did not empty holds everything, whatever the heap says
      const value = store.emptied ? Math.max(0, store.left / store.held) : 1
      return [{ case: `${many.toLocaleString('en-US')} sessions, two tokens each`, value, shown: value.toFixed(3), detail: `${MB(store.held)} held, ${MB(store.left)} after expiry${store.emptied ? '' : '; the store did not empty'}` }]
    }
  },
  // last, so that the numbers of the figures before them stay those of earlier runs
  {
    title: 'Floor: a preValidation hook that checks nothing (reads Origin and ?token=, sets a result) / unguarded baseline: server CPU per flow',
    goal: null,
    run: flowRatio('floor', 'baseline', Object.keys(SETUPS))
  },
  {
    title: 'Guard / floor: what the guard\'s checks and the socket\'s life cost above any hook-based check, server CPU per flow',
    goal: null,
    run: flowRatio('guard', 'floor', Object.keys(SETUPS))
  },
  {
    title: 'The guard\'s token, origin and registry work per flow, timed in-process on warm code (tokens beside the MemoryStore): ns',
    goal: null,
    async run (ctx) {
      const { ns, total } = hotPath(join(process.env.BENCH_PACKAGE_DIR, 'lib'), ctx.quick ? { calls: 20_000, rounds: 3 } : {})
      const { cpu } = await flowsIn(ctx, 'logger off')
      const share = total / 1000 / median(cpu.baseline)
      return [
        ...Object.entries(ns).map(([step, v]) => ({ case: step, value: v, shown: `${v.toFixed(0)} ns`, detail: '' })),
        { case: 'all of them', value: total, shown: `${(total / 1000).toFixed(2)} µs`, detail: `${(share * 100).toFixed(2)}% of the baseline's ${us(median(cpu.baseline))} server CPU per flow (logger off)` }
      ]
    }
  },
  {
    // only with --instructions: it takes valgrind and some 12 minutes
    title: 'Instructions per flow under callgrind (valgrind), counted rather than timed, V8 on one thread, in-process sessions, logger off (BENCH_INSTRUCTIONS_LOGGER=on: on)',
    goal: null,
    async run (ctx) {
      if (!ctx.counting) return [{ case: 'not run', value: NaN, shown: 'run with --instructions (valgrind, about 12 minutes more)', detail: '' }]
      const { counts, plan } = await ctx.once('instructions', () => instructions(ctx))
      const k = (v) => `${(v / 1000).toFixed(1)}k`
      const work = (name) => counts[name].total - counts[name].gc
      // the ratio without GC is the one that repeats: whether a mark-compact falls inside the
      // counted flows moves a total by 10-30%
      const row = (a, b, label = `${a} / ${b}`) => ({
        case: label,
        value: work(a) / work(b),
        shown: `${times(work(a) / work(b))} without GC (${times(counts[a].total / counts[b].total)} in all)`,
        detail: `${k(work(a))} vs ${k(work(b))} instructions per flow without GC, ${k(counts[a].total)} vs ${k(counts[b].total)} in all`
      })
      return [
        row('guard', 'baseline'),
        row('hand-written', 'baseline'),
        row('floor', 'baseline'),
        row('guard', 'hand-written'),
        row('guard', 'floor'),
        { ...row('baseline-2', 'baseline', 'baseline-2 / baseline (A/A)'), detail: `each server alone under callgrind, logger ${plan.logger}, after ${plan.warmup} flows of warm-up, ${plan.measured} flows counted` }
      ]
    }
  }
]
