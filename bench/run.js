'use strict'
// `npm run bench`: what the guard costs, each figure against a baseline measured in the same
// run, printed with its goal and whether it is met. The figures are declared in
// bench/figures.js; the servers and the load generator are child processes on loopback, and
// a server's cost is its own CPU time (process.cpuUsage) per operation, since the load
// generator shares the machine. A full run writes bench/results.md.
//
//   node bench/run.js [--quick] [--only 2,5,token] [--list] [--profile]
//
// --quick    a short smoke run (fewer, shorter rounds; results.md untouched)
// --only     figures by number or by a word of their title, comma-separated
// --list     the figures and their goals, without measuring
// --profile  V8 CPU profiles of the servers into bench/profiles/ (read them with
//            bench/profile-summary.js); BENCH_PROFILE_INTERVAL=µs samples more often than 1 ms
// --instructions  also instructions per flow of each server under valgrind's callgrind
//            (bench/instructions.js; about 12 minutes more)
// BENCH_PACKAGE_DIR=dir uses an already built package there instead of a snapshot of dist/.
// BENCH_SERVER_FLAGS='--maglev --trace-opt' passes flags to the server processes.
const { cpSync, existsSync, mkdirSync, rmSync, writeFileSync } = require('node:fs')
const { join } = require('node:path')
const os = require('node:os')
const { parseArgs } = require('node:util')
const { goalLimit, goalMet, goalText, loadPackage, spawnChild } = require('./common')
const { startRedis } = require('./redis')
const figures = require('./figures')

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    only: { type: 'string' },
    list: { type: 'boolean', default: false },
    profile: { type: 'boolean', default: false },
    instructions: { type: 'boolean', default: false }
  }
})

// About 6 minutes in all on 2 cores, however busy other processes keep them (a
// comparison stops adding rounds after `seconds`, once it has `minRounds`); --quick about one.
const PLANS = {
  full: {
    // warmupFlows: flows each server serves before any round, so that what runs per flow is
    // compiled by V8's optimizing tier (TurboFan) as in a server that has served a while: until
    // then each server's CPU includes the JIT's own work, on a background thread that
    // process.cpuUsage counts. With --trace-opt, a server (the guard's or the baseline's, Node
    // 22) still completes 30–60 TurboFan compilations per 500 flows between flows 2,500 and
    // 5,500, a few up to 6,500, none after 7,000.
    flows: { warmupFlows: 8000, warmup: 2, rounds: 9, minRounds: 5, seconds: 45, count: 80, concurrency: 8, sessions: 16 },
    tokenRoute: { warmup: 3, rounds: 9, duration: 1.5, connections: 10 }
  },
  quick: {
    flows: { warmupFlows: 0, warmup: 1, rounds: 3, minRounds: 3, seconds: 10, count: 20, concurrency: 8, sessions: 16 },
    tokenRoute: { warmup: 1, rounds: 2, duration: 1, connections: 10 }
  }
}

// the built package, copied so that a rebuild during the run cannot change what is measured
function packageDir () {
  if (process.env.BENCH_PACKAGE_DIR) return process.env.BENCH_PACKAGE_DIR
  const dist = join(__dirname, '..', 'dist')
  if (!existsSync(join(dist, 'index.js'))) {
    throw new Error('dist/ is not built: run `npm run bench` (it builds first) or `node scripts/build.js`')
  }
  const snapshot = join(__dirname, '.dist')
  rmSync(snapshot, { recursive: true, force: true })
  cpSync(dist, snapshot, { recursive: true })
  return snapshot
}

