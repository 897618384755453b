'use strict'
// `npm run bench`: what the guard costs, each figure as a ratio against a baseline measured
// in the same run. The guarded server, the baseline server and the load generator are child
// processes on loopback; a server's cost is its own CPU time (process.cpuUsage) per
// operation, since the load generator shares the machine and is often the bottleneck.
// Figures 1 and 2 drive both servers in each round with operations taking turns between
// them (A B A B …), figure 3 alternates whole rounds; rounds follow a warm-up and the
// medians are quoted, because the machine this runs on is shared and noisy.
// Writes bench/results.md.
//
//   node bench/run.js [--only=1,2,3,4,5] [--profile] [--quick]
//
// --profile writes V8 CPU profiles of the servers to bench/profiles/ (figures 1-3); read them
// with `node bench/profile-summary.js`. --quick is a short smoke run (results.md untouched).
// BENCH_PACKAGE_DIR=dir uses an already built package there instead of a snapshot of dist/.
const { cpSync, existsSync, mkdirSync, rmSync, writeFileSync } = require('node:fs')
const { join } = require('node:path')
const os = require('node:os')
const { setTimeout: sleep } = require('node:timers/promises')
const { median, spawnChild } = require('./common')

const root = join(__dirname, '..')
const args = process.argv.slice(2)
const only = (args.find((a) => a.startsWith('--only=')) ?? '--only=1,2,3,4,5').slice(7).split(',').map(Number)
const profile = args.includes('--profile')
const quick = args.includes('--quick')

// the built package, copied so that a rebuild during the run cannot change what is measured
function packageDir () {
  if (process.env.BENCH_PACKAGE_DIR) return process.env.BENCH_PACKAGE_DIR
  const dist = join(root, 'dist')
  if (!existsSync(join(dist, 'index.js'))) {
    throw new Error('dist/ is not built: run `npm run bench` (it builds first) or `node scripts/build.js`')
  }
  const snapshot = join(__dirname, '.dist')
  rmSync(snapshot, { recursive: true, force: true })
  cpSync(dist, snapshot, { recursive: true })
  return snapshot
}

const rows = []
function row (figure, value, baseline, ratio, goal, met) {
  rows.push({ figure, value, baseline, ratio, goal, met })
}
const fmt = {
  us: (v) => `${v.toFixed(1)} µs`,
  rate: (v, unit) => `${Math.round(v).toLocaleString('en-US')} ${unit}`,
  ratio: (v) => `${v.toFixed(3)}×`
}

/** Server CPU per operation and throughput of one `load` call against `server`. */
const opsServed = {}
async function measure (server, load, message) {
  const before = await server.call({ cmd: 'cpu' })
  const result = await load.call(message)
  opsServed[server.name] = (opsServed[server.name] ?? 0) + result.ops
  // let the server finish the closing handshakes that belong to this round
  await sleep(50)
  const after = await server.call({ cmd: 'cpu' })
  return perOp(before, after, result)
}

function perOp (before, after, result) {
  return {
    cpuPerOp: (after.cpu - before.cpu) / result.ops,
    gcPerOp: (after.gc - before.gc) / result.ops,
    rate: result.ops / (result.ms / 1000),
    result
  }
}

/**
 * The servers driven by one load call whose operations take turns between them (A B A B …),
 * so that all meet the same moments of a noisy machine; each one's CPU time is its own.
 */
async function measureAll (servers, load, message) {
  const before = await Promise.all(servers.map((s) => s.call({ cmd: 'cpu' })))
  const result = await load.call(message)
  for (const s of servers) opsServed[s.name] = (opsServed[s.name] ?? 0) + result.ops
  // let the servers finish the closing handshakes that belong to this round
  await sleep(50)
  const after = await Promise.all(servers.map((s) => s.call({ cmd: 'cpu' })))
  return servers.map((_, i) => perOp(before[i], after[i], result))
}

/**
 * `rounds` of `measureAll` after `warmup` unmeasured ones; the summary of every server but
 * the last against the last, the baseline.
 */
async function together (name, { warmup, rounds }, run) {
  for (let i = 0; i < warmup; i++) await run()
  const runs = []
  for (let i = 0; i < rounds; i++) {
    const round = await run()
    round.forEach((r, k) => { (runs[k] ??= []).push(r) })
    const cpu = round.map((r) => `${r.cpuPerOp.toFixed(1)}`).join(' / ')
    const gc = round.map((r) => `${r.gcPerOp.toFixed(1)}`).join(' / ')
    process.stdout.write(`  ${name} round ${i + 1}/${rounds}: cpu/op ${cpu} µs (gc ${gc})\n`)
  }
  const baseline = runs.at(-1)
  return runs.slice(0, -1).map((a) => summary(a, baseline))
}

