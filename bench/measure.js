'use strict'
// The measurements figures are computed from. Each takes the run's context (bench/run.js:
// `ctx.spawn`, `ctx.redis()`, `ctx.plan`, `ctx.log`) and returns raw numbers; a figure that
// needs one asks for it through `ctx.once`, so that figures sharing a measurement share the
// servers and the rounds it took.
const { setTimeout: sleep } = require('node:timers/promises')
const { median, percentile } = require('./common')

/** node bench/server.js arguments for one server. */
function serverArgs ({ variant, logger, redisUrl, tokenStoreUrl, guardOptions, name, maxTokens, packageDir }) {
  const args = ['--variant', variant, '--logger', logger, '--name', name]
  if (packageDir !== undefined) args.push('--package-dir', packageDir)
  if (redisUrl !== undefined) args.push('--redis-url', redisUrl)
  if (tokenStoreUrl !== undefined) args.push('--token-store-url', tokenStoreUrl)
  if (guardOptions !== undefined) args.push('--guard-options', JSON.stringify(guardOptions))
  if (maxTokens !== undefined) args.push('--max-tokens', String(maxTokens))
  return args
}

async function startServers (ctx, label, setup, servers) {
  const redisUrl = setup.sessions === 'redis' ? (await ctx.redis()).url : undefined
  const tokenStoreUrl = setup.tokenStore === 'redis' ? (await ctx.redis()).url : undefined
  const names = Object.keys(servers)
  const procs = names.map((name) => ctx.spawn('server.js', serverArgs({ ...servers[name], ...setup, redisUrl, tokenStoreUrl, name: `${label}-${name}` })))
  let profiled = false
  const stop = async () => {
    // with --profile: each server's profile written before it exits
    if (profiled) await Promise.all(procs.map((p, i) => p.call({ cmd: 'profile-stop', file: ctx.profileFile(`${label}-${names[i]}`) })))
    await Promise.all(procs.map((p) => p.stop()))
  }
  /** With --profile, profiles the servers from now on (until `stop`); a no-op otherwise. */
  const profile = async () => {
    if (!ctx.profiling) return
    // a finer sampling than V8's default 1 ms, e.g. BENCH_PROFILE_INTERVAL=100 (µs)
    const interval = process.env.BENCH_PROFILE_INTERVAL === undefined ? undefined : Number(process.env.BENCH_PROFILE_INTERVAL)
    await Promise.all(procs.map((p) => p.call({ cmd: 'profile-start', interval })))
    profiled = true
  }
  try {
    const targets = await Promise.all(procs.map((p) => p.call({ cmd: 'address' })))
    return { names, procs, targets, stop, profile }
  } catch (err) {
    await stop()
    throw err
  }
}

/** Warm-up flows are sent in chunks of this many per server. */
const WARMUP_CHUNK = 500

/** The plan's warm-up flows per server; BENCH_WARMUP_FLOWS=N overrides it (0: none). */
function warmupFlowsOf (plan) {
  return Number(process.env.BENCH_WARMUP_FLOWS ?? plan.warmupFlows ?? 0)
}

/** `total` warm-up flows on each of `targets`, in chunks; the first target changes every chunk. */
async function warmUp (load, targets, total, { concurrency, sessions }) {
  for (let done = 0; done < total; done += WARMUP_CHUNK) {
    const count = Math.min(WARMUP_CHUNK, total - done)
    await load.call({ cmd: 'flow', targets, count, concurrency, sessions, first: (done / WARMUP_CHUNK) % targets.length })
  }
}

const cpuOf = (procs) => Promise.all(procs.map((p) => p.call({ cmd: 'cpu' })))

/**
 * The connection flow (token request, then the upgrade, then a close) on each of `servers`
 * (`{ name: { variant, maxTokens? } }`), all with the same `setup` (`{ logger, sessions }`).
 * Each round, every server serves `count` flows, the servers taking turns flow by flow; the
 * first server changes every round. Returns each server's CPU µs per flow, round by round.
 * Rounds stop after `seconds` once there are `minRounds`, so that a busy machine makes the
 * run less precise (the A/A pair shows it) rather than endless.
 */
