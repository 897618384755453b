/**
 * Real headless Chromium for the browser tests: Debian's package, driven by playwright-core,
 * which never downloads a browser of its own. Without Chromium the tests are skipped, with a
 * printed reason, unless CI is set: there, a missing browser is a failure.
 */
import { existsSync } from 'node:fs'
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

/** Launches Chromium with a fresh, temporary profile (playwright's default for launch()). */
export async function launchChromium (): Promise<Browser> {
  return chromium.launch({ executablePath: CHROMIUM, args: ARGS })
}