function summary (a, b) {
  const stat = (list, key) => median(list.map((x) => x[key]))
  const ratio = (key) => median(a.map((x, i) => x[key] / b[i][key]))
  return {
    cpu: { a: stat(a, 'cpuPerOp'), b: stat(b, 'cpuPerOp'), ratio: ratio('cpuPerOp') },
    rate: { a: stat(a, 'rate'), b: stat(b, 'rate'), ratio: ratio('rate') },
    runs: { a, b }
  }
}

/**
 * A B A B …: `warmup` unmeasured rounds, then `rounds` measured ones. Returns the medians of
 * each side and the median of the per-round ratios (A over B), which cancels slow drifts of
 * the machine better than a ratio of medians.
 */
async function alternate (name, { warmup, rounds }, runA, runB) {
  for (let i = 0; i < warmup; i++) { await runA(); await runB() }
  const a = []
  const b = []
  for (let i = 0; i < rounds; i++) {
    a.push(await runA())
    b.push(await runB())
    process.stdout.write(`  ${name} round ${i + 1}/${rounds}: cpu/op ${a[i].cpuPerOp.toFixed(1)} vs ${b[i].cpuPerOp.toFixed(1)} µs (gc ${a[i].gcPerOp.toFixed(1)} vs ${b[i].gcPerOp.toFixed(1)})\n`)
  }
  return summary(a, b)
}

async function httpFigures (dir) {
  const env = { ...process.env, BENCH_PACKAGE_DIR: dir }
  const profileDir = join(__dirname, 'profiles')
  const profiled = (name) => {
    if (!profile) return []
    mkdirSync(join(profileDir, name), { recursive: true })
    return ['--cpu-prof', `--cpu-prof-dir=${join(profileDir, name)}`]
  }
  const guarded = spawnChild('server.js', ['guarded'], { env, execArgv: profiled('guarded') })
  const stored = spawnChild('server.js', ['guarded-store'], { env, execArgv: profiled('guarded-store') })
  const baseline = spawnChild('server.js', ['baseline'], { env, execArgv: profiled('baseline') })
  const load = spawnChild('load.js', [], { env })
  try {
    const scale = quick ? 0.25 : 1
    const side = async (server, tokenPath) => {
      const address = await server.call({ cmd: 'address' })
      return { server, port: address.port, origin: address.origin, tokenPath }
    }
    const A = await side(guarded, '/websocket-token')
    const S = await side(stored, '/websocket-token')
    const B = await side(baseline, '/plain-token')

    const target = (s) => ({ port: s.port, origin: s.origin, tokenPath: s.tokenPath })
    const all = [A, S, B]
    if (only.includes(1)) {
      console.log('1. connection flow: token request + upgrade, 8 at a time, the servers taking turns (guard / guard with memory store / baseline)')
      const count = Math.round(120 * scale)
      const [r, t] = await together('flow', { warmup: 3, rounds: quick ? 5 : 21 }, () =>
        measureAll(all.map((x) => x.server), load, { cmd: 'flow', targets: all.map(target), count, concurrency: 8 }))
      row('1. Connection flow (token route + guarded upgrade): server CPU per flow', fmt.us(r.cpu.a), fmt.us(r.cpu.b), r.cpu.ratio, '≤ 1.05×', r.cpu.ratio <= 1.05)
      row('1. Connection flow, tokens in the in-memory store: server CPU per flow', fmt.us(t.cpu.a), fmt.us(t.cpu.b), t.cpu.ratio, '≤ 1.05×', t.cpu.ratio <= 1.05)
    }
    if (only.includes(2)) {
      console.log('2. upgrade alone: one token per session, all issued before the first round; the servers taking turns')
      const count = Math.round(120 * scale)
      const plan = { warmup: only.includes(1) ? 3 : 10, rounds: quick ? 5 : 21 }
      // issued up front, so that no round pays for the token route's garbage
      for (const s of all) {
        await load.call({ cmd: 'prepare', port: s.port, tokenPath: s.tokenPath, sessions: count * (plan.warmup + plan.rounds) })
      }
      const [r, t] = await together('upgrade', plan, () =>
        measureAll(all.map((x) => x.server), load, { cmd: 'upgrade', targets: all.map(target), count, concurrency: 8 }))
      row('2. Upgrade alone (guarded, token issued beforehand): server CPU per upgrade', fmt.us(r.cpu.a), fmt.us(r.cpu.b), r.cpu.ratio, '≤ 1.05×', r.cpu.ratio <= 1.05)
      row('2. Upgrade alone, tokens in the in-memory store (no session save): server CPU per upgrade', fmt.us(t.cpu.a), fmt.us(t.cpu.b), t.cpu.ratio, '≤ 1.05×', t.cpu.ratio <= 1.05)
    }
    if (only.includes(3)) {
      // Each autocannon connection is one session asking for token after token. With the
      // default maxTokens the session soon holds 8 tokens, and @fastify/session serialises and
      // hashes the whole session on every request; with maxTokens 1 it holds one token, as the
      // baseline's session holds one value.
      const one = spawnChild('server.js', ['guarded', '1'], { env, execArgv: profiled('guarded-1') })
      try {
        const A1 = await side(one, '/websocket-token')
        const duration = quick ? 1 : 2
        const cannon = (s) => async () => {
          const m = await measure(s.server, load, { cmd: 'cannon', port: s.port, path: s.tokenPath, connections: 10, duration })
          return { ...m, rate: m.result.rps }
        }
        console.log('3. token route throughput: autocannon, 10 connections, one session each, maxTokens 1')
        let r = await alternate('token route, maxTokens 1', { warmup: 2, rounds: quick ? 2 : 5 }, cannon(A1), cannon(B))
        row('3. Token route, one token outstanding per session (maxTokens 1): requests per second', fmt.rate(r.rate.a, 'req/s'), fmt.rate(r.rate.b, 'req/s'), r.rate.ratio, '≥ 0.95×', r.rate.ratio >= 0.95)
        row('3. Token route, maxTokens 1: server CPU per request', fmt.us(r.cpu.a), fmt.us(r.cpu.b), r.cpu.ratio, '(informative)', null)
        console.log('3. token route throughput: the same with the default maxTokens 8, sessions full')
        r = await alternate('token route, maxTokens 8', { warmup: 1, rounds: quick ? 2 : 5 }, cannon(A), cannon(B))
        row('3. Token route, 8 tokens outstanding per session (default maxTokens): requests per second', fmt.rate(r.rate.a, 'req/s'), fmt.rate(r.rate.b, 'req/s'), r.rate.ratio, '≥ 0.95×', r.rate.ratio >= 0.95)
        row('3. Token route, maxTokens 8: server CPU per request', fmt.us(r.cpu.a), fmt.us(r.cpu.b), r.cpu.ratio, '(informative)', null)
      } finally {
        await one.stop()
      }
    }
  } finally {
    await Promise.all([guarded.stop(), stored.stop(), baseline.stop(), load.stop()])
  }
  if (profile) {
    writeFileSync(join(profileDir, 'ops.json'), JSON.stringify(opsServed))
    console.log(`CPU profiles of both servers written to ${profileDir}; summarise with node bench/profile-summary.js`)
  }
}

