import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { sql } from 'kysely'
import pino from 'pino'
import { afterEach, expect, it } from 'vitest'
import { memoryBus } from '../../bus/memory/index.js'
import { parseConfig } from '../../config/load.js'
import { ConfigError } from '../../core/errors.js'
import type { PipelineContext } from '../../pipeline/context.js'
import { startOrchestrator } from '../../pipeline/orchestrator.js'
import { openPostgres, type SqlDatabase } from '../../state/sql/database.js'
import { sqlStateStore } from '../../state/sql/sql-state.js'
import { createExecutor, openArtifacts } from '../../wiring.js'
import { mockProverService } from './mock-service.js'

const PG_URL = process.env.PROOFLINE_TEST_PG_URL ?? 'postgres://root@127.0.0.1:5432/test'
const cleanups: (() => Promise<void>)[] = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

const pipeline = (dir: string, url: string): string => `
version: 1
dataDir: ${dir}/data
source: { type: synthetic, blocksPerSecond: 0, startBlock: 1, seed: 3 }
stages:
  - name: range
    input: blocks
    collector: { strategy: sequential, maxCount: 8, timeoutMs: 300 }
    executor: { type: http, url: "${url}", tokenEnv: PARTNER_TOKEN, pollIntervalMs: 20, maxPollIntervalMs: 100, requestTimeoutMs: 2000, maxPollErrors: 3 }
    retry: { maxAttempts: 6, backoffMs: 20, maxBackoffMs: 100 }
  - name: aggregate
    input: proofs.range
    collector: { strategy: sequential, maxCount: 2, timeoutMs: 300 }
    executor: { type: mock }
log: { level: silent }
`

it('behavior: a stage whose executor is `type: http` proves through the service with config only; a misbehaving service costs retries, never a wrong result', { timeout: 120_000 }, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'pl-http-pipe-'))
  const schema = `http_${Math.random().toString(36).slice(2, 10)}`
  const database: SqlDatabase = await openPostgres(PG_URL, schema)
  const service = await mockProverService({ token: 'partner-token-123', latencyMs: 50 })
  cleanups.push(async () => {
    await service.close()
    await sql`drop schema if exists ${sql.id(schema)} cascade`.execute(database.db)
    await database.close()
    await rm(dir, { recursive: true, force: true })
  })
  const config = parseConfig(pipeline(dir, service.url), join(dir, 'p.yaml'))
  const range = config.stages[0]
  if (range === undefined) throw new Error('no stage')
  expect(() => createExecutor(config, range, 'owner', { env: {} })).toThrow(ConfigError)
  const env = { PARTNER_TOKEN: 'partner-token-123' }
  const log = pino({ level: 'silent' })
  const executors = new Map(config.stages.map((s) => [s.name, createExecutor(config, s, 'owner', { env, log })]))
  // The service misbehaves early on: unavailable polls, then one result for the wrong job.
  service.misbehave = { unavailable: { status: 4, submit: 1 }, wrongJob: true }
  // The first result answered is for the wrong job; later ones are right.
  const watch = setInterval(() => {
    if (service.stats.results > 0) {
      service.misbehave.wrongJob = false
      clearInterval(watch)
    }
  }, 1)
  cleanups.push(() => Promise.resolve(clearInterval(watch)))
  const bus = memoryBus()
  const state = await sqlStateStore(database)
  const ctx: PipelineContext = { config, state, bus, artifacts: openArtifacts(config), log, now: () => Date.now(), fatal: (err) => { throw err } }
  const orch = await startOrchestrator(ctx, { executors, workerId: 'w', untilBlocks: 48, sweepIntervalMs: 300 })
  const summary = await orch.done
  for (const e of executors.values()) await e.close()
  await bus.close()

  expect(summary).toMatchObject({ ok: true, reason: 'complete', continuity: { gaps: 0, overlaps: 0, duplicates: 0 } })
  const ranges = await state.listJobs({ stage: 'range', states: ['succeeded'] })
  expect(ranges.reduce((n, j) => n + (j.last - j.first + 1), 0)).toBeGreaterThanOrEqual(48)
  // Every succeeded range carries the proof the service returned, stored in the artifact store.
  for (const j of ranges) expect(j.result?.proof?.key).toMatch(/^proofs\//)
  // The wrong-job results were caught by the executor, not believed.
  const failedAttempts = (await Promise.all(ranges.map((j) => state.listAttempts(j.id)))).flat().filter((a) => a.failureClass === 'invalid-output')
  expect(failedAttempts.length).toBeGreaterThan(0)
  expect(service.stats.unauthorized).toBe(0)
})
