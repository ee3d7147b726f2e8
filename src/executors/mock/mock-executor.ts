import { ExecutorError } from '../../core/errors.js'
import { sha256Hex } from '../../core/ids.js'
import type { JobInput } from '../../core/types.js'
import { type MockStatement, mockCommitment } from '../../backends/mock/mock-proof.js'
import type { ExecuteRequest, ExecuteResult, Executor } from '../types.js'

/** Options of `mockExecutor`. All randomness is derived from `(seed, job id, attempt)`, so runs repeat exactly. */
export interface MockExecutorOptions {
  /** Simulated proving time, drawn per attempt. @default no delay */
  latencyMs?: { min: number; max: number }
  /** Share of attempts that fail with a `transient` error; a retry (next attempt) draws again. @default 0 */
  failureRate?: number
  /** Seed of the draws. @default 0 */
  seed?: number
  /** Share of attempts that return a wrong commitment, which the orchestrator must reject. @default 0 */
  hostileRate?: number
  /** A job whose inputs' summed `data.cost` exceeds this, with more than one input, fails `too-big`. @default no limit */
  tooBigAbove?: number
  /** Interval of `onHeartbeat` calls during the simulated latency. @default 1000 */
  heartbeatMs?: number
}

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v)
}

/**
 * A uniform draw in [0, 1) for one purpose of one attempt:
 * `parseInt(sha256(`${jobId}:${attempt}:${seed}:${purpose}`)[0..8], 16) / 2^32`.
 * `examples/mock-prover.mjs` uses the same formula, so both fail on the same attempts.
 */
export function mockDraw(seed: number, jobId: string, attempt: number, purpose: 'fail' | 'hostile' | 'latency'): number {
  return parseInt(sha256Hex(`${jobId}:${attempt}:${seed}:${purpose}`).slice(0, 8), 16) / 2 ** 32
}

/**
 * The statement the mock backend commits to for a job (see `src/backends/mock/mock-proof.ts`).
 * Inputs are recognised by shape, so stage names stay config: a block (`data.hash`, no
 * `data.output`) contributes its hash, a stage result contributes `data.output.commitment`.
 * Order is the inputs' order — committing to it is the point. Blocks must chain
 * (`parentHash` = previous `hash`); a broken chain, mixed or unrecognised inputs, or no inputs
 * throw `ExecutorError('unprovable')`.
 */
export function mockStatement(req: Pick<ExecuteRequest, 'job' | 'inputs'>): MockStatement {
  const { job, inputs } = req
  const unprovable = (why: string, details: Record<string, unknown> = {}): ExecutorError =>
    new ExecutorError('unprovable', `mock prover: ${why}`, { jobId: job.id, ...details })
  if (inputs.length === 0) throw unprovable('the job has no inputs')
  const kinds = new Set(inputs.map(inputKind))
  if (kinds.has('unknown')) throw unprovable('an input is neither a block (data.hash) nor a stage result (data.output.commitment)')
  if (kinds.size > 1) throw unprovable('the job mixes blocks and stage results')
  let values: string[]
  if (kinds.has('block')) {
    const blocks = inputs.map((i) => i.data as { hash: string; parentHash?: unknown })
    blocks.forEach((b, n) => {
      const prev = blocks[n - 1]
      if (prev !== undefined && b.parentHash !== prev.hash) {
        throw unprovable(`block ${b.hash} does not extend ${prev.hash} (parentHash ${String(b.parentHash)})`, { index: n })
      }
    })
    values = blocks.map((b) => b.hash)
  } else {
    values = inputs.map((i) => (i.data as { output: { commitment: string } }).output.commitment)
  }
  return { program: job.programId, stage: job.stage, first: job.first, last: job.last, lastHash: job.lastHash, inputs: values }
}

