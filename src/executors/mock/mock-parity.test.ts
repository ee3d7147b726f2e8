import { spawnSync } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ExecutorError } from '../../core/errors.js'
import { mockCommitment } from '../../backends/mock/mock-proof.js'
import { processExecutor } from '../process/process-executor.js'
import { EXECUTOR_PROTOCOL } from '../process/protocol.js'
import type { ExecuteRequest, Executor } from '../types.js'
import { mockExecutor } from './mock-executor.js'

// examples/mock-prover.mjs is standalone on purpose; this checks it agrees with the TypeScript mock.
const SCRIPT = fileURLToPath(new URL('../../../examples/mock-prover.mjs', import.meta.url))

const blocks = [
  { number: 100, hash: '0x' + '1'.repeat(64), parentHash: '0x' + '0'.repeat(64), timestamp: 1, gasUsed: 21000, cost: 40, txCount: 1 },
  { number: 101, hash: '0x' + '2'.repeat(64), parentHash: '0x' + '1'.repeat(64), timestamp: 2, gasUsed: 42000, cost: 80, txCount: 2 },
  { number: 102, hash: '0x' + '3'.repeat(64), parentHash: '0x' + '2'.repeat(64), timestamp: 3, gasUsed: 0, cost: 1, txCount: 0 },
]
const rangeJob = { id: 'range:100-102:00aa11bb22cc33dd', stage: 'range', attempt: 1, first: 100, last: 102, lastHash: blocks[2]?.hash ?? '', programId: 'mock-v1' }
const rangeInputs = blocks.map((b) => ({ id: `blocks:${b.number}`, data: b }))
const aggJob = { id: 'aggregate:1-20:ffee', stage: 'aggregate', attempt: 1, first: 1, last: 20, lastHash: '0xbeef', programId: 'mock-agg-v1' }
const aggInputs = [
  { id: 'p1', data: { jobId: 'r1', stage: 'range', first: 1, last: 10, lastHash: '0x10', output: { commitment: 'a'.repeat(64), z: { b: 1, a: 2 } }, cost: 3 } },
  { id: 'p2', data: { jobId: 'r2', stage: 'range', first: 11, last: 20, lastHash: '0xbeef', output: { commitment: 'b'.repeat(64) }, cost: 4 } },
]

let dir: string
const executors: Executor[] = []
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'proofline-mock-parity-'))
})
afterAll(async () => {
  await Promise.all(executors.map((e) => e.close()))
  await rm(dir, { recursive: true, force: true })
})

function script(flags: string[] = [], protocol: 'files' | 'stdio' = 'files'): Executor {
  const ex = processExecutor({ command: [process.execPath, SCRIPT, ...flags], protocol, timeoutMs: 20_000, workDir: join(dir, 'work'), ownerTag: 'mock-parity' })
  executors.push(ex)
  return ex
}

function req(job: ExecuteRequest['job'], inputs: ExecuteRequest['inputs']): ExecuteRequest {
  return { job, inputs, signal: new AbortController().signal }
}

async function outcome(p: Promise<{ output: Record<string, unknown> }>): Promise<string> {
  return p.then(
    (r) => `ok:${String(r.output['commitment'])}`,
    (e: unknown) => (e instanceof ExecutorError ? `fail:${e.failureClass}` : `error:${String(e)}`),
  )
}

