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
import type { JobInput, StageResult } from '../core/types.js'
import { openPostgres, type SqlDatabase } from '../state/sql/database.js'
import { sqlStateStore } from '../state/sql/sql-state.js'
import type { NewJob, StateStore, StoredJob } from '../state/types.js'
import type { PipelineContext } from './context.js'
import { jobsSubject, resultsSubject, type JobMessage, type ResultMessage } from './messages.js'
import { recorder, type Recorder } from './recorder.js'
import { checkBadInputs } from './repair.js'
import { honestMockOutput, testBlock as block, word as h } from '../../test/support/mock-jobs.js'
import { until } from '../../test/support/poll.js'

const PG_URL = process.env.PROOFLINE_TEST_PG_URL ?? 'postgres://root@127.0.0.1:5432/test'

const CONFIG = `
version: 1
source: { type: synthetic }
stages:
  - name: range
    input: blocks
    output: proofs.range
    collector: { strategy: sequential, maxCount: 4 }
    executor: { type: mock }
    retry: { maxAttempts: 2, backoffMs: 0, maxBackoffMs: 0 }
  - name: aggregate
    input: proofs.range
    output: proofs.aggregate
    collector: { strategy: sequential, maxCount: 2 }
    executor: { type: mock }
    retry: { maxAttempts: 3, backoffMs: 0, maxBackoffMs: 0 }
`


function newJob(stage: string, programId: string, inputs: JobInput[], first: number, last: number): NewJob {
  const lastHash = h(last)
  return { id: jobId({ stage, first, last, lastHash, programId }), stage, first, last, lastHash, programId, maxAttempts: stage === 'range' ? 2 : 3, inputs, cost: 100 * inputs.length, capacity: null, overCapacity: false, parentId: null }
}

function rangeJob(first: number, last: number): NewJob {
  const inputs: JobInput[] = []
  for (let n = first; n <= last; n++) inputs.push({ id: `b${n}`, data: block(n) })
  return newJob('range', 'mock-v1', inputs, first, last)
}

/** The output an honest mock prover returns (`note` tells two proofs of one statement apart). */
const honest = (job: Pick<NewJob, 'programId' | 'stage' | 'first' | 'last' | 'lastHash' | 'inputs'>, note: string): Record<string, unknown> => honestMockOutput(job, { note })

