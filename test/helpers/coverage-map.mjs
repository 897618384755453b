// tap coverage map: every test reports coverage of the plugin's sources only. The browser
// client (lib/client.ts) runs in Chromium, not in Node, so Node coverage cannot see it;
// built output (dist/) that child processes load is the same code and is not counted twice.
import { readdirSync } from 'node:fs'
import { join } from 'node:path'

function sources (dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) return sources(path)
    return entry.name.endsWith('.ts') && path !== join('lib', 'client.ts') ? [path] : []
  })
}

const files = sources('lib')

export default function coverageMap () {
  return files
}
