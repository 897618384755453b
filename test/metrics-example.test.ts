// examples/metrics.js as a user runs it (its own process, the built package): a scripted run of
// tokens, accepts on each transport, refusals of each code a client can cause, a client close
// and a logout, then a scrape of /metrics whose every series is compared with what the run
// did, as the clients saw it. Needs `npm run build` first, as `npm test` does.
import t, { type Test } from 'tap'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { join } from 'node:path'
import { Client, close, type ConnectResult } from './helpers/app'
import { builtPackage, eventually, fakeToken, sleep } from './helpers/util'

const EXAMPLE = join(__dirname, '..', 'examples', 'metrics.js')

/** Starts the example on a free port; killed in teardown. Resolves with its URL. */
async function startExample (t: Test): Promise<string> {
  const child = spawn(process.execPath, [EXAMPLE], { env: { ...process.env, PORT: '0' }, stdio: ['ignore', 'pipe', 'pipe'] })
  t.teardown(async () => {
    if (child.exitCode !== null || child.signalCode !== null) return
    const exited = once(child, 'exit')
    child.kill('SIGTERM')
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000)
    await exited
    clearTimeout(timer)
  })
  let stderr = ''
  child.stderr.on('data', (chunk) => { stderr += String(chunk) })
  let stdout = ''
  return await new Promise((resolve, reject) => {
    child.stdout.on('data', (chunk) => {
      stdout += String(chunk)
      const url = /metrics: (http:\/\/127\.0\.0\.1:\d+)\/metrics/.exec(stdout)?.[1]
      if (url !== undefined) resolve(url)
    })
    child.once('exit', (code) => { reject(new Error(`examples/metrics.js exited with ${String(code)}: ${stderr}`)) })
  })
}

