'use strict'
// Compiles lib/ with tsc, then writes the two entry points that package.json `exports` names:
// a CommonJS one whose module.exports is the plugin itself (as with every @fastify/* plugin)
// and an ES module one, with type declarations for both.
const { execFileSync } = require('node:child_process')
const { rmSync, writeFileSync } = require('node:fs')
const { join } = require('node:path')

const root = join(__dirname, '..')
const dist = join(root, 'dist')
rmSync(dist, { recursive: true, force: true })
const tsc = require.resolve('typescript/bin/tsc')
execFileSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.build.json')], { stdio: 'inherit' })
if (require('node:fs').existsSync(join(root, 'tsconfig.client.json'))) {
  execFileSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.client.json')], { stdio: 'inherit' })
}

const names = Object.keys(require(join(dist, 'lib', 'index.js'))).filter((n) => n !== 'default').sort()

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
// Seen from an ES module, lib/index.js is CommonJS: its namespace's \`default\` is the whole
// module.exports, not the plugin, so the plugin's type is taken from its named export.
// An ES module importing CommonJS sees `default` as the whole module object, so name the plugin
writeFileSync(join(dist, 'index.d.mts'), `import { fastifyWebsocketGuard } from './lib/index.js'
export default fastifyWebsocketGuard
export * from './lib/index.js'
`)
console.log(`built dist/ (${names.length} named exports)`)
