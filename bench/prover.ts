/**
 * Built-in prover. Real proving takes about 15 minutes on a loaded 2-core machine (6 at idle),
 * which does not fit the full bench's 20-minute budget beside the other sections. So by default
 * this section reports the recorded run in bench/results/prover-recorded.json (the run written
 * up in docs/proving-bench.md) and says so (`source: "recorded"`); `--set prover.run=1` runs
 * `proofline bench prover --json` in this bench run instead (`source: "measured"`).
 */
import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import { size, type BenchOptions } from './lib.js'

const ROOT = fileURLToPath(new URL('../', import.meta.url))
const BIN = `${ROOT}bin/proofline.js`
/** The recorded run, relative to the repository root. */
export const RECORDED_PROVER = 'bench/results/prover-recorded.json'

function cli(args: string[], timeoutMs: number): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { cwd: ROOT, timeout: timeoutMs, maxBuffer: 64 << 20, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === 'number' ? err.code : null
      resolve({ code, stdout, stderr })
    })
  })
}

export type ProverResult = { available: false; reason: string } | ({ available: true; source: 'recorded' | 'measured' } & Record<string, unknown>)

export async function proverBench(opts: BenchOptions): Promise<ProverResult> {
  if (size(opts, 'prover.run', 0, 0) === 0) {
    try {
      const recorded = JSON.parse(await readFile(`${ROOT}${RECORDED_PROVER}`, 'utf8')) as Record<string, unknown>
      opts.log(`prover: not proving in this run; reporting the recorded run (${RECORDED_PROVER}); --set prover.run=1 proves`)
      return { available: true, ...recorded, source: 'recorded', file: RECORDED_PROVER, how_to_measure: 'npm run bench -- --only prover --set prover.run=1 --json (about 15 min on a loaded 2-core machine; run it alone)' }
    } catch (err) {
      return { available: false, reason: `no recorded prover run readable at ${RECORDED_PROVER} (${err instanceof Error ? err.message : String(err)}); --set prover.run=1 measures one` }
    }
  }
  if (!existsSync(`${ROOT}dist/cli/main.js`)) return { available: false, reason: 'the CLI is not built (dist/cli/main.js missing); run npm run build' }
  const help = await cli(['bench', '--help'], 30_000)
  if (help.code !== 0 || !/prover/.test(help.stdout)) {
    return { available: false, reason: '`proofline bench prover` does not exist in this tree' }
  }
  const timeoutMs = Number(process.env.PROOFLINE_BENCH_PROVER_TIMEOUT_MS ?? 1_500_000)
  opts.log(`prover: proofline bench prover --json (timeout ${timeoutMs / 1000} s) ...`)
  const r = await cli(['bench', 'prover', '--json'], timeoutMs)
  if (r.code !== 0) return { available: false, reason: `proofline bench prover exited with ${String(r.code)}: ${r.stderr.trim().split('\n').slice(-3).join(' | ')}` }
  try {
    return { available: true, ...(JSON.parse(r.stdout) as Record<string, unknown>), source: 'measured' }
  } catch {
    return { available: false, reason: `proofline bench prover printed no JSON: ${r.stdout.slice(0, 200)}` }
  }
}
