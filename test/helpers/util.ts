/**
 * What several test files need, written once: waiting, fake tokens, the refusal-body assertion
 * and the check that the built package (dist/) is current.
 */
import { randomBytes } from 'node:crypto'
import { existsSync, readdirSync, statSync } from 'node:fs'
import { STATUS_CODES } from 'node:http'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Test } from 'tap'

export { sleep }

/** A well-formed token that was never issued. */
export const fakeToken = (): string => randomBytes(32).toString('base64url')

/** Waits until `check` holds, polling; fails the test after `limit` ms rather than hang. */
export async function eventually (t: Test, what: string, check: () => boolean | Promise<boolean>, limit = 15_000): Promise<void> {
  const end = Date.now() + limit
  while (!(await check())) {
    if (Date.now() > end) {
      t.fail(`${what}: still not true after ${limit} ms`)
      return
    }
    await sleep(50)
  }
}

/** An upgrade's result (`opened` set) or a plain HTTP answer. */
export interface Answer {
  status: number | null
  body: any
  opened?: boolean
}

/**
 * A refusal: no socket, `statusCode`, and Fastify's error body (exactly `statusCode`, `code`,
 * `error`, `message`, so no token field either) carrying `code`, whose text never shows any
 * of `secrets`. `what` names the case in the messages (default: the code).
 */
export function refused (t: Test, r: Answer, code: string, { statusCode = 403, secrets = [] as string[], what = code } = {}): void {
  if ('opened' in r) t.equal(r.opened, false, `${what}: no socket`)
  t.equal(r.status, statusCode, `${what}: status`)
  t.same(Object.keys(r.body ?? {}).sort(), ['code', 'error', 'message', 'statusCode'], `${what}: Fastify's error body, no token in it`)
  t.equal(r.body?.statusCode, statusCode, `${what}: statusCode`)
  t.equal(r.body?.code, code, `${what}: code`)
  t.equal(r.body?.error, STATUS_CODES[statusCode], `${what}: error`)
  t.type(r.body?.message, 'string', `${what}: message`)
  for (const secret of secrets) t.notOk(JSON.stringify(r.body).includes(secret), `${what}: body never shows the token`)
}

const root = join(__dirname, '..', '..')

function newestUnder (dir: string): number {
  return Math.max(0, ...readdirSync(dir, { withFileTypes: true }).map((entry) => {
    const path = join(dir, entry.name)
    return entry.isDirectory() ? newestUnder(path) : statSync(path).mtimeMs
  }))
}

/**
 * True when dist/ holds `files`, none older than any file of lib/. What runs the built package
 * (`who`) would otherwise test old code: a missing or stale build fails `t`, saying what to do.
 * `npm test` builds first.
 */
export function builtPackage (t: Test, who: string, files = ['dist/index.js']): boolean {
  const missing = files.filter((file) => !existsSync(join(root, file)))
  if (missing.length > 0) {
    t.fail(`${who} runs the built package: run \`npm run build\` (missing ${missing.join(', ')})`)
    return false
  }
  const builtAt = Math.min(...files.map((file) => statSync(join(root, file)).mtimeMs))
  if (newestUnder(join(root, 'lib')) > builtAt) {
    t.fail(`${who} runs the built package: dist/ is older than lib/, run \`npm run build\``)
    return false
  }
  return true
}
