import { mkdir, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { sql } from 'kysely'
import pino from 'pino'
import { afterEach, expect, it } from 'vitest'
import { startOperatorApi } from '../../api/start.js'
import { memoryBus } from '../../bus/memory/index.js'
import { parseConfig } from '../../config/load.js'
import type { PipelineContext } from '../../pipeline/context.js'
import { startOrchestrator } from '../../pipeline/orchestrator.js'
import { recorder } from '../../pipeline/recorder.js'
import { openPostgres } from '../../state/sql/database.js'
import { sqlStateStore } from '../../state/sql/sql-state.js'
import type { PipelineEvent, StateStore } from '../../state/types.js'
import { createExecutor, openArtifacts } from '../../wiring.js'

const PG_URL = process.env.PROOFLINE_TEST_PG_URL ?? 'postgres://root@127.0.0.1:5432/test'
const cleanups: (() => Promise<void>)[] = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

const BLOCKS = 64

const pipeline = (dir: string, range: string, aggregate: string): string => `
version: 1
dataDir: ${dir}/data
source: { type: synthetic, blocksPerSecond: 0, startBlock: 1, seed: 5 }
stages:
  - name: range
    input: blocks
    collector: { strategy: sequential, maxCount: 8 }
    executor: ${range}
    retry: { maxAttempts: 4, backoffMs: 10, maxBackoffMs: 50 }
  - name: aggregate
    input: proofs.range
    collector: { strategy: sequential, maxCount: 2 }
    executor: ${aggregate}
log: { level: silent }
`

/** Runs the pipeline to BLOCKS blocks; returns its state store (still open) and the dir. */
async function run(rangeExecutor: string, aggregateExecutor: string): Promise<{ state: StateStore; ctx: PipelineContext; executorsClosed: Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'pl-shadow-'))
  const schema = `shadow_${Math.random().toString(36).slice(2, 10)}`
  const database = await openPostgres(PG_URL, schema)
  cleanups.push(async () => {
    await sql`drop schema if exists ${sql.id(schema)} cascade`.execute(database.db)
    await database.close()
    await rm(dir, { recursive: true, force: true })
  })
  const config = parseConfig(pipeline(dir, rangeExecutor, aggregateExecutor), join(dir, 'p.yaml'))
  const log = pino({ level: 'silent' })
  const executors = new Map(config.stages.map((s) => [s.name, createExecutor(config, s, 'shadow-test', { log })]))
  const bus = memoryBus()
  cleanups.push(() => bus.close())
  const state = await sqlStateStore(database)
  const ctx: PipelineContext = { config, state, bus, artifacts: openArtifacts(config), log, now: () => Date.now(), fatal: (err) => { throw err } }
  const orch = await startOrchestrator(ctx, { executors, workerId: 'w', untilBlocks: BLOCKS, sweepIntervalMs: 200 })
  const summary = await orch.done
  expect(summary).toMatchObject({ ok: true, reason: 'complete', deadLetters: 0, continuity: { gaps: 0, overlaps: 0, duplicates: 0 } })
  const executorsClosed = Promise.all([...executors.values()].map((e) => e.close())).then(() => undefined)
  return { state, ctx, executorsClosed }
}

/** What a proposer would take: each stage's succeeded results, by job id. */
async function results(state: StateStore): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {}
  for (const stage of ['range', 'aggregate']) {
    for (const j of await state.listJobs({ stage, states: ['succeeded'] })) out[j.id] = { output: j.result?.output, first: j.first, last: j.last }
  }
  return out
}

it('behavior: a disagreeing shadow and a hanging shadow change nothing the pipeline produces; the disagreement is recorded and served by the API', { timeout: 180_000 }, async () => {
  const alone = await run('{ type: mock, seed: 1 }', '{ type: mock, seed: 2 }')
  const shadowed = await run(
    // The range shadow always returns a wrong commitment; the aggregate shadow never answers.
    '{ type: shadow, primary: { type: mock, seed: 1 }, shadow: { type: mock, seed: 1, hostileRate: 1 }, cost: { primaryPerHour: 1, shadowPerHour: 2 } }',
    `{ type: shadow, primary: { type: mock, seed: 2 }, shadow: { type: process, command: ["${process.execPath}", "-e", "setTimeout(() => {}, 1e9)"], timeoutMs: 600000 }, shadowTimeoutMs: 600000 }`,
  )
  // Exactly the same results — what the proposer would take — with or without shadows.
  const expected = await results(alone.state)
  expect(Object.keys(expected).length).toBeGreaterThan(BLOCKS / 8)
  expect(await results(shadowed.state)).toEqual(expected)
  // Nothing was rejected or retried because of the shadow.
  expect(await shadowed.state.listEvents({ kind: 'rejected-output' })).toEqual([])

  // Observations still on the bus after the run stopped are recorded by a recorder started to drain them.
  const drain = recorder(shadowed.ctx, shadowed.ctx.config.stages[0] as (typeof shadowed.ctx.config.stages)[number])
  drain.start()
  cleanups.push(() => drain.stop())
  const ranges = await shadowed.state.listJobs({ stage: 'range', states: ['succeeded'] })
  let events: PipelineEvent[] = []
  const deadline = Date.now() + 20_000
  for (;;) {
    events = await shadowed.state.listEvents({ kind: 'shadow', limit: 1000 })
    if (ranges.every((j) => events.some((e) => e.jobId === j.id)) || Date.now() > deadline) break
    await new Promise((r) => setTimeout(r, 50))
  }
  for (const j of ranges) {
    const e = events.find((x) => x.jobId === j.id)
    expect(e, j.id).toBeDefined()
    expect(e?.details).toMatchObject({ agreement: 'disagree', primary: { executor: 'mock', ok: true }, shadow: { executor: 'mock', ok: true } })
    expect((e?.details.primary as { cost: number }).cost).toBeGreaterThanOrEqual(0)
  }

  await mkdir(shadowed.ctx.config.dataDir, { recursive: true })
  const operator = await startOperatorApi({ config: shadowed.ctx.config, ctx: shadowed.ctx, orchestrator: () => undefined, token: 'x'.repeat(16), log: pino({ level: 'silent' }) })
  cleanups.push(() => operator.close())
  const api = operator.server
  const first = ranges[0]
  if (first === undefined) throw new Error('no range jobs')
  const job = (await (await fetch(`${api.url}/jobs/${encodeURIComponent(first.id)}`)).json()) as { events: PipelineEvent[] }
  expect(job.events.find((e) => e.kind === 'shadow')?.message).toMatch(/DISAGREES on commitment/)
  const listed = (await (await fetch(`${api.url}/events?kind=shadow&limit=500`)).json()) as { events: PipelineEvent[] }
  expect(listed.events.length).toBeGreaterThanOrEqual(ranges.length)

  // Closing the executors stops the hanging shadow processes.
  await shadowed.executorsClosed
  await alone.executorsClosed
})