/** What every figure's `run` gets: the plan, measurements shared by key, child processes. */
function context ({ quick, profile, instructions }) {
  const env = { ...process.env, BENCH_PACKAGE_DIR: packageDir() }
  process.env.BENCH_PACKAGE_DIR = env.BENCH_PACKAGE_DIR
  const profileDir = join(__dirname, 'profiles')
  // profiles of an earlier run would be summed with this one's
  if (profile) rmSync(profileDir, { recursive: true, force: true })
  const shared = new Map()
  const served = {}
  let profiles = 0
  let redis
  return {
    quick,
    plan: quick ? PLANS.quick : PLANS.full,
    /** --profile: bench/measure.js profiles each server from the end of its warm-up */
    profiling: profile,
    /** --instructions: the figure of instructions per flow runs (valgrind, about 12 minutes) */
    counting: instructions,
    log: (line) => process.stdout.write(`    ${line}\n`),
    /** `measure()` once per run, however many figures ask for `key`. */
    once (key, measure) {
      if (!shared.has(key)) shared.set(key, measure())
      return shared.get(key)
    },
    /** A child process (common.js's protocol). */
    spawn (file, childArgs, execArgv = [], execPath = process.execPath) {
      // Node.js or V8 flags for the servers, e.g. BENCH_SERVER_FLAGS='--maglev' or '--trace-opt'
      if (file === 'server.js' && process.env.BENCH_SERVER_FLAGS) execArgv = [...execArgv, ...process.env.BENCH_SERVER_FLAGS.split(' ').filter(Boolean)]
      return spawnChild(file, childArgs, { env, execArgv, execPath })
    },
    /** With --profile, a new file for a profile of the server `name`. */
    profileFile (name) {
      mkdirSync(join(profileDir, name), { recursive: true })
      return join(profileDir, name, `measured-${++profiles}.cpuprofile`)
    },
    /** Counts operations served by `name` while it was profiled, for bench/profile-summary.js. */
    served (name, ops) {
      served[name] = (served[name] ?? 0) + ops
    },
    /** One redis-server for the run, started when a figure first needs it. */
    redis () {
      redis ??= startRedis()
      return redis
    },
    package: () => loadPackage().mod,
    async close () {
      if (profile) writeFileSync(join(profileDir, 'ops.json'), JSON.stringify(served, null, 2))
      if (redis !== undefined) await redis.then((r) => r.stop(), () => {})
    }
  }
}

function selected () {
  const numbered = figures.map((figure, i) => ({ n: i + 1, ...figure }))
  if (args.only === undefined) return numbered
  const wanted = args.only.split(',').map((w) => w.trim().toLowerCase()).filter((w) => w !== '')
  const picked = numbered.filter((f) => wanted.some((w) => /^\d+$/.test(w) ? String(f.n) === w : f.title.toLowerCase().includes(w)))
  if (picked.length === 0) throw new Error(`--only ${args.only} names no figure; see --list`)
  return picked
}

/** A row's verdict: met or not, and whether the goal's limit is within the noise. */
function verdict (goal, row) {
  const met = row.informative === true ? null : goalMet(goal, row.value)
  if (met === null) return ''
  const close = row.noise !== undefined && Math.abs(row.value - goalLimit(goal)) <= row.noise
  return `${met ? 'yes' : 'no'}${close ? ', within noise' : ''}`
}

async function measureFigure (ctx, figure) {
  if (figure.run === null) return { ...figure, status: 'not measured yet', rows: [] }
  try {
    const rows = await figure.run(ctx)
    const verdicts = rows.map((row) => verdict(figure.goal, row))
    const missed = verdicts.filter((v) => v.startsWith('no'))
    const status = figure.goal === null
      ? 'informative'
      : missed.length === 0 ? 'met' : `NOT met${missed.every((v) => v.endsWith('within noise')) ? ' (within noise)' : ''}`
    return { ...figure, status, rows: rows.map((row, i) => ({ ...row, verdict: verdicts[i] })) }
  } catch (err) {
    return { ...figure, status: `failed: ${err.message.split('\n')[0]}`, rows: [] }
  }
}

function printFigure (f) {
  console.log(`${f.n}. ${f.title}\n   goal ${goalText(f.goal)}: ${f.status}`)
  for (const row of f.rows) {
    console.log(`   - ${row.case}: ${row.shown}${row.verdict ? ` [${row.verdict}]` : ''}${row.detail ? `  (${row.detail})` : ''}`)
  }
}

function machine () {
  const cpus = os.cpus()
  return `${cpus[0]?.model.trim() ?? 'unknown CPU'}, ${cpus.length} cores (${os.availableParallelism()} available), Node ${process.version}, ${os.platform()} ${os.release()}`
}

