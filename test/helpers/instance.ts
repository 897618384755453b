/**
 * App instances in processes of their own (test/fixtures/lifecycle-instance.js, on dist/),
 * killed in teardown, and a browser session moving between them.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { join } from 'node:path'
import type { Test } from 'tap'
import { Client, tryOpen, type Opened } from './lifecycle'

const FIXTURE = join(__dirname, '..', 'fixtures', 'lifecycle-instance.js')

export interface Instance {
  base: string
  child: ChildProcess
  exited: Promise<number | null>
}

export async function instance (t: Test, config: Record<string, unknown>): Promise<Instance> {
  const child = spawn(process.execPath, ['--expose-gc', FIXTURE, JSON.stringify(config)], { stdio: ['ignore', 'pipe', 'inherit'] })
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  t.teardown(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') })
  const port = await new Promise<number>((resolve, reject) => {
    let out = ''
    child.stdout?.on('data', (chunk: Buffer) => {
      out += chunk.toString()
      const line = out.split('\n')[0] as string
      if (out.includes('\n')) resolve(JSON.parse(line).port)
    })
    child.once('exit', (code) => reject(new Error(`instance exited (${String(code)}) before listening`)))
  })
  return { base: `http://127.0.0.1:${port}`, child, exited }
}

/** The same browser session, on another instance. */
export async function openOn (client: Client, at: Instance): Promise<Opened> {
  const moved = new Client(at.base, null)
  moved.cookie = client.cookie
  const r = await tryOpen(moved)
  client.cookie = moved.cookie
  if (!('ws' in r)) throw new Error(`refused: ${JSON.stringify(r.body)}`)
  return r
}

export function at (client: Client, instance: Instance): Client {
  const moved = new Client(instance.base, null)
  moved.cookie = client.cookie
  return moved
}

