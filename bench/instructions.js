'use strict'
// Instructions per flow under valgrind's callgrind: what each server executes, counted,
// not timed, so that a shared, noisy machine changes nothing but how long it takes
// (`npm run bench -- --instructions`, about 12 minutes; needs valgrind, Debian's package).
// Each server runs alone under callgrind, with V8 on one thread (`--single-threaded`: the
// JIT and the GC run on the main thread, at points the work decides rather than the clock)
// and without the memory reducer (a timer-driven GC). It serves warm-up flows until V8 has
// stopped compiling, then callgrind's counters are zeroed, `measured` flows are served, and
// the counters are dumped. Two servers run at a time, each with a load generator of its own
// that sends one flow at a time.
const { execFileSync } = require('node:child_process')
const { mkdtempSync, readdirSync, readFileSync, rmSync } = require('node:fs')
const { tmpdir } = require('node:os')
const { join } = require('node:path')
const { setTimeout: sleep } = require('node:timers/promises')
const { warmUp, warmupFlowsOf } = require('./measure')

const SERVERS = ['guard', 'hand-written', 'floor', 'baseline', 'baseline-2']

function hasValgrind () {
  try {
    execFileSync('valgrind', ['--version'], { stdio: 'ignore' })
    execFileSync('callgrind_control', ['-h'], { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
}

// V8's garbage collection, by its two entry points that never call each other: a collection
// (scavenge or mark-compact) and a step of incremental marking. Whether a mark-compact falls
// inside the counted flows or just outside them moves a total by 10-30%, so each count is
// also given without them.
const GC_ENTRIES = [
  'v8::internal::Heap::CollectGarbage(v8::internal::AllocationSpace, v8::internal::GarbageCollectionReason, v8::GCCallbackFlags) [',
  'v8::internal::IncrementalMarking::Step(v8::base::TimeDelta, unsigned long, v8::internal::StepOrigin) ['
]

/** Instructions inside the GC's entry points (inclusive), from callgrind_annotate. */
function gcOf (file) {
  const text = execFileSync('callgrind_annotate', ['--inclusive=yes', '--threshold=100', file], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 })
  let gc = 0
  for (const line of text.split('\n')) {
    if (GC_ENTRIES.some((entry) => line.includes(`:${entry}`))) gc += Number(line.trim().split(' ')[0].replaceAll(',', ''))
  }
  return gc
}

/** The instructions one server executes per flow, counted over `measured` flows: `{ total, gc }`. */
async function countOne (ctx, name, dir, { warmup, measured, concurrency, sessions, logger }) {
  const variant = name.replace(/-2$/, '')
  const execArgv = ['--tool=callgrind', `--callgrind-out-file=${join(dir, `${name}.%p`)}`, '-q',
    process.execPath, '--single-threaded', '--no-memory-reducer']
  const server = ctx.spawn('server.js', ['--variant', variant, '--logger', logger, '--name', `instructions-${name}`], execArgv, 'valgrind')
  const load = ctx.spawn('load.js', [])
  try {
    const targets = [await server.call({ cmd: 'address' })]
    await warmUp(load, targets, warmup, { concurrency, sessions })
    const pid = String(server.child.pid)
    // what the last flows left (closing handshakes) is done before counting starts
    await sleep(500)
    execFileSync('callgrind_control', ['--zero', pid], { stdio: 'ignore' })
    await load.call({ cmd: 'flow', targets, count: measured, concurrency, sessions, first: 0 })
    await sleep(500)
    execFileSync('callgrind_control', ['--dump', pid], { stdio: 'ignore' })
    const dump = readdirSync(dir).find((f) => f.startsWith(`${name}.${pid}.`))
    const summary = dump === undefined ? null : /^summary: (\d+)/m.exec(readFileSync(join(dir, dump), 'utf8'))
    if (summary === null) throw new Error(`callgrind wrote no counts for ${name}`)
    const total = Number(summary[1]) / measured
    const gc = gcOf(join(dir, dump)) / measured
    ctx.log(`instructions: ${name} ${(total / 1000).toFixed(1)}k per flow, of which GC ${(gc / 1000).toFixed(1)}k`)
    return { total, gc }
  } finally {
    await load.stop()
    await server.stop()
  }
}

/** Instructions per flow of each server, `{ guard: { total, gc }, 'hand-written', floor, baseline, 'baseline-2' }`. */
async function instructions (ctx) {
  if (!hasValgrind()) throw new Error('valgrind and callgrind_control are needed (apt-get install valgrind)')
  // BENCH_INSTRUCTIONS_LOGGER=on counts with the logger on (info, into a stream that drops the lines)
  const logger = process.env.BENCH_INSTRUCTIONS_LOGGER === 'on' ? 'on' : 'off'
  // one flow at a time: with several in flight, how many requests a server finds waiting at
  // once (and so how it batches reads and writes) depends on its speed against the client's
  const plan = ctx.quick
    ? { warmup: 500, measured: 100, concurrency: 1, sessions: 16, logger }
    : { warmup: warmupFlowsOf(ctx.plan.flows), measured: 1000, concurrency: 1, sessions: 16, logger }
  const dir = mkdtempSync(join(tmpdir(), 'wsg-callgrind-'))
  try {
    const out = {}
    for (let i = 0; i < SERVERS.length; i += 2) {
      const pair = SERVERS.slice(i, i + 2)
      const counts = await Promise.all(pair.map((name) => countOne(ctx, name, dir, plan)))
      pair.forEach((name, k) => { out[name] = counts[k] })
    }
    return { counts: out, plan }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

module.exports = { instructions }