describe('examples/mock-prover.mjs agrees with mockCommitment and mockExecutor', () => {
  it('behavior: same commitment for a range job, through processExecutor in both protocols', async () => {
    const expected = mockCommitment({ program: 'mock-v1', stage: 'range', first: 100, last: 102, lastHash: rangeJob.lastHash, inputs: blocks.map((b) => b.hash) })
    const viaFiles = await script().execute(req(rangeJob, rangeInputs))
    const viaStdio = await script([], 'stdio').execute(req(rangeJob, rangeInputs))
    const inProcess = await mockExecutor().execute(req(rangeJob, rangeInputs))
    expect(viaFiles.output).toEqual({ commitment: expected, first: 100, last: 102, lastHash: rangeJob.lastHash, program: 'mock-v1' })
    expect(viaStdio.output).toEqual(viaFiles.output)
    expect(inProcess.output).toEqual(viaFiles.output)
    expect(viaFiles.stderrTail).toContain('mock-prover: done: commitment')
  })

  it('behavior: same commitment for a later stage over inner results', async () => {
    const expected = mockCommitment({ program: 'mock-agg-v1', stage: 'aggregate', first: 1, last: 20, lastHash: '0xbeef', inputs: ['a'.repeat(64), 'b'.repeat(64)] })
    const viaScript = await script().execute(req(aggJob, aggInputs))
    const inProcess = await mockExecutor().execute(req(aggJob, aggInputs))
    expect(viaScript.output['commitment']).toBe(expected)
    expect(inProcess.output).toEqual(viaScript.output)
  })

  it('behavior: the script reads stdin and writes stdout when no path flags are given', () => {
    const input = JSON.stringify({ protocol: EXECUTOR_PROTOCOL, job: rangeJob, inputs: rangeInputs })
    const r = spawnSync(process.execPath, [SCRIPT], { input, encoding: 'utf8' })
    expect(r.status).toBe(0)
    const doc = JSON.parse(r.stdout) as { output: { commitment: string } }
    expect(doc.output.commitment).toBe(mockCommitment({ program: 'mock-v1', stage: 'range', first: 100, last: 102, lastHash: rangeJob.lastHash, inputs: blocks.map((b) => b.hash) }))
    expect(r.stderr).toContain('mock-prover: job range:100-102')
  })

  it('behavior: injected failures and hostile answers happen on the same attempts in both', async () => {
    const flags = ['--fail-rate', '0.4', '--hostile-rate', '0.3', '--seed', '12']
    const mock = mockExecutor({ failureRate: 0.4, hostileRate: 0.3, seed: 12 })
    const seen = new Set<string>()
    for (let attempt = 1; attempt <= 8; attempt++) {
      const job = { ...rangeJob, attempt }
      const a = await outcome(script(flags).execute(req(job, rangeInputs)))
      const b = await outcome(mock.execute(req(job, rangeInputs)))
      expect(a, `attempt ${attempt}`).toBe(b)
      seen.add(a)
    }
    // The draws must actually exercise failure, honest and hostile outcomes, or this test proves nothing.
    expect([...seen].filter((s) => s === 'fail:transient')).toHaveLength(1)
    expect(seen.size).toBeGreaterThanOrEqual(3)
  })

  it('behavior: a broken parent chain is unprovable (exit 11) and too much cost is too-big (exit 10) in both', async () => {
    const broken = rangeInputs.map((i, n) => (n === 2 ? { ...i, data: { ...i.data, parentHash: '0x' + 'f'.repeat(64) } } : i))
    expect(await outcome(script().execute(req(rangeJob, broken)))).toBe('fail:unprovable')
    expect(await outcome(mockExecutor().execute(req(rangeJob, broken)))).toBe('fail:unprovable')
    expect(await outcome(script(['--too-big-above', '100']).execute(req(rangeJob, rangeInputs)))).toBe('fail:too-big')
    expect(await outcome(mockExecutor({ tooBigAbove: 100 }).execute(req(rangeJob, rangeInputs)))).toBe('fail:too-big')
    expect(await outcome(script(['--too-big-above', '200']).execute(req(rangeJob, rangeInputs)))).toMatch(/^ok:/)
  })

  it('behavior: --latency-ms delays the answer and writes progress to stderr', async () => {
    const t0 = Date.now()
    const res = await script(['--latency-ms', '1100:1100']).execute(req(rangeJob, rangeInputs))
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1100)
    expect(res.stderrTail).toContain('proving for 1100 ms')
    expect(res.stderrTail).toContain('progress')
  })
})
