// The attacker's page. It runs on another origin, in a browser that holds the chat's session
// cookie, and tries every way it has to open the chat's WebSocket as the victim.
//
// A page learns nothing from a refusal (a refused upgrade is a close with 1006, a refused
// fetch a TypeError), so the demo's server narrates: each attempt carries `?attempt=<id>`, and
// the guard's `onReject` reports the refusal of that id (status and code, never a token) over
// this origin's event stream `/events`, which also says when a token has leaked.
// for the end-to-end tests, which add ?manual to run attempts one by one
const manual = new URLSearchParams(location.search).has('manual')
const config = await (await fetch('/demo.json')).json()
const victim = new URL(config.victim)
const socketBase = `ws://${victim.host}`

document.getElementById('origin').textContent = location.origin
document.getElementById('target').textContent = socketBase + '/chat'

/** how long an attempt waits for the server's report of its refusal */
const REPORT_WAIT = 3000

/** the refusals reported so far, by attempt id, and who waits for one */
const reports = new Map()
const waiting = new Map()
/** the leaked token's state, from the stream: { leaked, used, version } */
let loot = { leaked: false, used: false, version: -1 }
let runs = 0

const events = new EventSource('/events')
events.addEventListener('refusal', (event) => {
  const report = JSON.parse(event.data)
  reports.set(report.attempt, report)
  waiting.get(report.attempt)?.(report)
})
const ready = new Promise((resolve) => {
  events.addEventListener('loot', (event) => {
    const state = JSON.parse(event.data)
    const changed = state.version !== loot.version
    loot = state
    resolve()
    // the page updates by itself when a token leaks, or when the victim spends it
    if (changed && !manual) queueRun()
  })
})

/** The server's report of the refusal of attempt `id`, or `null` if none came in time. */
function reportOf (id) {
  if (reports.has(id)) return Promise.resolve(reports.get(id))
  return new Promise((resolve) => {
    const timer = setTimeout(() => { waiting.delete(id); resolve(null) }, REPORT_WAIT)
    waiting.set(id, (report) => { clearTimeout(timer); waiting.delete(id); resolve(report) })
  })
}

let sequence = 0
function newId (key) {
  return `${++sequence}-${key}`.slice(0, 40)
}

/** Adds the server's report (if the attempt was refused) to a result. */
async function withReport (id, result) {
  if (result.outcome !== 'refused') return result
  const report = await reportOf(id)
  return report === null
    ? { ...result, code: null }
    : { ...result, statusCode: report.statusCode, code: report.code, origin: report.origin }
}

/** Opens a socket: 'opened' (hijacked) or 'refused' (closed before it opened). */
function trySocket (url, protocols = []) {
  return new Promise((resolve) => {
    const socket = new WebSocket(url, protocols)
    socket.addEventListener('open', () => {
      socket.addEventListener('message', (event) => {
        const message = JSON.parse(event.data)
        if (message.type === 'welcome') {
          resolve({ outcome: 'opened', detail: `the server took us for ${message.name}` })
          socket.close()
        }
      })
    })
    socket.addEventListener('close', (event) => {
      // the browser tells the page nothing about why: a refused upgrade is just code 1006
      resolve({ outcome: 'refused', detail: `the page saw: socket closed (code ${event.code}) before it opened` })
    })
  })
}

async function leakedToken () {
  return (await (await fetch('/loot')).json()).token
}

