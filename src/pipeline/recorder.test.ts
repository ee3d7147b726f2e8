import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pino from 'pino'
import { sql } from 'kysely'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { fsArtifacts } from '../artifacts/fs/fs-artifacts.js'
import { memoryBus } from '../bus/memory/index.js'
import type { Bus, Delivery } from '../bus/types.js'
import { parseConfig, type ResolvedStage } from '../config/load.js'
import { jobId } from '../core/ids.js'
import { openPostgres, type SqlDatabase } from '../state/sql/database.js'
import { sqlStateStore } from '../state/sql/sql-state.js'
import type { NewJob, StateStore } from '../state/types.js'
import type { PipelineContext } from './context.js'
import { jobsSubject, resultsSubject, type JobMessage, type ResultMessage } from './messages.js'
import { recorder, type Recorder } from './recorder.js'
import { honestMockOutput, testBlock as block } from '../../test/support/mock-jobs.js'

const PG_URL = process.env.PROOFLINE_TEST_PG_URL ?? 'postgres://root@127.0.0.1:5432/test'

const CONFIG = `
version: 1
source: { type: synthetic }
stages:
  - name: range
    input: blocks
    collector: { strategy: sequential, maxCount: 4 }
    executor: { type: mock }
    retry: { maxAttempts: 3, backoffMs: 0, maxBackoffMs: 0 }
    leaseMs: 1000
`


function newJob(first: number, last: number): NewJob {
  const inputs = []
  for (let n = first; n <= last; n++) inputs.push({ id: `b${n}`, data: block(n) })
  const lastHash = block(last).hash
  return {
    id: jobId({ stage: 'range', first, last, lastHash, programId: 'mock-v1' }),
    stage: 'range', first, last, lastHash, programId: 'mock-v1', maxAttempts: 3, inputs,
    cost: 100 * inputs.length, capacity: null, overCapacity: false, parentId: null,
  }
}

const honest = (job: NewJob): Record<string, unknown> => honestMockOutput(job)