async function flows (ctx, label, setup, servers, plan = ctx.plan.flows) {
  const { warmup, rounds, minRounds, seconds, count, concurrency, sessions } = plan
  const warmupFlows = warmupFlowsOf(plan)
  const { names, procs, targets, stop, profile } = await startServers(ctx, label, setup, servers)
  const load = ctx.spawn('load.js', [])
  try {
    const cpu = Object.fromEntries(names.map((n) => [n, []]))
    const gc = Object.fromEntries(names.map((n) => [n, []]))
    await warmUp(load, targets, warmupFlows, { concurrency, sessions })
    await profile()
    const started = Date.now()
    for (let r = 0; r < warmup + rounds; r++) {
      if (r >= warmup + minRounds && Date.now() - started > seconds * 1000) break
      const before = await cpuOf(procs)
      const result = await load.call({ cmd: 'flow', targets, count, concurrency, sessions, first: r % names.length })
      // let the servers finish the closing handshakes that belong to this round
      await sleep(50)
      const after = await cpuOf(procs)
      names.forEach((n, i) => {
        if (after[i].opened - before[i].opened !== count) throw new Error(`${label} ${n}: ${after[i].opened - before[i].opened} sockets opened, ${count} expected`)
        ctx.served(`${label}-${n}`, count)
      })
      if (r < warmup) continue
      names.forEach((n, i) => {
        cpu[n].push((after[i].cpu - before[i].cpu) / count)
        gc[n].push((after[i].gc - before[i].gc) / count)
      })
      ctx.log(`${label} round ${r - warmup + 1}/${rounds}: µs/flow ${names.map((n) => `${n} ${cpu[n].at(-1).toFixed(0)}`).join(', ')} (${(result.ms / 1000).toFixed(1)} s)`)
    }
    return { cpu, gc, warmedUp: warmupFlows + warmup * count }
  } finally {
    await Promise.all([stop(), load.stop()])
  }
}

/**
 * Token-route throughput of `servers` (as for `flows`): autocannon on all of them at once,
 * so that all meet the same moments of a noisy machine; each connection is one session
 * asking for token after token. Returns requests per second and server CPU µs per request,
 * round by round.
 */
async function tokenRoute (ctx, label, setup, servers) {
  const { warmup, rounds, duration, connections } = ctx.plan.tokenRoute
  const { names, procs, targets, stop, profile } = await startServers(ctx, label, setup, servers)
  const load = ctx.spawn('load.js', [])
  try {
    await profile()
    const rate = Object.fromEntries(names.map((n) => [n, []]))
    const cpu = Object.fromEntries(names.map((n) => [n, []]))
    for (let r = 0; r < warmup + rounds; r++) {
      const before = await cpuOf(procs)
      const results = await load.call({ cmd: 'cannons', targets: targets.map((t) => ({ port: t.port, path: t.tokenPath })), connections, duration })
      const after = await cpuOf(procs)
      names.forEach((n, i) => {
        ctx.served(`${label}-${n}`, results[i].ops)
        if (r < warmup) return
        rate[n].push(results[i].rps)
        cpu[n].push((after[i].cpu - before[i].cpu) / results[i].ops)
      })
      if (r >= warmup) ctx.log(`${label} round ${r - warmup + 1}/${rounds}: req/s ${names.map((n) => `${n} ${Math.round(rate[n].at(-1))}`).join(', ')}; µs/req ${names.map((n) => `${n} ${cpu[n].at(-1).toFixed(1)}`).join(', ')}`)
    }
    return { rate, cpu }
  } finally {
    await Promise.all([stop(), load.stop()])
  }
}

/** The memory figures, measured in a child of their own (they need --expose-gc). */
async function memory (ctx) {
  const child = ctx.spawn('memory.js', [], ['--expose-gc'])
  try {
    return await child.call({ cmd: 'run', quick: ctx.quick })
  } finally {
    await child.stop()
  }
}

/** The median of the per-round ratios a/b: it cancels slow drifts of the machine. */
function ratio (a, b) {
  return median(a.map((x, i) => x / b[i]))
}

/**
 * The noise of a measurement, from two identical servers measured in the same rounds: the
 * median of their per-round ratios, the interquartile range of those ratios, and the floor
 * under which a ratio's difference is not claimed: whichever is larger of the A/A median's
 * distance from 1 and half that range.
 */
function noise (a, b) {
  const ratios = a.map((x, i) => x / b[i])
  const mid = median(ratios)
  const q1 = percentile(ratios, 25)
  const q3 = percentile(ratios, 75)
  return { median: mid, q1, q3, floor: Math.max(Math.abs(mid - 1), (q3 - q1) / 2) }
}

module.exports = { flows, tokenRoute, memory, ratio, noise, median, warmUp, warmupFlowsOf }
