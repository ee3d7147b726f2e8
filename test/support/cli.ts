import { spawn } from 'node:child_process'
import { readdir, readFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'

/** The repository root. */
export const ROOT = fileURLToPath(new URL('../../', import.meta.url))
/** The built CLI (tests run after `npm run build`). */
export const BIN = `${ROOT}bin/proofline.js`

export interface CliResult {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
}

export interface RunCliOptions {
  env?: Record<string, string>
  /** SIGKILL the CLI after this many ms. */
  killAfterMs?: number
  timeoutMs?: number
  cwd?: string
}

/** Runs `node bin/proofline.js …args` and collects its output. */
export function runCli(args: string[], opts: RunCliOptions = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      cwd: opts.cwd ?? ROOT,
      env: { ...process.env, ...opts.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    const timers: NodeJS.Timeout[] = []
    if (opts.killAfterMs !== undefined) timers.push(setTimeout(() => child.kill('SIGKILL'), opts.killAfterMs))
    timers.push(setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 300_000))
    child.on('error', reject)
    child.on('close', (code, signal) => {
      for (const t of timers) clearTimeout(t)
      resolve({ code, signal, stdout, stderr })
    })
  })
}

/** Pids of live processes whose environment has `NAME=value` (Linux /proc). */
export async function pidsWithEnv(name: string, value: string): Promise<number[]> {
  const needle = `${name}=${value}`
  const pids: number[] = []
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue
    try {
      const env = await readFile(`/proc/${entry}/environ`, 'utf8')
      if (env.split('\0').includes(needle)) pids.push(Number(entry))
    } catch {
      // gone, or not ours to read
    }
  }
  return pids
}

/** A small seeded PRNG for reproducible test schedules. */
export { mulberry32 as seeded } from '../../src/core/random.js'