function markdown (results, { seconds, plan, load }) {
  const cell = (s) => String(s).replace(/\|/g, '\\|')
  const lines = [
    '# Bench results',
    '',
    `Written by \`npm run bench\` (bench/run.js) on ${new Date().toISOString().slice(0, 10)}, in ${seconds} s.`,
    `Machine: ${machine()}; load average ${load.before} before the run, ${load.after} after it (the machine is shared).`,
    '',
    `Connection flow: a token request over keep-alive HTTP, then the upgrade, then a close; five servers (guard, hand-written check, floor: a hook that checks nothing, baseline, a second baseline) side by side, ${plan.flows.sessions} sessions each, ${plan.flows.concurrency} flows in flight, the servers taking turns flow by flow (which one starts changes every round), ${plan.flows.count} flows per server and round, ${plan.flows.rounds} rounds after ${plan.flows.warmupFlows} flows and ${plan.flows.warmup} rounds of warm-up per server (so that what runs once per flow is compiled by V8's optimizing tier, as in a server that has been serving for a while) (fewer, at least ${plan.flows.minRounds}, when a comparison has taken ${plan.flows.seconds} s: each row says how many). A ratio is the median of the per-round ratios of the servers' own CPU time per flow. The noise floor is what an A/A pair (the baseline against an identical second baseline, in the same rounds) measures: the larger of its median's distance from 1 and half the interquartile range of its per-round ratios; a verdict within it says so. Logger on means level info into a stream that drops the lines. Sessions are @fastify/session's default in-process store, or Redis through connect-redis (redis-server's own CPU is not counted).`,
    `Token route: autocannon, ${plan.tokenRoute.connections} connections (one session each) on each server for ${plan.tokenRoute.duration} s per round, the guard's route, the one-value route and a second one-value route (A/A) loaded at the same time (one autocannon each, started together), ${plan.tokenRoute.rounds} rounds after ${plan.tokenRoute.warmup} of warm-up. Its figure is throughput per second of server CPU (requests a CPU-bound server serves per second), the inverse of the CPU per request ratio: on a shared machine, wall-clock requests per second measure the neighbours as much as the server; they are given beside it.`,
    '',
    '| # | figure | goal | met? | case | measured | from |',
    '|---|---|---|---|---|---|---|'
  ]
  for (const f of results) {
    const head = `| ${f.n} | ${cell(f.title)} | ${goalText(f.goal)} | ${f.status} |`
    if (f.rows.length === 0) lines.push(`${head} | | |`)
    f.rows.forEach((row, i) => {
      const start = i === 0 ? head : '| | | | |'
      lines.push(`${start} ${cell(row.case)} | ${cell(row.shown)}${row.verdict ? ` (${row.verdict})` : ''} | ${cell(row.detail)} |`)
    })
  }
  return lines.join('\n') + '\n'
}

async function main () {
  const chosen = selected()
  if (args.list) {
    for (const f of chosen) console.log(`${f.n}. ${f.title}: goal ${goalText(f.goal)}${f.run === null ? ' (slot, not measured yet)' : ''}`)
    return
  }
  const started = Date.now()
  const load = { before: os.loadavg()[0].toFixed(2) }
  const ctx = context({ quick: args.quick, profile: args.profile, instructions: args.instructions })
  const results = []
  try {
    for (const figure of chosen) {
      const result = await measureFigure(ctx, figure)
      printFigure(result)
      results.push(result)
    }
  } finally {
    await ctx.close()
  }
  load.after = os.loadavg()[0].toFixed(2)
  const seconds = Math.round((Date.now() - started) / 1000)
  console.log(`\n${seconds} s; ${machine()}`)
  const missed = results.filter((f) => f.status.startsWith('NOT met') || f.status.startsWith('failed'))
  for (const f of missed) console.log(`${f.status}: ${f.n}. ${f.title}`)
  if (!args.quick && !args.profile && args.only === undefined) {
    writeFileSync(join(__dirname, 'results.md'), markdown(results, { seconds, plan: ctx.plan, load }))
    console.log('written to bench/results.md')
  }
  if (args.profile) console.log('CPU profiles written to bench/profiles/; summarise with node bench/profile-summary.js')
  if (results.some((f) => f.status.startsWith('failed'))) process.exitCode = 1
}

main().catch((err) => {
  console.error(err)
  process.exitCode = 1
})
