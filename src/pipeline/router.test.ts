import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { sql } from 'kysely'
import pino from 'pino'
import { afterEach, describe, expect, it } from 'vitest'
import { fsArtifacts } from '../artifacts/fs/fs-artifacts.js'
import { memoryBus } from '../bus/memory/index.js'
import { parseConfig } from '../config/load.js'
import { mockExecutor } from '../executors/mock/mock-executor.js'
import type { Executor } from '../executors/types.js'
import { openPostgres, type SqlDatabase } from '../state/sql/database.js'
import { sqlStateStore } from '../state/sql/sql-state.js'
import type { PipelineContext } from './context.js'
import { capabilityMismatch, createDispatcher, type Dispatcher } from './dispatcher.js'
import { startOrchestrator } from './orchestrator.js'

const PG_URL = process.env.PROOFLINE_TEST_PG_URL ?? 'postgres://root@127.0.0.1:5432/test'

/** Counts the jobs an executor ran. */
function counted(inner: Executor): Executor & { ran: string[] } {
  const ran: string[] = []
  return {
    kind: inner.kind,
    ran,
    execute: (req) => {
      ran.push(`${req.job.id}#${req.job.attempt}`)
      return inner.execute(req)
    },
    close: () => inner.close(),
  }
}

describe('routing: priority pools and capabilities', () => {
  const cleanups: (() => Promise<void>)[] = []
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c()
  })

  it('behavior: capability matching refuses missing labels, too-large cost and foreign programs', () => {
    const req = { labels: ['gpu'], cost: 100, programId: 'p1' }
    expect(capabilityMismatch({ labels: ['gpu'] }, req)).toBeNull()
    expect(capabilityMismatch({ labels: [] }, req)).toMatch(/missing labels gpu/)
    expect(capabilityMismatch({ labels: ['gpu'], maxCost: 99 }, req)).toMatch(/exceeds/)
    expect(capabilityMismatch({ labels: ['gpu'], programs: ['p2'] }, req)).toMatch(/program p1/)
    expect(capabilityMismatch(undefined, req)).toBeNull()
  })

  it('behavior: with the own pool saturated, only jobs older than the threshold go to overflow; an incapable worker never runs a job', { timeout: 120_000 }, async () => {
    const schema = `route_${Math.random().toString(36).slice(2, 10)}`
    const dir = await mkdtemp(join(tmpdir(), 'pl-route-'))
    const database: SqlDatabase = await openPostgres(PG_URL, schema)
    cleanups.push(async () => {
      await sql`drop schema if exists ${sql.id(schema)} cascade`.execute(database.db)
      await database.close()
      await rm(dir, { recursive: true, force: true })
    })
    const OVERFLOW_MS = 1_500
    const config = parseConfig(
      `
version: 1
source: { type: synthetic, blocksPerSecond: 0, startBlock: 1 }
stages:
  - name: range
    input: blocks
    collector: { strategy: sequential, maxCount: 10, timeoutMs: 200 }
    executor: { type: mock }
    dispatch:
      concurrency: 1
      pools: [{ name: own }, { name: cloud, overflowAfterMs: ${OVERFLOW_MS} }]
      requireLabels: [gpu]
`,
      join(dir, 'p.yaml'),
    )
    const state = await sqlStateStore(database)
    const bus = memoryBus()
    const log = pino({ level: 'silent' })
    const ctx: PipelineContext = { config, state, bus, artifacts: fsArtifacts({ dir: join(dir, 'a') }), log, now: () => Date.now(), fatal: (err) => { throw err } }
    // The own pool: one slow prover. The cloud: a fast one with the label, and one without.
    const own = counted(mockExecutor({ latencyMs: { min: 800, max: 800 } }))
    const cloud = counted(mockExecutor({ latencyMs: { min: 20, max: 20 } }))
    const incapable = counted(mockExecutor({ latencyMs: { min: 20, max: 20 } }))
    const extra: Dispatcher[] = [
      createDispatcher({ bus, artifacts: ctx.artifacts, stage: 'range', executor: cloud, workerId: 'cloud-1', pool: 'cloud', concurrency: 4, capabilities: { labels: ['gpu'] }, log }),
      createDispatcher({ bus, artifacts: ctx.artifacts, stage: 'range', executor: incapable, workerId: 'cloud-cpu', pool: 'cloud', concurrency: 4, capabilities: { labels: [] }, passDelayMs: 20, log }),
    ]
    for (const d of extra) d.start()
    const orch = await startOrchestrator(ctx, { executors: new Map([['range', own]]), workerId: 'own-1', untilBlocks: 100, sweepIntervalMs: 500 })
    const summary = await orch.done
    for (const d of extra) await d.stop()
    await bus.close()

    expect(summary).toMatchObject({ ok: true, reason: 'complete', continuity: { gaps: 0, overlaps: 0, duplicates: 0 } })
    const moves = await state.listEvents({ kind: 'overflow', limit: 1000 })
    // Saturated: one slow own prover cannot take 10 jobs in time, so some overflowed …
    expect(moves.length).toBeGreaterThan(0)
    expect(cloud.ran.length).toBeGreaterThan(0)
    // … and only after waiting past the threshold, and the own pool still ran work.
    for (const m of moves) expect(m.details.ageMs as number).toBeGreaterThanOrEqual(OVERFLOW_MS)
    expect(own.ran.length).toBeGreaterThan(0)
    // The cloud prover only ran attempts that were moved to its pool.
    const moved = new Set(moves.map((m) => `${String(m.jobId)}#${String(m.details.attempt)}`))
    for (const run of cloud.ran) expect(moved.has(run), run).toBe(true)
    // The worker without the required label never ran anything.
    expect(incapable.ran).toEqual([])
  })
})
