'use strict'
// Compiles lib/ with tsc, then writes the entry points that package.json `exports` names:
// - `.` and `./testing`: a CommonJS file (for the plugin, module.exports is the plugin itself,
//   as with every @fastify/* plugin) and an ES module one, with type declarations for both;
// - `./client`: the browser client, an ES module as .mjs, so that Node (a CommonJS package)
//   imports it too, with its .d.mts.
const { execFileSync } = require('node:child_process')
const { renameSync, rmSync, writeFileSync } = require('node:fs')
const { join } = require('node:path')

const root = join(__dirname, '..')
const dist = join(root, 'dist')
rmSync(dist, { recursive: true, force: true })
const tsc = require.resolve('typescript/bin/tsc')
execFileSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.build.json')], { stdio: 'inherit' })
execFileSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.client.json')], { stdio: 'inherit' })
renameSync(join(dist, 'client.js'), join(dist, 'client.mjs'))
renameSync(join(dist, 'client.d.ts'), join(dist, 'client.d.mts'))

/** The named exports of a compiled lib/ module, sorted. */
function namesOf (entry) {
  return Object.keys(require(join(dist, 'lib', `${entry}.js`))).filter((n) => n !== 'default' && n !== '__esModule').sort()
}

const names = namesOf('index')
writeFileSync(join(dist, 'index.js'), `'use strict'
const mod = require('./lib/index.js')
// require('fastify-websocket-guard') is the plugin, with the named exports on it
module.exports = Object.assign(mod.default, mod)
`)
writeFileSync(join(dist, 'index.mjs'), `import mod from './lib/index.js'
export default mod.default
export const { ${names.join(', ')} } = mod
`)
writeFileSync(join(dist, 'index.d.ts'), `import plugin from './lib/index'
export * from './lib/index'
export default plugin
`)
// An ES module importing CommonJS sees \`default\` as the whole module.exports, not the
// plugin, so the plugin's type is taken from its named export.
writeFileSync(join(dist, 'index.d.mts'), `import { fastifyWebsocketGuard } from './lib/index.js'
export default fastifyWebsocketGuard
export * from './lib/index.js'
`)

const testing = namesOf('testing')
writeFileSync(join(dist, 'testing.js'), `'use strict'
module.exports = require('./lib/testing.js')
`)
writeFileSync(join(dist, 'testing.mjs'), `import mod from './lib/testing.js'
export const { ${testing.join(', ')} } = mod
`)
writeFileSync(join(dist, 'testing.d.ts'), `export * from './lib/testing'
`)
writeFileSync(join(dist, 'testing.d.mts'), `export * from './lib/testing.js'
`)
console.log(`built dist/ (${names.length} named exports, ${testing.length} test helpers, the client)`)
