import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { sql } from 'kysely'
import pino from 'pino'
import { afterAll, describe, expect, it } from 'vitest'
import { fsArtifacts } from '../artifacts/fs/fs-artifacts.js'
import { memoryBus } from '../bus/memory/index.js'
import { ANVIL_DEV_KEYS, installMessagePasser, startLoad } from '../chain/load.js'
import { startTestAnvil, type TestAnvil } from '../chain/test-anvil.js'
import { parseConfig } from '../config/load.js'
import { mockExecutor } from '../executors/mock/mock-executor.js'
import { openPostgres, type SqlDatabase } from '../state/sql/database.js'
import { sqlStateStore } from '../state/sql/sql-state.js'
import type { PipelineContext } from './context.js'
import { startOrchestrator } from './orchestrator.js'

const PG_URL = process.env.PROOFLINE_TEST_PG_URL ?? 'postgres://root@127.0.0.1:5432/test'
const cleanups: (() => Promise<void>)[] = []
afterAll(async () => {
  for (const c of cleanups.reverse()) await c()
})
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

/**
 * The watcher drives the pipeline over a real anvil L2 with transaction load; a reorg deeper
 * than the confirmation depth replaces blocks that were already in jobs. Afterwards no
 * succeeded job of any stage covers an orphaned block.
 */
describe('reorgs through the whole pipeline', () => {
  it('behavior: a reorg deeper than the confirmations invalidates the jobs over orphaned blocks and they are re-proved', { timeout: 180_000 }, async () => {
    const anvil: TestAnvil = await startTestAnvil({ chainId: 901 })
    cleanups.push(() => anvil.stop())
    const schema = `reorg_${Math.random().toString(36).slice(2, 10)}`
    const dir = await mkdtemp(join(tmpdir(), 'pl-reorg-'))
    const database: SqlDatabase = await openPostgres(PG_URL, schema)
    cleanups.push(async () => {
      await sql`drop schema if exists ${sql.id(schema)} cascade`.execute(database.db)
      await database.close()
      await rm(dir, { recursive: true, force: true })
    })
    await installMessagePasser(anvil.rpc)
    const loadAbort = new AbortController()
    let load = await startLoad({ rpcUrl: anvil.url, privateKeys: ANVIL_DEV_KEYS.slice(0, 3), txPerBlock: 3, blockIntervalMs: 150, seed: 1, signal: loadAbort.signal })

    const config = parseConfig(
      `
version: 1
source: { type: l2, rpcUrl: "${anvil.url}", startBlock: 1, safety: { kind: latest, confirmations: 1 }, pollIntervalMs: 100 }
stages:
  - name: range
    input: blocks
    collector: { strategy: sequential, maxCount: 4, timeoutMs: 400 }
    executor: { type: mock }
  - name: aggregate
    input: proofs.range
    collector: { strategy: sequential, maxCount: 2, timeoutMs: 400 }
    executor: { type: mock }
`,
      join(dir, 'p.yaml'),
    )
    const state = await sqlStateStore(database)
    const bus = memoryBus()
    cleanups.push(() => bus.close())
    const ctx: PipelineContext = { config, state, bus, artifacts: fsArtifacts({ dir: join(dir, 'a') }), log: pino({ level: 'silent' }), now: () => Date.now(), fatal: (err) => { throw err } }
    const executors = new Map([['range', mockExecutor({ latencyMs: { min: 20, max: 50 } })], ['aggregate', mockExecutor({ latencyMs: { min: 20, max: 50 } })]])
    const orch = await startOrchestrator(ctx, { executors, workerId: 'test', untilBlocks: 40, sweepIntervalMs: 500 })

    // Let jobs over blocks 1..~16 be created (some proven), then replace the last 6 blocks.
    for (let i = 0; i < 200 && ((await state.listJobs({ stage: 'range', states: ['succeeded'] })).length < 3); i++) await sleep(100)
    loadAbort.abort()
    await load.done
    const head = Number(await anvil.call('eth_blockNumber'))
    await anvil.call('anvil_reorg', [6, [[{ from: '0x70997970C51812dc3A010C7d01b50e0d17dc79C8', to: '0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC', value: '0x5' }, 0]]])
    const loadAbort2 = new AbortController()
    load = await startLoad({ rpcUrl: anvil.url, privateKeys: ANVIL_DEV_KEYS.slice(0, 3), txPerBlock: 2, blockIntervalMs: 100, seed: 2, signal: loadAbort2.signal })
    cleanups.push(async () => {
      loadAbort2.abort()
      await load.done
    })

    const summary = await orch.done
    expect(summary, JSON.stringify(summary)).toMatchObject({ ok: true, reason: 'complete', continuity: { gaps: 0, overlaps: 0, duplicates: 0 } })
    expect(summary.reorgs.rewinds).toBeGreaterThan(0)
    expect(summary.reorgs.invalidatedJobs).toBeGreaterThan(0)
    expect(head).toBeGreaterThan(6)

    // No succeeded job anywhere covers an orphaned block: every input block hash is canonical now.
    const canonical = async (n: number): Promise<string> => ((await anvil.call('eth_getBlockByNumber', [`0x${n.toString(16)}`, false])) as { hash: string }).hash
    for (const job of await state.listJobs({ stage: 'range', states: ['succeeded'] })) {
      for (const input of job.inputs) {
        const b = input.data as { number: number; hash: string }
        expect(b.hash, `block ${b.number} in ${job.id}`).toBe(await canonical(b.number))
      }
    }
    for (const job of await state.listJobs({ stage: 'aggregate', states: ['succeeded'] })) expect(job.lastHash).toBe(await canonical(job.last))
    expect((await state.listJobs({ states: ['invalidated'] })).length).toBe(summary.reorgs.invalidatedJobs)
  })
})