describe('recorder', () => {
  let database: SqlDatabase
  let state: StateStore
  let bus: Bus
  let rec: Recorder
  let stage: ResolvedStage
  let dir: string
  const schema = `rec_${Math.random().toString(36).slice(2, 10)}`
  let abort = new AbortController()
  const published: { subject: string; data: unknown }[] = []
  let n = 0

  async function report(r: ResultMessage): Promise<void> {
    await bus.publish(resultsSubject('range'), { id: `r${n++}`, data: r })
  }
  async function until<T>(fn: () => Promise<T | undefined>, ms = 5000): Promise<T> {
    const end = Date.now() + ms
    for (;;) {
      const v = await fn()
      if (v !== undefined) return v
      if (Date.now() > end) throw new Error('timed out waiting')
      await new Promise((r) => setTimeout(r, 20))
    }
  }

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'pl-rec-'))
    abort = new AbortController()
    database = await openPostgres(PG_URL, schema)
    state = await sqlStateStore(database)
    bus = memoryBus()
    stage = parseConfig(CONFIG, '/x/p.yaml').stages[0] as ResolvedStage
    const config = parseConfig(CONFIG, '/x/p.yaml')
    const ctx: PipelineContext = {
      config, state, bus, artifacts: fsArtifacts({ dir }), log: pino({ level: process.env.REC_LOG ?? 'silent' }), now: () => Date.now(),
      fatal: (err) => { throw err },
    }
    published.length = 0
    const watch = (subject: string): void => {
      void bus.consume(subject, 'test-watch', (d: Delivery) => { published.push({ subject, data: d.data }); return Promise.resolve() }, { signal: abort.signal, concurrency: 8 })
    }
    watch('proofs.range')
    watch(jobsSubject('range'))
    rec = recorder(ctx, stage)
    rec.start()
  })

  afterEach(async () => {
    await rec.stop()
    abort.abort()
    await bus.close()
    await sql`drop schema if exists ${sql.id(schema)} cascade`.execute(database.db)
    await database.close()
    await rm(dir, { recursive: true, force: true })
  })

  it('behavior: a verified result succeeds the job and is published once, a duplicate is stale', async () => {
    const job = newJob(1, 4)
    await state.createJobs([job])
    const ok: ResultMessage = { ok: true, jobId: job.id, attempt: 1, workerId: 'w1', durationMs: 5, output: honest(job) }
    await report(ok)
    await report({ ...ok, workerId: 'w2' })
    await until(async () => ((await state.listEvents({ kind: 'stale-result', jobId: job.id })).length > 0 ? true : undefined))
    expect((await state.getJob(job.id))?.state).toBe('succeeded')
    // The attempt that succeeded keeps its record; the duplicate is only an event.
    expect((await state.listAttempts(job.id)).map((a) => [a.attempt, a.outcome, a.workerId])).toEqual([[1, 'succeeded', 'w1']])
    expect(published.filter((p) => p.subject === 'proofs.range')).toHaveLength(1)
  })

  it('behavior: a hostile output is rejected, recorded, and retried as a new attempt', async () => {
    const job = newJob(5, 8)
    await state.createJobs([job])
    await report({ ok: true, jobId: job.id, attempt: 1, workerId: 'w1', durationMs: 5, output: { ...honest(job), commitment: 'f'.repeat(64) } })
    const j = await until(async () => { const x = await state.getJob(job.id); return x?.attempt === 2 ? x : undefined })
    expect(j.state).toBe('retrying')
    expect((await state.listEvents({ kind: 'rejected-output' })).map((e) => e.jobId)).toEqual([job.id])
    const next = await until(async () => published.find((p) => p.subject === jobsSubject('range')))
    expect(next.data).toMatchObject({ jobId: job.id, attempt: 2, avoidWorkers: ['w1'] })
    expect(published.some((p) => p.subject === 'proofs.range')).toBe(false)
  })

  it('behavior: a verified result of a stale attempt finishes an open job once', async () => {
    const job = newJob(9, 12)
    await state.createJobs([job])
    await report({ ok: false, jobId: job.id, attempt: 1, workerId: 'w1', durationMs: 5, failureClass: 'timeout', error: 'slow' })
    await until(async () => ((await state.getJob(job.id))?.attempt === 2 ? true : undefined))
    // The first attempt's worker finished after all, with a valid result.
    await report({ ok: true, jobId: job.id, attempt: 1, workerId: 'w1', durationMs: 5, output: honest(job) })
    await report({ ok: true, jobId: job.id, attempt: 2, workerId: 'w2', durationMs: 5, output: honest(job) })
    await until(async () => ((await state.listAttempts(job.id)).some((a) => a.attempt === 2 && a.outcome === 'stale') ? true : undefined))
    expect((await state.getJob(job.id))?.state).toBe('succeeded')
    expect((await state.listAttempts(job.id)).map((a) => [a.attempt, a.outcome])).toEqual([[1, 'succeeded'], [2, 'stale']])
    expect((await state.listEvents({ kind: 'stale-result' })).length).toBe(1)
    // (attempt 2 never started here: its record exists all the same)
    expect(published.filter((p) => p.subject === 'proofs.range')).toHaveLength(1)
  })

  it('behavior: when a job succeeds, an attempt left running by a dead worker is closed as stale', async () => {
    const job = newJob(31, 34)
    await state.createJobs([job])
    await report({ ok: false, jobId: job.id, attempt: 1, workerId: 'w1', durationMs: 5, failureClass: 'transient', error: 'boom' })
    await until(async () => ((await state.getJob(job.id))?.attempt === 2 ? true : undefined))
    // Attempt 2 started on a worker that then died; attempt 1's worker delivers after all.
    await state.upsertAttempt({ jobId: job.id, attempt: 2, workerId: 'w-dead', startedAt: Date.now(), outcome: 'running' })
    await report({ ok: true, jobId: job.id, attempt: 1, workerId: 'w1', durationMs: 5, output: honest(job) })
    await until(async () => ((await state.getJob(job.id))?.state === 'succeeded' ? true : undefined))
    expect((await state.listAttempts(job.id)).map((a) => [a.attempt, a.outcome])).toEqual([[1, 'succeeded'], [2, 'stale']])
  })

  it('behavior: unprovable is dead at once; transient failures die after maxAttempts', async () => {
    const a = newJob(13, 16)
    const b = newJob(17, 20)
    await state.createJobs([a, b])
    await report({ ok: false, jobId: a.id, attempt: 1, workerId: 'w1', durationMs: 5, failureClass: 'unprovable', error: 'bad header chain' })
    for (let attempt = 1; attempt <= 3; attempt++) {
      await until(async () => ((await state.getJob(b.id))?.attempt === attempt ? true : undefined))
      await report({ ok: false, jobId: b.id, attempt, workerId: 'w1', durationMs: 5, failureClass: 'transient', error: `boom ${attempt}` })
    }
    const deadA = await until(async () => { const x = await state.getJob(a.id); return x?.state === 'dead' ? x : undefined })
    const deadB = await until(async () => { const x = await state.getJob(b.id); return x?.state === 'dead' ? x : undefined })
    expect(deadA.attempt).toBe(1)
    expect(deadB.attempt).toBe(3)
    expect((await state.listEvents({ kind: 'dead-letter' })).map((e) => e.jobId).sort()).toEqual([a.id, b.id].sort())
  })

  it('behavior: too-big splits a range into two children covering it; a single input cannot split', async () => {
    const big = newJob(21, 25)
    const single = newJob(26, 26)
    await state.createJobs([big, single])
    await report({ ok: false, jobId: big.id, attempt: 1, workerId: 'w1', durationMs: 5, failureClass: 'too-big', error: 'too many cycles' })
    await report({ ok: false, jobId: single.id, attempt: 1, workerId: 'w1', durationMs: 5, failureClass: 'too-big', error: 'too many cycles' })
    await until(async () => ((await state.getJob(big.id))?.state === 'split' ? true : undefined))
    await until(async () => ((await state.getJob(single.id))?.state === 'dead' ? true : undefined))
    const children = (await state.listJobs({ stage: 'range' })).filter((j) => j.parentId === big.id)
    expect(children.map((c) => [c.first, c.last])).toEqual([[21, 23], [24, 25]])
    await until(async () => (published.filter((p) => p.subject === jobsSubject('range')).length >= 2 ? true : undefined))
    const dispatched = published.filter((p) => p.subject === jobsSubject('range')).map((p) => (p.data as JobMessage).jobId)
    expect(dispatched.sort()).toEqual(children.map((c) => c.id).sort())
  })

  it('behavior: a running job whose heartbeats stop fails as lease-expired and is retried', async () => {
    const job = newJob(27, 30)
    await state.createJobs([job])
    await state.updateJob(job.id, { states: ['pending'] }, { state: 'running', leaseExpiresAt: Date.now() - 1 })
    expect(await rec.expireLeases()).toBe(1)
    const j = await state.getJob(job.id)
    expect(j).toMatchObject({ state: 'retrying', attempt: 2, failureClass: 'lease-expired' })
  })
})
