import { describe, expect, it } from 'vitest'
import { ExecutorError } from '../../core/errors.js'
import { mockCommitment } from '../../backends/mock/mock-proof.js'
import type { ExecuteRequest } from '../types.js'
import { hostileCommitment, mockDraw, mockExecutor, mockStatement } from './mock-executor.js'

const blocks = [
  { number: 10, hash: '0xa', parentHash: '0x9', cost: 100 },
  { number: 11, hash: '0xb', parentHash: '0xa', cost: 200 },
  { number: 12, hash: '0xc', parentHash: '0xb', cost: 300 },
]
const job = { id: 'range:10-12:0123456789abcdef', stage: 'range', attempt: 1, first: 10, last: 12, lastHash: '0xc', programId: 'mock-v1' }

function request(over: Partial<ExecuteRequest> = {}, attempt = 1): ExecuteRequest {
  return {
    job: { ...job, attempt },
    inputs: blocks.map((b) => ({ id: `blocks:${b.number}`, data: b })),
    signal: new AbortController().signal,
    ...over,
  }
}

async function failure(p: Promise<unknown>): Promise<ExecutorError> {
  const err: unknown = await p.then(
    () => undefined,
    (e: unknown) => e,
  )
  expect(err).toBeInstanceOf(ExecutorError)
  return err as ExecutorError
}

describe('mockExecutor', () => {
  it('behavior: a range job commits to its block hashes in order', async () => {
    const ex = mockExecutor()
    expect(ex.kind).toBe('mock')
    const res = await ex.execute(request())
    const expected = mockCommitment({ program: 'mock-v1', stage: 'range', first: 10, last: 12, lastHash: '0xc', inputs: ['0xa', '0xb', '0xc'] })
    expect(res.output).toEqual({ commitment: expected, first: 10, last: 12, lastHash: '0xc', program: 'mock-v1' })
  })

  it('behavior: a later stage commits to its inputs\' output.commitment', async () => {
    const inner = [
      { jobId: 'r1', stage: 'range', first: 1, last: 5, lastHash: '0x5', output: { commitment: 'c1' }, cost: 1 },
      { jobId: 'r2', stage: 'range', first: 6, last: 9, lastHash: '0x9', output: { commitment: 'c2' }, cost: 1 },
    ]
    const aggJob = { id: 'aggregate:1-9:x', stage: 'aggregate', attempt: 1, first: 1, last: 9, lastHash: '0x9', programId: 'agg' }
    const res = await mockExecutor().execute({ job: aggJob, inputs: inner.map((d, i) => ({ id: `p${i}`, data: d })), signal: new AbortController().signal })
    expect(res.output['commitment']).toBe(mockCommitment({ program: 'agg', stage: 'aggregate', first: 1, last: 9, lastHash: '0x9', inputs: ['c1', 'c2'] }))
  })

  it('behavior: the commitment binds input order (results reordered, blocks out of order are refused)', async () => {
    const aggJob = { ...job, id: 'aggregate:1-9:x', stage: 'aggregate' }
    const r = (c: string) => ({ id: c, data: { output: { commitment: c } } })
    const a = mockStatement({ job: aggJob, inputs: [r('c1'), r('c2')] })
    const b = mockStatement({ job: aggJob, inputs: [r('c2'), r('c1')] })
    expect(mockCommitment(a)).not.toBe(mockCommitment(b))
    const swapped = request()
    swapped.inputs = [swapped.inputs[0], swapped.inputs[2], swapped.inputs[1]].filter((i) => i !== undefined)
    expect((await failure(mockExecutor().execute(swapped))).failureClass).toBe('unprovable')
  })

  it('behavior: blocks that do not chain, mixed or unknown inputs are unprovable', async () => {
    const broken = request()
    broken.inputs[2] = { id: 'x', data: { ...blocks[2], parentHash: '0xdead' } }
    expect((await failure(mockExecutor().execute(broken))).failureClass).toBe('unprovable')
    const mixed = request()
    mixed.inputs[1] = { id: 'x', data: { output: { commitment: 'c' } } }
    expect((await failure(mockExecutor().execute(mixed))).failureClass).toBe('unprovable')
    const unknown = request({ inputs: [{ id: 'x', data: 42 }] })
    expect((await failure(mockExecutor().execute(unknown))).failureClass).toBe('unprovable')
    expect((await failure(mockExecutor().execute(request({ inputs: [] })))).failureClass).toBe('unprovable')
  })

  it('behavior: injected failures are deterministic per (seed, job, attempt) and a retry recovers', async () => {
    const ex = mockExecutor({ failureRate: 0.5, seed: 3 })
    const outcomes: boolean[] = []
    for (let attempt = 1; attempt <= 12; attempt++) {
      const ok = await ex.execute(request({}, attempt)).then(
        () => true,
        (e: unknown) => {
          expect(e).toBeInstanceOf(ExecutorError)
          expect((e as ExecutorError).failureClass).toBe('transient')
          return false
        },
      )
      expect(ok).toBe(!(mockDraw(3, job.id, attempt, 'fail') < 0.5))
      outcomes.push(ok)
    }
    expect(outcomes).toContain(true)
    expect(outcomes).toContain(false)
    const again = mockExecutor({ failureRate: 0.5, seed: 3 })
    for (let attempt = 1; attempt <= 12; attempt++) {
      expect(await again.execute(request({}, attempt)).then(() => true, () => false)).toBe(outcomes[attempt - 1])
    }
  })

  it('behavior: a hostile attempt returns a well-formed wrong commitment', async () => {
    const honest = await mockExecutor().execute(request())
    const hostile = await mockExecutor({ hostileRate: 1 }).execute(request())
    expect(hostile.output['commitment']).not.toBe(honest.output['commitment'])
    expect(hostile.output['commitment']).toBe(hostileCommitment(honest.output['commitment'] as string))
    expect(hostile.output['commitment']).toMatch(/^[0-9a-f]{64}$/)
  })

  it('behavior: tooBigAbove fails too-big only with more than one input', async () => {
    const err = await failure(mockExecutor({ tooBigAbove: 500 }).execute(request()))
    expect(err.failureClass).toBe('too-big')
    const single = request()
    single.inputs = single.inputs.slice(2)
    await expect(mockExecutor({ tooBigAbove: 1 }).execute(single)).resolves.toBeDefined()
  })

  it('behavior: latency is drawn within range, heartbeats run, and abort stops it', async () => {
    let beats = 0
    const t0 = Date.now()
    await mockExecutor({ latencyMs: { min: 150, max: 250 }, heartbeatMs: 20 }).execute(request({ onHeartbeat: () => void beats++ }))
    expect(Date.now() - t0).toBeGreaterThanOrEqual(145)
    expect(beats).toBeGreaterThanOrEqual(5)

    const ac = new AbortController()
    const p = mockExecutor({ latencyMs: { min: 10_000, max: 10_000 } }).execute(request({ signal: ac.signal }))
    setTimeout(() => ac.abort(), 50)
    const err = await failure(p)
    expect(err.failureClass).toBe('transient')
    expect(err.details['aborted']).toBe(true)
  })

  it('behavior: close() stops attempts in flight', async () => {
    const ex = mockExecutor({ latencyMs: { min: 10_000, max: 10_000 } })
    const p = failure(ex.execute(request()))
    await ex.close()
    expect((await p).details['aborted']).toBe(true)
  })
})
