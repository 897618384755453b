/**
 * Real headless Chromium for the browser tests: Debian's package, driven by playwright-core,
 * which never downloads a browser of its own. Without Chromium the tests are skipped, with a
 * printed reason, unless CI is set: there, a missing browser is a failure.
 */
import { existsSync, readdirSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { chromium, type Browser } from 'playwright-core'
import type { Test } from 'tap'

export const CHROMIUM = '/usr/bin/chromium'

const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--disable-quic'
]

const root = join(__dirname, '..', '..')

function inCI (): boolean {
  const ci = process.env.CI
  return ci !== undefined && ci !== '' && ci !== '0' && ci !== 'false'
}

/**
 * True when the browser tests can run. Otherwise ends `t` as skipped (printing why) or, in
 * CI, fails it.
 */
export function chromiumAvailable (t: Test): boolean {
  if (existsSync(CHROMIUM)) return true
  const reason = `Chromium not found at ${CHROMIUM} (Debian: apt-get install chromium)`
  if (inCI()) {
    t.fail(`browser tests cannot run: ${reason}; CI requires them`)
    return false
  }
  console.log(`# browser tests skipped: ${reason}`)
  t.plan(0, `browser tests skipped: ${reason}`)
  return false
}

function newestSource (dir: string): number {
  let newest = 0
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name)
    const mtime = entry.isDirectory() ? newestSource(path) : entry.name.endsWith('.ts') ? statSync(path).mtimeMs : 0
    newest = Math.max(newest, mtime)
  }
  return newest
}

/**
 * The demo runs the built package (dist/), as `npm start` does: `npm test` builds first. A
 * missing or stale build would test old code, so it is a failure with what to do about it.
 */
export function builtPackage (t: Test): boolean {
  const built = ['dist/index.js', 'dist/client.mjs'].map((file) => join(root, file))
  const missing = built.filter((file) => !existsSync(file))
  if (missing.length > 0) {
    t.fail(`the browser tests need the built package: run \`npm run build\` (missing ${missing.join(', ')})`)
    return false
  }
  const builtAt = Math.min(...built.map((file) => statSync(file).mtimeMs))
  if (newestSource(join(root, 'lib')) > builtAt) {
    t.fail('the browser tests need the built package: dist/ is older than lib/, run `npm run build`')
    return false
  }
  return true
}

/** Launches Chromium with a fresh, temporary profile (playwright's default for launch()). */
export async function launchChromium (): Promise<Browser> {
  return chromium.launch({ executablePath: CHROMIUM, args: ARGS })
}
