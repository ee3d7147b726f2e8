import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { sql } from 'kysely'
import pino from 'pino'
import { afterEach, expect, it } from 'vitest'
import { memoryBus } from '../../bus/memory/index.js'
import { loadConfig } from '../../config/load.js'
import type { PipelineContext } from '../../pipeline/context.js'
import { startOrchestrator } from '../../pipeline/orchestrator.js'
import { openPostgres, type SqlDatabase } from '../../state/sql/database.js'
import { sqlStateStore } from '../../state/sql/sql-state.js'
import { createExecutor, openArtifacts } from '../../wiring.js'

const PG_URL = process.env.PROOFLINE_TEST_PG_URL ?? 'postgres://root@127.0.0.1:5432/test'
const EXAMPLE = fileURLToPath(new URL('../../../examples/zkvm-sp1.yaml', import.meta.url))
const cleanups: (() => Promise<void>)[] = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

it('behavior: examples/zkvm-sp1.yaml runs range and aggregation through the SP1 host stand-in; ranges over the cycle limit are split, never dead', { timeout: 300_000 }, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'pl-zkvm-pipe-'))
  const schema = `zkvm_${Math.random().toString(36).slice(2, 10)}`
  const database: SqlDatabase = await openPostgres(PG_URL, schema)
  cleanups.push(async () => {
    await sql`drop schema if exists ${sql.id(schema)} cascade`.execute(database.db)
    await database.close()
    await rm(dir, { recursive: true, force: true })
  })
  const config = await loadConfig(EXAMPLE, { env: { PROOFLINE_DATA_DIR: dir, PROOFLINE_SOURCE__BLOCKS_PER_SECOND: '0', PROOFLINE_LOG__LEVEL: 'silent' } })
  const log = pino({ level: 'silent' })
  const executors = new Map(config.stages.map((s) => [s.name, createExecutor(config, s, 'zkvm-pipe', { log })]))
  const bus = memoryBus()
  const state = await sqlStateStore(database)
  const ctx: PipelineContext = { config, state, bus, artifacts: openArtifacts(config), log, now: () => Date.now(), fatal: (err) => { throw err } }
  const orch = await startOrchestrator(ctx, { executors, workerId: 'w', untilBlocks: 128, sweepIntervalMs: 300 })
  const summary = await orch.done
  for (const e of executors.values()) await e.close()
  await bus.close()

  expect(summary).toMatchObject({ ok: true, reason: 'complete', deadLetters: 0, continuity: { gaps: 0, overlaps: 0, duplicates: 0 } })
  // The host's "exceeded cycle limit" panics became splits.
  expect((await state.listEvents({ kind: 'split', limit: 100 })).length).toBeGreaterThan(0)
  const aggregates = await state.listJobs({ stage: 'aggregate', states: ['succeeded'] })
  expect(aggregates.length).toBeGreaterThan(0)
  for (const j of aggregates) {
    expect(j.result?.output).toMatchObject({ vm: 'sp1', vkey: '0x68f6989498f33823382c1e2c1608cefe22b3949a724e80aa4961f7943dbb9f1e', first: j.first, last: j.last })
    expect(j.result?.proof?.key).toMatch(/^proofs\//)
  }
})