const attempts = {
  /** the classic hijack: the browser adds the cookie, nothing else is needed */
  async plainSocket () {
    const id = newId('plain')
    return withReport(id, await trySocket(`${socketBase}/chat?attempt=${id}`))
  },
  /** fetch a token as the chat page does; CORS would hide the answer, but the server must not issue */
  async readToken () {
    const id = newId('read')
    let result
    try {
      const res = await fetch(`${config.victim}/websocket-token?path=/chat&attempt=${id}`, { credentials: 'include' })
      const body = await res.json()
      result = typeof body.token === 'string'
        ? { outcome: 'opened', detail: 'read a token' }
        : { outcome: 'refused', detail: `the page saw: HTTP ${res.status}` }
    } catch (err) {
      result = { outcome: 'refused', detail: `the page saw: ${err.name}: ${err.message}` }
    }
    return withReport(id, result)
  },
  async leakedInQuery (token) {
    const id = newId('query')
    return withReport(id, await trySocket(`${socketBase}/chat?token=${encodeURIComponent(token)}&attempt=${id}`))
  },
  async leakedInProtocol (token) {
    const id = newId('protocol')
    return withReport(id, await trySocket(`${socketBase}/chat?attempt=${id}`, ['websocket-guard', 'websocket-guard.' + token]))
  },
  /** the attacker's server replays the spent token, with the chat's own Origin: only the token stops it */
  async replaySpent () {
    const id = newId('replay')
    const res = await fetch('/replay', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ attempt: id }) })
    return withReport(id, await res.json())
  },
  /** the control: the same plain socket to a route without the guard */
  unguarded: () => trySocket(`${socketBase}/unguarded?attempt=${newId('control')}`)
}

const rows = [
  ['plainSocket', 'Plain WebSocket to /chat, with the victim\'s cookie'],
  ['readToken', 'Cross-origin fetch of a token from /websocket-token'],
  ['leakedInQuery', 'Leaked token in the query: /chat?token=…'],
  ['leakedInProtocol', 'Leaked token as a subprotocol: websocket-guard.…'],
  ['replaySpent', 'Replay of the spent token by the attacker\'s server, with a forged Origin (the chat\'s): only the token stops it'],
  ['unguarded', 'Control: plain WebSocket to /unguarded, a route without the guard']
]
const LEAKED = new Set(['leakedInQuery', 'leakedInProtocol', 'replaySpent'])

function render (results) {
  const body = document.getElementById('attempts')
  body.replaceChildren()
  for (const [key, label] of rows) {
    const result = results[key] ?? { outcome: 'pending', detail: '' }
    const tr = document.createElement('tr')
    tr.dataset.attempt = key
    if (key === 'unguarded') tr.className = 'control'
    const what = document.createElement('td')
    what.textContent = label
    const cell = document.createElement('td')
    cell.className = 'result ' + result.outcome
    const words = { refused: 'refused', opened: key === 'unguarded' ? 'hijacked (no guard)' : 'HIJACKED', skipped: 'skipped', pending: '…' }
    const outcome = document.createElement('span')
    outcome.className = 'outcome'
    outcome.textContent = words[result.outcome]
    cell.append(outcome)
    if (result.outcome === 'refused') {
      const code = document.createElement('span')
      code.className = 'code'
      code.textContent = result.code === null
        ? 'no report from the server'
        : `${result.statusCode} ${result.code}`
      cell.append(code)
    }
    const detail = document.createElement('span')
    detail.className = 'detail'
    detail.textContent = result.detail
    cell.append(detail)
    tr.append(what, cell)
    body.append(tr)
  }
}

/** Runs every attempt, one after the other, and shows each result as it comes. */
async function run () {
  await ready
  runs++
  const results = {}
  render(results)
  const token = await leakedToken()
  for (const [key] of rows) {
    if (LEAKED.has(key) && token === null) {
      results[key] = { outcome: 'skipped', detail: 'no leaked token yet: click "Leak a token" on the chat page' }
    } else if (key === 'replaySpent' && !loot.used) {
      results[key] = { outcome: 'skipped', detail: 'waiting until the victim has spent the leaked token ("Use the leaked token myself" on the chat page)' }
    } else {
      results[key] = await attempts[key](token)
    }
    render(results)
  }
  return results
}

let latest = Promise.resolve(null)
/** Runs the attack after the one under way, if any. */
function queueRun () {
  latest = latest.then(run, run)
  return latest
}

document.getElementById('again').addEventListener('click', () => { queueRun() })

window.attack = {
  ...attempts,
  leakedToken,
  run,
  ready,
  /** the latest run (the page runs by itself unless ?manual) */
  get done () { return latest },
  get runs () { return runs },
  get loot () { return loot }
}
