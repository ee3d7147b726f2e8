import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { sql } from 'kysely'
import pino from 'pino'
import { afterAll, describe, expect, it } from 'vitest'
import { fsArtifacts } from '../artifacts/fs/fs-artifacts.js'
import { memoryBus } from '../bus/memory/index.js'
import { parseConfig } from '../config/load.js'
import { openPostgres } from '../state/sql/database.js'
import { sqlStateStore } from '../state/sql/sql-state.js'
import type { StateStore } from '../state/types.js'
import type { PipelineContext } from './context.js'
import { jobsSubject, type JobMessage } from './messages.js'
import { startOrchestrator, SWEEP_PAGE } from './orchestrator.js'

const PG_URL = process.env.PROOFLINE_TEST_PG_URL ?? 'postgres://root@127.0.0.1:5432/test'
const cleanups: (() => Promise<void>)[] = []
afterAll(async () => {
  for (const c of cleanups.reverse()) await c()
})

describe('recovery sweep', () => {
  it('behavior: more queued-but-unpublished jobs than one sweep page are all published, each once', async () => {
    const schema = `sweep_${Math.random().toString(36).slice(2, 10)}`
    const dir = await mkdtemp(join(tmpdir(), 'pl-sweep-'))
    const database = await openPostgres(PG_URL, schema)
    cleanups.push(async () => {
      await sql`drop schema if exists ${sql.id(schema)} cascade`.execute(database.db)
      await database.close()
      await rm(dir, { recursive: true, force: true })
    })
    const state: StateStore = await sqlStateStore(database)
    // As after a crash between creating jobs and publishing them: 2.5 pages of pending jobs.
    const n = Math.floor(SWEEP_PAGE * 2.5)
    await state.createJobs(
      Array.from({ length: n }, (_, k) => ({
        id: `r${k}`,
        stage: 'range',
        first: k * 10 + 1,
        last: k * 10 + 10,
        lastHash: `0x${'ab'.repeat(32)}`,
        programId: 'mock-v1',
        maxAttempts: 3,
        inputs: [{ id: `b${k}`, data: { number: k * 10 + 10 } }],
        cost: 1,
        capacity: null,
        overCapacity: false,
        parentId: null,
      })),
    )
    await state.setMeta('source.next', String(n * 10 + 1))
    await state.setCursor('collector.range', String(n * 10 + 1))
    const config = parseConfig(
      `
version: 1
source: { type: synthetic, startBlock: 1, blocksPerSecond: 0 }
stages:
  - name: range
    input: blocks
    collector: { strategy: sequential, maxCount: 10, timeoutMs: 60000 }
    executor: { type: mock }
    dispatch: { inProcess: false }
`,
      join(dir, 'p.yaml'),
    )
    const bus = memoryBus()
    cleanups.push(() => bus.close())
    // Counts job messages as a worker pool would see them.
    const published = new Map<string, number>()
    const stop = new AbortController()
    const consuming = bus.consume<JobMessage>(jobsSubject('range'), 'count', (d) => {
      published.set(d.data.jobId, (published.get(d.data.jobId) ?? 0) + 1)
      return Promise.resolve()
    }, { signal: stop.signal, concurrency: 8 })
    const ctx: PipelineContext = { config, state, bus, artifacts: fsArtifacts({ dir: join(dir, 'a') }), log: pino({ level: 'silent' }), now: () => Date.now(), fatal: (err) => { throw err } }
    const orch = await startOrchestrator(ctx, { executors: new Map(), workerId: 'test', sweepIntervalMs: 60_000 })
    try {
      // The start-up sweep has run when startOrchestrator resolved.
      expect(await state.listJobs({ stage: 'range', undispatched: true })).toEqual([])
      for (let i = 0; i < 100 && published.size < n; i++) await new Promise((r) => setTimeout(r, 50))
      expect(published.size).toBe(n)
      expect([...published.values()].every((c) => c === 1)).toBe(true)
    } finally {
      await orch.stop()
      stop.abort()
      await consuming
    }
  })
})