/** Figures computed inside one child (redis.js, memory.js): it answers with rows. */
async function childFigures (file, dir, execArgv = []) {
  const child = spawnChild(file, [], { env: { ...process.env, BENCH_PACKAGE_DIR: dir }, execArgv })
  try {
    const out = await child.call({ cmd: 'run', quick })
    for (const line of out.notes ?? []) console.log(`  ${line}`)
    rows.push(...out.rows)
  } finally {
    await child.stop()
  }
}

function machine () {
  const cpus = os.cpus()
  return `${cpus[0]?.model.trim() ?? 'unknown CPU'}, ${cpus.length} cores (${os.availableParallelism()} available), Node ${process.version}, ${os.platform()} ${os.release()}`
}

function table () {
  const lines = [
    '| figure | guard | baseline | ratio | goal | met? |',
    '|---|---|---|---|---|---|'
  ]
  for (const r of rows) {
    const ratio = typeof r.ratio === 'number' ? fmt.ratio(r.ratio) : r.ratio
    const met = r.met === null ? '' : r.met ? 'yes' : '**no**'
    lines.push(`| ${r.figure} | ${r.value} | ${r.baseline} | ${ratio} | ${r.goal} | ${met} |`)
  }
  return lines.join('\n')
}

async function main () {
  const started = Date.now()
  const dir = packageDir()
  if (only.some((n) => n <= 3)) await httpFigures(dir)
  if (only.includes(4)) {
    console.log('4. Redis store: round trips and consume latency')
    await childFigures('redis.js', dir)
  }
  if (only.includes(5)) {
    console.log('5. memory: bytes per token, a flooded session, 100,000 sessions and their expiry')
    await childFigures('memory.js', dir, ['--expose-gc'])
  }
  const text = [
    `Machine: ${machine()}. Run of ${new Date().toISOString().slice(0, 10)}, ${Math.round((Date.now() - started) / 1000)} s${quick ? ' (--quick)' : ''}.`,
    'Ratios are medians of per-round ratios (guard over baseline) after a warm-up; the figures beside them are the medians of each side. CPU figures are the server process\'s own CPU time per operation.',
    '',
    table(),
    ''
  ].join('\n')
  console.log('\n' + text)
  if (!quick && !profile && only.length === 5) {
    writeFileSync(join(__dirname, 'results.md'), text)
    console.log('written to bench/results.md')
  }
  const missed = rows.filter((r) => r.met === false)
  for (const r of missed) console.log(`goal not reached: ${r.figure} (${typeof r.ratio === 'number' ? fmt.ratio(r.ratio) : r.ratio}, goal ${r.goal})`)
}

main().catch((err) => {
  console.error(err)
  process.exitCode = 1
})