/** Prometheus text format: every sample as `name{labels}` (labels sorted) to its value. */
function parseMetrics (text: string): Map<string, number> {
  const samples = new Map<string, number>()
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const match = /^(\w+)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (match === null) throw new Error(`not a sample: ${line}`)
    const labels = [...(match[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map(([, k, v]) => `${k as string}=${v as string}`).sort()
    samples.set(`${match[1] as string}{${labels.join(',')}}`, Number(match[3]))
  }
  return samples
}

/** `name{k=v,…}` as `parseMetrics` keys it. */
const key = (name: string, labels: Record<string, string>): string =>
  `${name}{${Object.entries(labels).map(([k, v]) => `${k}=${v}`).sort().join(',')}}`

/** Counts by key, as the run goes. */
class Tally extends Map<string, number> {
  add (name: string, labels: Record<string, string>, n = 1): void {
    const k = key(name, labels)
    this.set(k, (this.get(k) ?? 0) + n)
  }
}

t.test('examples/metrics.js: after a scripted run, every count on /metrics is what the run did', async (t) => {
  if (!builtPackage(t, 'examples/metrics.js', ['dist/index.js', 'dist/client.mjs'])) return
  const base = await startExample(t)
  const expected = new Tally()
  const secrets: string[] = []
  const sockets: ConnectResult[] = []
  t.teardown(async () => { await Promise.all(sockets.map(close)) })

  async function token (user: Client, query = ''): Promise<string> {
    const value = await user.token(query)
    secrets.push(value)
    expected.add('websocket_guard_tokens_issued_total', { route: '/websocket-token' })
    return value
  }
  async function accepted (user: Client, path: string, transport: 'query' | 'protocol', value: string): Promise<ConnectResult> {
    const r = transport === 'query'
      ? await user.connect(`${path}?token=${value}`)
      : await user.connect(path, { protocols: ['websocket-guard', 'websocket-guard.' + value] })
    t.equal(r.opened, true, `${path} (${transport}) opens`)
    sockets.push(r)
    expected.add('websocket_guard_accepted_total', { route: '/chat/:room', transport })
    return r
  }
  /** A refusal, counted by the code and status the client got. */
  async function refused (what: string, route: string, answer: Promise<{ status: number | null, body: any }>, origin?: string): Promise<void> {
    const r = await answer
    t.type(r.body?.code, 'string', `${what}: refused (${String(r.status)} ${String(r.body?.code)})`)
    expected.add('websocket_guard_refused_total', { route, code: r.body.code, status_code: String(r.status) })
    if (r.body.code === 'WS_GUARD_ORIGIN_NOT_ALLOWED') expected.add('websocket_guard_origin_refusals_total', { origin: origin ?? 'none' })
  }

  // alice: three sockets (query, subprotocol, a token bound to its path); bob: one
  const alice = new Client(base)
  const bob = new Client(base)
  const aliceSockets = [
    await accepted(alice, '/chat/lobby', 'query', await token(alice)),
    await accepted(alice, '/chat/kitchen', 'protocol', await token(alice)),
    await accepted(alice, '/chat/lobby', 'protocol', await token(alice, '?path=/chat/lobby'))
  ]
  const bobSocket = await accepted(bob, '/chat/lobby', 'query', await token(bob))
  secrets.push(alice.cookie.split('=')[1] as string, bob.cookie.split('=')[1] as string)

  // refusals of each code a client can cause, on the upgrade and on the token route
  const spare = await token(bob)
  const spent = await token(bob)
  await accepted(bob, '/chat/attic', 'query', spent).then(close)
  for (const origin of ['https://evil.example', 'https://evil.example', 'https://other.example']) {
    await refused(`origin ${origin}`, '/chat/:room', bob.connect('/chat/lobby?token=' + spare, { origin }), origin)
  }
  await refused('no Origin', '/chat/:room', bob.connect('/chat/lobby?token=' + spare, { origin: undefined }))
  await refused('token route, foreign origin', '/websocket-token', bob.getToken('', { origin: 'https://evil.example' }), 'https://evil.example')
  await refused('no token', '/chat/:room', bob.connect('/chat/lobby'))
  const fake = fakeToken()
  secrets.push(fake)
  await refused('a fake token', '/chat/:room', bob.connect('/chat/lobby?token=' + fake))
  await refused('a replay', '/chat/:room', bob.connect('/chat/attic?token=' + spent))
  await refused('no session cookie', '/chat/:room', bob.connect('/chat/lobby?token=' + spare, { cookie: false }))
  await refused('a token entry alone', '/chat/:room', bob.connect('/chat/lobby', { protocols: ['websocket-guard.' + spare] }))
  // what was refused consumed nothing: the spare token still opens
  await accepted(bob, '/chat/kitchen', 'query', spare)

  // bob closes a socket himself: no guard close, nothing on the channels
  await close(bobSocket)
  // alice logs out: with the socket-lifecycle code, the guard closes her sockets (4401)
  const closedWith = aliceSockets.map(() => null as number | null)
  aliceSockets.forEach((r, i) => { r.socket?.once('close', (code) => { closedWith[i] = code }) })
  const logout = await fetch(base + '/logout', { method: 'POST', headers: { cookie: alice.cookie } })
  t.equal(logout.status, 200, 'logged out')
  // the lifecycle code closes within 250 ms (API.md); without it, nothing closes
  await sleep(1000)
  if (closedWith.some((code) => code !== null)) {
    await eventually(t, 'every socket of the ended session closed', () => closedWith.every((code) => code !== null))
  }
  const guardCloses = closedWith.filter((code) => code === 4401).length
  t.comment(`${guardCloses} of alice's sockets closed by the guard (0 without the socket-lifecycle code)`)
  t.equal(closedWith.filter((code) => code !== null && code !== 4401).length, 0, 'closed with 4401 if at all')
  if (guardCloses > 0) {
    expected.add('websocket_guard_closes_total', { route: '/chat/:room', reason: 'session-ended', code: '4401' }, guardCloses)
    expected.add('websocket_guard_socket_duration_seconds_count', { route: '/chat/:room', reason: 'session-ended' }, guardCloses)
  }
  const accepts = [...expected].filter(([k]) => k.startsWith('websocket_guard_accepted_total')).reduce((sum, [, n]) => sum + n, 0)
  // client closes are not seen: the gauge is accepted minus guard closes
  expected.add('websocket_guard_open_sockets', { route: '/chat/:room' }, accepts - guardCloses)

  const scrape = await fetch(base + '/metrics')
  t.equal(scrape.status, 200)
  t.match(scrape.headers.get('content-type'), /^text\/plain; version=0\.0\.4/, "Prometheus' text format")
  const text = await scrape.text()
  for (const secret of secrets) t.notOk(text.includes(secret), 'no token or session cookie in the metrics')
  const samples = parseMetrics(text)
  // every series the run should have made, with its count, and no other series of these metrics
  const counted = ['websocket_guard_tokens_issued_total', 'websocket_guard_accepted_total', 'websocket_guard_refused_total', 'websocket_guard_origin_refusals_total', 'websocket_guard_closes_total', 'websocket_guard_open_sockets', 'websocket_guard_socket_duration_seconds_count']
  const seen = new Map([...samples].filter(([k]) => counted.some((name) => k.startsWith(name + '{'))))
  t.same(Object.fromEntries([...seen].sort()), Object.fromEntries([...expected].sort()), 'each count is what the run did')
  t.equal(samples.get(key('websocket_guard_tokens_issued_total', { route: '/websocket-token' })), 6, 'six tokens issued')
  t.equal(samples.get(key('websocket_guard_accepted_total', { route: '/chat/:room', transport: 'query' })), 4, 'four upgrades accepted with the token in the query')
  t.equal(samples.get(key('websocket_guard_origin_refusals_total', { origin: 'https://evil.example' })), 3, 'one origin refused three times (twice at the upgrade, once at the token route)')
  if (guardCloses > 0) {
    const sum = samples.get(key('websocket_guard_socket_duration_seconds_sum', { route: '/chat/:room', reason: 'session-ended' })) ?? -1
    t.ok(sum >= 0 && sum < 60 * guardCloses, `durations recorded (${sum} s in all)`)
  }
})
