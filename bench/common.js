'use strict'
// Small helpers shared by the bench processes: statistics, goals, the child-process
// protocol, and where the built package is loaded from.
const { once } = require('node:events')
const { fork } = require('node:child_process')
const { join } = require('node:path')

// the allowed origin of every bench server, sent by the load generator
const ORIGIN = 'http://bench.example'

/** Where bench/run.js put the snapshot of dist/ that every child loads. */
function packageEntry () {
  const dir = process.env.BENCH_PACKAGE_DIR
  if (dir === undefined || dir === '') throw new Error('BENCH_PACKAGE_DIR is not set: run the benches through bench/run.js')
  return join(dir, 'index.js')
}

function loadPackage () {
  const mod = require(packageEntry())
  return { plugin: mod.default ?? mod, mod }
}

function median (values) {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
}

function percentile (values, p) {
  const sorted = [...values].sort((a, b) => a - b)
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil(p / 100 * sorted.length) - 1))
  return sorted[index]
}

/**
 * A goal is data: `{ max: 1.06 }`, `{ min: 0.95 }` or `{ equal: 1 }`, with an optional
 * `unit` (' B'); `null` for a figure that only informs. Its text and its check both read
 * that one value.
 */
function goalText (goal) {
  if (goal === null) return '(informative)'
  // 1.1 prints as 1.10, as ratios are written
  const n = (v) => Number.isInteger(v) || String(v).split('.')[1].length >= 2 ? String(v) : v.toFixed(2)
  const unit = goal.unit ?? ''
  if (goal.max !== undefined) return `≤ ${n(goal.max)}${unit}`
  if (goal.min !== undefined) return `≥ ${n(goal.min)}${unit}`
  if (goal.equal !== undefined) return `= ${n(goal.equal)}${unit}`
  throw new Error(`a goal has max, min or equal: ${JSON.stringify(goal)}`)
}

/** Whether `value` meets `goal`: true, false, or null for an informative figure. */
function goalMet (goal, value) {
  if (goal === null) return null
  if (goal.max !== undefined) return value <= goal.max
  if (goal.min !== undefined) return value >= goal.min
  if (goal.equal !== undefined) return value === goal.equal
  throw new Error(`a goal has max, min or equal: ${JSON.stringify(goal)}`)
}

/** The goal's limit, for telling a miss from noise. */
function goalLimit (goal) {
  return goal === null ? undefined : goal.max ?? goal.min ?? goal.equal
}

/**
 * A forked child speaking a request/answer protocol over IPC: `call(message)` resolves with
 * the child's answer to it. Children answer in order, one message at a time.
 */
function spawnChild (file, args, options = {}) {
  const child = fork(join(__dirname, file), args, {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    ...options
  })
  let nextId = 1
  const pending = new Map()
  child.on('message', (msg) => {
    const waiter = pending.get(msg.id)
    if (waiter === undefined) return
    pending.delete(msg.id)
    if (msg.error !== undefined) waiter.reject(new Error(`${file}: ${msg.error}`))
    else waiter.resolve(msg.result)
  })
  child.on('exit', (code, signal) => {
    for (const waiter of pending.values()) waiter.reject(new Error(`${file} exited (${code ?? signal})`))
    pending.clear()
  })
  return {
    child,
    call (message) {
      const id = nextId++
      return new Promise((resolve, reject) => {
        pending.set(id, { resolve, reject })
        child.send({ ...message, id })
      })
    },
    async stop () {
      if (child.exitCode !== null || child.signalCode !== null) return
      const exited = once(child, 'exit')
      child.send({ cmd: 'exit', id: 0 })
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000)
      await exited
      clearTimeout(timer)
    }
  }
}

/** The child's side of `spawnChild`: `handlers[cmd](message)` answers each request. */
function serve (handlers) {
  let queue = Promise.resolve()
  process.on('message', (msg) => {
    if (msg.cmd === 'exit') {
      queue.then(async () => {
        await handlers.exit?.()
        process.exit(0)
      })
      return
    }
    queue = queue.then(async () => {
      try {
        const handler = handlers[msg.cmd]
        if (handler === undefined) throw new Error(`unknown command ${msg.cmd}`)
        process.send({ id: msg.id, result: await handler(msg) })
      } catch (err) {
        process.send({ id: msg.id, error: err && err.stack ? err.stack : String(err) })
      }
    })
  })
  process.on('disconnect', () => process.exit(0))
}

module.exports = { ORIGIN, goalText, goalMet, goalLimit, packageEntry, loadPackage, median, percentile, spawnChild, serve }
