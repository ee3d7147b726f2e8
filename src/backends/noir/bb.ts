import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { join, sep } from 'node:path'
import { ProoflineError } from '../../core/errors.js'
import { TailBuffer } from '../../executors/process/tail.js'

/**
 * The native Barretenberg CLI shipped inside `@aztec/bb.js` (pinned 5.0.0), driven as a child
 * process. Every call runs in its own process group (killed whole on abort), keeps the tail of
 * its stderr for error messages, and samples the child's peak resident memory.
 *
 * Subcommands used (bb 5.0.0):
 *   prove  -b PROGRAM.json -w WITNESS.gz -o DIR -c CRS_DIR -t TARGET [--write_vk] [-k VK]
 *   write_vk -b PROGRAM.json -o DIR -c CRS_DIR -t TARGET
 *   verify -p PROOF -k VK -i PUBLIC_INPUTS -c CRS_DIR -t TARGET
 *   gates  -b PROGRAM.json -t TARGET
 *   write_solidity_verifier -k VK -o FILE -t evm --optimized
 * Targets: `evm` (keccak transcript, ZK) for proofs checked by the Solidity verifier;
 * `noir-recursive` (poseidon2, ZK) for proofs checked inside another circuit.
 */

/** A `bb` invocation failed. */
export class BbError extends ProoflineError {
  constructor(code: 'BB_NOT_FOUND' | 'BB_FAILED' | 'BB_ABORTED', message: string, opts: { retryable: boolean; details?: Record<string, unknown>; cause?: unknown }) {
    super(code, message, opts)
  }
}

/** Where the `bb` binary of the installed `@aztec/bb.js` is (linux x64, arm64, macOS). */
export function defaultBbPath(): string {
  const require = createRequire(import.meta.url)
  let pkg: string
  try {
    // The package exports no package.json; its entry sits under dest/.
    const entry = require.resolve('@aztec/bb.js')
    pkg = entry.slice(0, entry.lastIndexOf(`${sep}dest${sep}`))
  } catch (cause) {
    throw new BbError('BB_NOT_FOUND', '@aztec/bb.js is not installed: run npm ci', { retryable: false, cause })
  }
  const arch = process.arch === 'arm64' ? 'arm64' : 'amd64'
  const os = process.platform === 'darwin' ? 'macos' : 'linux'
  const path = join(pkg, 'build', `${arch}-${os}`, 'bb')
  if (!existsSync(path)) throw new BbError('BB_NOT_FOUND', `no native bb for ${process.platform}/${process.arch} in @aztec/bb.js (looked for ${path})`, { retryable: false })
  return path
}

/** Options of one `bb` call. */
export interface BbRunOptions {
  signal?: AbortSignal
  /** Called every `heartbeatMs` while bb runs. */
  onHeartbeat?: () => void
  /** @default 5000 */
  heartbeatMs?: number
  /** Threads bb may use (`OMP_NUM_THREADS`-style `HARDWARE_CONCURRENCY`). @default all cores */
  threads?: number
}

/** What a `bb` call returned. */
export interface BbRunResult {
  stdout: string
  stderrTail: string
  durationMs: number
  /** Highest resident memory seen (VmHWM, Linux), bytes; 0 where unavailable. */
  peakRssBytes: number
}

/** Runs `bb args…`; rejects with `BbError` on a non-zero exit or an abort. */
export function runBb(bbPath: string, args: string[], opts: BbRunOptions = {}): Promise<BbRunResult> {
  const started = performance.now()
  if (opts.signal?.aborted) return Promise.reject(new BbError('BB_ABORTED', `bb ${args[0] ?? ''} aborted before it started`, { retryable: true, cause: opts.signal.reason }))
  return new Promise((resolve, reject) => {
    const env = { ...process.env, ...(opts.threads !== undefined ? { HARDWARE_CONCURRENCY: String(opts.threads) } : {}) }
    const child = spawn(bbPath, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true, env })
    const stdout: Buffer[] = []
    const stderr = new TailBuffer(16_384)
    child.stdout.on('data', (d: Buffer) => stdout.push(d))
    child.stderr.on('data', (d: Buffer) => stderr.push(d))
    let peak = 0
    const sample = (): void => {
      if (child.pid === undefined) return
      readFile(`/proc/${child.pid}/status`, 'utf8')
        .then((s) => {
          const m = /VmHWM:\s+(\d+) kB/.exec(s)
          if (m) peak = Math.max(peak, Number(m[1]) * 1024)
        })
        .catch(() => undefined)
    }
    const sampler = setInterval(sample, 100)
    const beat = opts.onHeartbeat === undefined ? undefined : setInterval(() => {
      try {
        opts.onHeartbeat?.()
      } catch {
        // Lease bookkeeping failing does not stop the proof.
      }
    }, opts.heartbeatMs ?? 5_000)
    let aborted = false
    const kill = (): void => {
      aborted = true
      if (child.pid !== undefined) {
        try {
          process.kill(-child.pid, 'SIGKILL')
        } catch {
          // Already gone.
        }
      }
    }
    opts.signal?.addEventListener('abort', kill, { once: true })
    const done = (): void => {
      clearInterval(sampler)
      clearInterval(beat)
      opts.signal?.removeEventListener('abort', kill)
    }
    child.on('error', (err) => {
      done()
      reject(new BbError('BB_NOT_FOUND', `could not run ${bbPath}: ${err.message}`, { retryable: false, cause: err }))
    })
    child.on('close', (code, signal) => {
      done()
      const durationMs = Math.round(performance.now() - started)
      const stderrTail = stderr.text()
      if (aborted) {
        reject(new BbError('BB_ABORTED', `bb ${args[0] ?? ''} aborted`, { retryable: true, details: { stderrTail }, cause: opts.signal?.reason }))
        return
      }
      if (code !== 0) {
        const last = stderrTail.trim().split('\n').slice(-3).join(' | ')
        reject(
          new BbError('BB_FAILED', `bb ${args[0] ?? ''} failed (${signal ?? `exit ${String(code)}`}): ${last}`, {
            retryable: signal !== null,
            details: { args, code, signal, stderrTail },
          }),
        )
        return
      }
      resolve({ stdout: Buffer.concat(stdout).toString('utf8'), stderrTail, durationMs, peakRssBytes: peak })
    })
  })
}
