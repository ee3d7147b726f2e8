/**
 * Built-in prover: the numbers of `proofline bench prover --json`, when the CLI in this tree has
 * that command (it is built by the built-in backend's work); otherwise `{ available: false, reason }`.
 */
import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import type { BenchOptions } from './lib.js'

const ROOT = fileURLToPath(new URL('../', import.meta.url))
const BIN = `${ROOT}bin/proofline.js`

function cli(args: string[], timeoutMs: number): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { cwd: ROOT, timeout: timeoutMs, maxBuffer: 64 << 20, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === 'number' ? err.code : null
      resolve({ code, stdout, stderr })
    })
  })
}

export type ProverResult = { available: false; reason: string } | ({ available: true } & Record<string, unknown>)

export async function proverBench(opts: BenchOptions): Promise<ProverResult> {
  if (!existsSync(`${ROOT}dist/cli/main.js`)) return { available: false, reason: 'the CLI is not built (dist/cli/main.js missing); run npm run build' }
  const help = await cli(['bench', '--help'], 30_000)
  if (help.code !== 0 || !/prover/.test(help.stdout)) {
    return { available: false, reason: '`proofline bench prover` does not exist in this tree yet (the built-in backend work adds it)' }
  }
  const timeoutMs = Number(process.env.PROOFLINE_BENCH_PROVER_TIMEOUT_MS ?? (opts.quick ? 120_000 : 480_000))
  opts.log(`prover: proofline bench prover --json${opts.quick ? ' --quick' : ''} (timeout ${timeoutMs / 1000} s) ...`)
  const r = await cli(['bench', 'prover', '--json', ...(opts.quick ? ['--quick'] : [])], timeoutMs)
  if (r.code !== 0) return { available: false, reason: `proofline bench prover exited with ${String(r.code)}: ${r.stderr.trim().split('\n').slice(-3).join(' | ')}` }
  try {
    return { available: true, ...(JSON.parse(r.stdout) as Record<string, unknown>) }
  } catch {
    return { available: false, reason: `proofline bench prover printed no JSON: ${r.stdout.slice(0, 200)}` }
  }
}
