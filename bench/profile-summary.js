'use strict'
// Compares the V8 CPU profiles that `node bench/run.js --only N --profile` writes for two
// servers (by default the guard and the baseline of the logger-off comparison): self time
// per operation of each function on both sides, largest differences first, and the time
// spent inside the guard's own code. Server names are the directories of bench/profiles/.
//   node bench/profile-summary.js [--dir bench/profiles] [--top 30]
//                                 [--guarded logger-off-guard] [--baseline logger-off-baseline]
const { readFileSync, readdirSync } = require('node:fs')
const { join, relative } = require('node:path')
const { parseArgs } = require('node:util')

const { values: args } = parseArgs({
  options: {
    dir: { type: 'string', default: join(__dirname, 'profiles') },
    top: { type: 'string', default: '30' },
    guarded: { type: 'string', default: 'logger-off-guard' },
    baseline: { type: 'string', default: 'logger-off-baseline' }
  }
})
const dir = args.dir
const top = Number(args.top)
const ops = JSON.parse(readFileSync(join(dir, 'ops.json'), 'utf8'))

function isGuardCode (url) {
  return /\/bench\/\.(dist|dev\/dist)\//.test(url)
}

function where (frame) {
  const url = frame.url.startsWith('file://') ? relative(process.cwd(), frame.url.slice(7)) : frame.url
  return `${frame.functionName || '(anonymous)'} ${url}:${frame.lineNumber + 1}`
}

/** Self time per function, and inclusive time of the guard's functions, in µs. */
function load (name) {
  const sub = join(dir, name)
  const files = readdirSync(sub).filter((f) => f.endsWith('.cpuprofile'))
  const self = new Map()
  const guard = new Map()
  let busy = 0
  let inGuard = 0
  for (const f of files) {
    const prof = JSON.parse(readFileSync(join(sub, f), 'utf8'))
    const byId = new Map(prof.nodes.map((n) => [n.id, n]))
    const parent = new Map()
    for (const n of prof.nodes) for (const c of n.children ?? []) parent.set(c, n.id)
    for (let i = 0; i < prof.samples.length; i++) {
      const dt = prof.timeDeltas[i + 1] ?? 0
      const node = byId.get(prof.samples[i])
      const fn = node.callFrame.functionName
      if (fn === '(idle)' || fn === '(program)') continue
      busy += dt
      const key = where(node.callFrame)
      self.set(key, (self.get(key) ?? 0) + dt)
      const seen = new Set()
      for (let id = node.id; id !== undefined; id = parent.get(id)) {
        const frame = byId.get(id).callFrame
        if (!isGuardCode(frame.url)) continue
        const k = where(frame)
        if (!seen.has(k)) { seen.add(k); guard.set(k, (guard.get(k) ?? 0) + dt) }
      }
      if (seen.size > 0) inGuard += dt
    }
  }
  return { self, guard, busy, inGuard }
}

const g = load(args.guarded)
const b = load(args.baseline)
const per = (us, name) => us / ops[name]
const f = (v) => v.toFixed(2).padStart(8)
console.log(`operations: ${args.guarded} ${ops[args.guarded]}, ${args.baseline} ${ops[args.baseline]}`)
console.log(`busy µs/op: ${args.guarded} ${f(per(g.busy, args.guarded))}, ${args.baseline} ${f(per(b.busy, args.baseline))}; inside the guard's code ${f(per(g.inGuard, args.guarded))}\n`)

const keys = new Set([...g.self.keys(), ...b.self.keys()])
const diff = [...keys].map((k) => {
  const gv = per(g.self.get(k) ?? 0, args.guarded)
  const bv = per(b.self.get(k) ?? 0, args.baseline)
  return { k, gv, bv, d: gv - bv }
}).sort((x, y) => Math.abs(y.d) - Math.abs(x.d))
console.log('self µs/op   guarded baseline     diff')
for (const { k, gv, bv, d } of diff.slice(0, top)) console.log(`          ${f(gv)} ${f(bv)} ${f(d)}  ${k}`)
console.log('\ninclusive µs/op of the guard\'s functions:')
for (const [k, t] of [...g.guard].sort((x, y) => y[1] - x[1]).slice(0, top)) console.log(`${f(per(t, args.guarded))}  ${k}`)