describe('repair of a job whose inputs are found bad (bad-input)', () => {
  let database: SqlDatabase
  let state: StateStore
  let bus: Bus
  let recs: Recorder[] = []
  let dir: string
  const schema = `repair_${Math.random().toString(36).slice(2, 10)}`
  let abort = new AbortController()
  const published: { subject: string; data: unknown }[] = []
  let n = 0

  async function report(stage: string, r: ResultMessage): Promise<void> {
    await bus.publish(resultsSubject(stage), { id: `r${n++}`, data: r })
  }
  const jobIs = (id: string, pred: (j: StoredJob) => boolean): Promise<StoredJob> =>
    until(`job ${id}`, async () => {
      const j = await state.getJob(id)
      if (j && pred(j)) return j
      throw new Error(`job ${id} is ${j?.state ?? 'missing'} at attempt ${j?.attempt ?? '-'}`)
    }, 5000, 20)
  const dispatched = (stage: string): JobMessage[] => published.filter((p) => p.subject === jobsSubject(stage)).map((p) => p.data as JobMessage)

  /** Two range jobs proved (R2 by `w-bad`) and the aggregate job over them. */
  async function setup(): Promise<{ r1: StoredJob; r2: StoredJob; agg: StoredJob }> {
    const a = rangeJob(1, 4)
    const b = rangeJob(5, 8)
    await state.createJobs([a, b])
    await report('range', { ok: true, jobId: a.id, attempt: 1, workerId: 'w-good', durationMs: 5, output: honest(a, 'first') })
    await report('range', { ok: true, jobId: b.id, attempt: 1, workerId: 'w-bad', durationMs: 5, output: honest(b, 'first') })
    const r1 = await jobIs(a.id, (j) => j.state === 'succeeded')
    const r2 = await jobIs(b.id, (j) => j.state === 'succeeded')
    const agg = newJob('aggregate', 'mock-agg', [r1, r2].map((r) => ({ id: `${r.id}:result`, data: r.result as StageResult })), 1, 8)
    await state.createJobs([agg])
    return { r1, r2, agg: (await state.getJob(agg.id)) as StoredJob }
  }

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'pl-repair-'))
    abort = new AbortController()
    database = await openPostgres(PG_URL, schema)
    state = await sqlStateStore(database)
    bus = memoryBus()
    const config = parseConfig(CONFIG, '/x/p.yaml')
    const ctx: PipelineContext = {
      config, state, bus, artifacts: fsArtifacts({ dir }), log: pino({ level: process.env.REPAIR_LOG ?? 'silent' }), now: () => Date.now(),
      fatal: (err) => { throw err },
    }
    published.length = 0
    for (const subject of [jobsSubject('range'), jobsSubject('aggregate'), 'proofs.aggregate']) {
      void bus.consume(subject, 'test-watch', (d: Delivery) => { published.push({ subject, data: d.data }); return Promise.resolve() }, { signal: abort.signal, concurrency: 8 })
    }
    recs = config.stages.map((s) => recorder(ctx, s as ResolvedStage))
    for (const r of recs) r.start()
  })

  afterEach(async () => {
    for (const r of recs) await r.stop()
    abort.abort()
    await bus.close()
    await sql`drop schema if exists ${sql.id(schema)} cascade`.execute(database.db)
    await database.close()
    await rm(dir, { recursive: true, force: true })
  })

  it('behavior: the bad input is withdrawn and proved again away from its worker; the job waits, then retries over the new proof', async () => {
    const { r1, r2, agg } = await setup()
    const aggRec = recs[1] as Recorder
    await report('aggregate', { ok: false, jobId: agg.id, attempt: 1, workerId: 'w-agg', durationMs: 5, failureClass: 'bad-input', error: 'inner proof 1 fails its pairing check', badInputs: [r2.id] })

    // R2's result is withdrawn: its next attempt is published, away from the worker that made the bad proof.
    const again = await jobIs(r2.id, (j) => j.state === 'retrying')
    expect(again).toMatchObject({ attempt: 2, result: null, resultPublished: false, failureClass: 'invalid-output' })
    expect((await state.listAttempts(r2.id)).map((a) => [a.attempt, a.outcome, a.workerId])).toEqual([[1, 'rejected', 'w-bad']])
    const [ev] = await state.listEvents({ kind: 'rejected-output', jobId: r2.id })
    expect(ev?.details).toMatchObject({ attempt: 1, worker: 'w-bad', foundBy: agg.id, reportedBy: 'w-agg' })
    await until('R2 dispatched again', async () => (dispatched('range').some((m) => m.jobId === r2.id && m.attempt === 2) ? true : undefined), 5000, 20)
    expect(dispatched('range').find((m) => m.jobId === r2.id)?.avoidWorkers).toEqual(['w-bad'])
    // R1 is untouched; the aggregate waits in failed (bad-input), and the sweep leaves it there meanwhile.
    expect((await state.getJob(r1.id))?.state).toBe('succeeded')
    const waiting = await jobIs(agg.id, (j) => j.state === 'failed')
    expect(waiting.failureClass).toBe('bad-input')
    await aggRec.decideFailed(waiting)
    expect((await state.getJob(agg.id))?.state).toBe('failed')
    expect(dispatched('aggregate')).toHaveLength(0)

    // R2 proved again by an honest worker: the sweep swaps the new proof in and retries the aggregate.
    await report('range', { ok: true, jobId: r2.id, attempt: 2, workerId: 'w-good', durationMs: 5, output: honest(r2, 'second') })
    const r2b = await jobIs(r2.id, (j) => j.state === 'succeeded')
    await aggRec.decideFailed((await state.getJob(agg.id)) as StoredJob)
    const retried = await jobIs(agg.id, (j) => j.state === 'retrying')
    expect(retried.attempt).toBe(2)
    expect(retried.inputs.map((i) => (i.data as StageResult).output['note'])).toEqual(['first', 'second'])
    expect(retried.inputs[1]?.data).toEqual(r2b.result)
    expect(retried.inputs.map((i) => i.id)).toEqual(agg.inputs.map((i) => i.id))
    await until('aggregate retried', async () => dispatched('aggregate').find((m) => m.attempt === 2), 5000, 20)
    expect(dispatched('aggregate')[0]?.avoidWorkers).toEqual([])

    // The retry over the new proof succeeds; only now is an aggregate result published.
    await report('aggregate', { ok: true, jobId: agg.id, attempt: 2, workerId: 'w-agg', durationMs: 5, output: honest(retried, 'agg') })
    await jobIs(agg.id, (j) => j.state === 'succeeded')
    await until('aggregate result', async () => (published.some((p) => p.subject === 'proofs.aggregate') ? true : undefined), 5000, 20)
    expect(published.filter((p) => p.subject === 'proofs.aggregate')).toHaveLength(1)
  })

  it('behavior: a bad-input report naming a job that is not an input is rejected as invalid output; nothing is withdrawn', async () => {
    const { r1, r2, agg } = await setup()
    await report('aggregate', { ok: false, jobId: agg.id, attempt: 1, workerId: 'w-liar', durationMs: 5, failureClass: 'bad-input', error: 'trust me', badInputs: ['some-other-job'] })
    const j = await jobIs(agg.id, (x) => x.attempt === 2)
    expect(j).toMatchObject({ state: 'retrying', failureClass: 'invalid-output' })
    expect((await state.listEvents({ kind: 'rejected-output', jobId: agg.id }))[0]?.message).toMatch(/not inputs of this job/)
    expect((await state.getJob(r1.id))?.state).toBe('succeeded')
    expect((await state.getJob(r2.id))?.state).toBe('succeeded')
    expect(dispatched('range')).toHaveLength(0)
  })

  it('behavior: a job whose re-proved input keeps being found bad dies when its attempts run out', async () => {
    const { r2, agg } = await setup()
    const aggRec = recs[1] as Recorder
    for (let attempt = 1; attempt <= 3; attempt++) {
      await jobIs(agg.id, (j) => j.attempt === attempt && j.state !== 'failed')
      await report('aggregate', { ok: false, jobId: agg.id, attempt, workerId: 'w-agg', durationMs: 5, failureClass: 'bad-input', error: `bad again ${attempt}`, badInputs: [r2.id] })
      const r = await jobIs(r2.id, (j) => j.state === 'retrying' && j.attempt === attempt + 1)
      await report('range', { ok: true, jobId: r2.id, attempt: r.attempt, workerId: `w${attempt}`, durationMs: 5, output: honest(r, `proof ${attempt + 1}`) })
      await jobIs(r2.id, (j) => j.state === 'succeeded' && j.attempt === attempt + 1)
      // The recorder itself may already have retried it (the input came back before it looked): the sweep's turn otherwise.
      const waiting = await jobIs(agg.id, (j) => j.state === 'failed' || j.attempt > attempt)
      if (waiting.state === 'failed') await aggRec.decideFailed(waiting)
    }
    const dead = await jobIs(agg.id, (j) => j.state === 'dead')
    expect(dead.attempt).toBe(3)
    expect((await state.listEvents({ kind: 'dead-letter', jobId: agg.id }))[0]?.message).toMatch(/bad-input/)
    // Each withdrawal gave the range job its attempt, beyond its own budget of 2.
    expect((await state.getJob(r2.id))?.maxAttempts).toBe(4)
  })

  it('checkBadInputs: only names of the job\'s inputs are believed', () => {
    const job = { inputs: [{ id: 'x:result', data: { jobId: 'x', stage: 'range' } }, { id: 'b9', data: block(9) }] }
    expect(checkBadInputs(job, ['x', 'x'])).toEqual({ ok: true, ids: ['x'] })
    expect(checkBadInputs(job, [])).toMatchObject({ ok: false })
    expect(checkBadInputs(job, undefined)).toMatchObject({ ok: false })
    expect(checkBadInputs(job, ['x', 'y'])).toMatchObject({ ok: false })
  })
})
