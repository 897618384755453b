'use strict'
/*
 * A round-robin load balancer small enough to read: each HTTP request and each WebSocket
 * upgrade goes to the next instance, so one browser's token request and its upgrade land on
 * different instances, as they may behind any balancer without sticky sessions. Headers pass
 * unchanged (Host and Origin included), so the instances see the balancer's origin.
 * In production use nginx, HAProxy or a cloud balancer instead.
 */
const http = require('node:http')
const net = require('node:net')

function startBalancer ({ port = 0, host = '127.0.0.1', backends }) {
  let next = 0
  const pick = () => backends[next++ % backends.length]

  const server = http.createServer((req, res) => {
    const backend = pick()
    const upstream = http.request({ host: backend.host, port: backend.port, method: req.method, path: req.url, headers: req.headers }, (answer) => {
      res.writeHead(answer.statusCode, answer.headers)
      answer.pipe(res)
    })
    upstream.on('error', () => {
      if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' })
      res.end('instance unavailable')
    })
    req.pipe(upstream)
  })

  server.on('upgrade', (req, socket, head) => {
    const backend = pick()
    const upstream = net.connect(backend.port, backend.host, () => {
      let raw = `${req.method} ${req.url} HTTP/${req.httpVersion}\r\n`
      for (let i = 0; i < req.rawHeaders.length; i += 2) raw += `${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}\r\n`
      upstream.write(raw + '\r\n')
      if (head.length > 0) upstream.write(head)
      upstream.pipe(socket)
      socket.pipe(upstream)
    })
    upstream.on('error', () => socket.destroy())
    socket.on('error', () => upstream.destroy())
  })

  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, () => resolve(server))
  })
}

module.exports = { startBalancer }