function inputKind(input: JobInput): 'block' | 'result' | 'unknown' {
  const d = input.data
  if (!isObject(d)) return 'unknown'
  if (isObject(d['output']) && typeof d['output']['commitment'] === 'string') return 'result'
  if (typeof d['hash'] === 'string' && d['output'] === undefined) return 'block'
  return 'unknown'
}

/** The commitment a hostile mock prover returns instead of the right one: well-formed and wrong. */
export function hostileCommitment(commitment: string): string {
  return sha256Hex(`hostile:${commitment}`)
}

/**
 * A development prover, labelled `kind: 'mock'`: returns the mock proof commitment of the job
 * (`{ commitment, first, last, lastHash, program }`), which shows that the right inputs were seen
 * in the right order and nothing about their validity. Failures are injected from
 * `(seed, job id, attempt)`, so a retry recovers and a run repeats exactly.
 */
export function mockExecutor(opts: MockExecutorOptions = {}): Executor {
  const seed = opts.seed ?? 0
  const failureRate = opts.failureRate ?? 0
  const hostileRate = opts.hostileRate ?? 0
  const heartbeatMs = opts.heartbeatMs ?? 1000
  const closing = new AbortController()

  async function execute(req: ExecuteRequest): Promise<ExecuteResult> {
    const started = performance.now()
    const { job } = req
    const base = { jobId: job.id, attempt: job.attempt }
    const aborted = (): ExecutorError =>
      new ExecutorError('transient', closing.signal.aborted ? 'mock executor closed' : 'attempt aborted', { ...base, aborted: true }, req.signal.reason)
    if (req.signal.aborted || closing.signal.aborted) throw aborted()

    if (opts.tooBigAbove !== undefined && req.inputs.length > 1) {
      const cost = req.inputs.reduce((sum, i) => sum + (isObject(i.data) && typeof i.data['cost'] === 'number' ? i.data['cost'] : 0), 0)
      if (cost > opts.tooBigAbove) {
        throw new ExecutorError('too-big', `mock prover: cost ${cost} is above ${opts.tooBigAbove}: split the job`, { ...base, cost })
      }
    }
    const statement = mockStatement(req)

    if (opts.latencyMs !== undefined) {
      const { min, max } = opts.latencyMs
      const ms = Math.round(min + mockDraw(seed, job.id, job.attempt, 'latency') * Math.max(0, max - min))
      if (!(await sleep(ms, [req.signal, closing.signal], heartbeatMs, req.onHeartbeat))) throw aborted()
    }
    if (mockDraw(seed, job.id, job.attempt, 'fail') < failureRate) {
      throw new ExecutorError('transient', 'mock prover: injected transient failure', { ...base, injected: true })
    }
    const right = mockCommitment(statement)
    const commitment = mockDraw(seed, job.id, job.attempt, 'hostile') < hostileRate ? hostileCommitment(right) : right
    return {
      output: { commitment, first: job.first, last: job.last, lastHash: job.lastHash, program: job.programId },
      durationMs: Math.round(performance.now() - started),
    }
  }

  return {
    kind: 'mock',
    execute,
    close() {
      closing.abort()
      return Promise.resolve()
    },
  }
}

/** Sleeps `ms`, calling `onHeartbeat` every `heartbeatMs`; resolves false if a signal aborts first. */
function sleep(ms: number, signals: AbortSignal[], heartbeatMs: number, onHeartbeat: (() => void) | undefined): Promise<boolean> {
  return new Promise((resolve) => {
    const beat = onHeartbeat === undefined ? undefined : setInterval(() => {
      try {
        onHeartbeat()
      } catch {
        // The caller's lease bookkeeping failing does not stop the work.
      }
    }, heartbeatMs)
    const done = (ok: boolean): void => {
      clearTimeout(timer)
      clearInterval(beat)
      for (const s of signals) s.removeEventListener('abort', onAbort)
      resolve(ok)
    }
    const onAbort = (): void => done(false)
    const timer = setTimeout(() => done(true), ms)
    for (const s of signals) s.addEventListener('abort', onAbort, { once: true })
  })
}
