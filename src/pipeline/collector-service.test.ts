import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { sql } from 'kysely'
import pino from 'pino'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { fsArtifacts } from '../artifacts/fs/fs-artifacts.js'
import { memoryBus } from '../bus/memory/index.js'
import type { Bus } from '../bus/types.js'
import { parseConfig, type ResolvedStage } from '../config/load.js'
import { StateError } from '../core/errors.js'
import { openPostgres, type SqlDatabase } from '../state/sql/database.js'
import { sqlStateStore } from '../state/sql/sql-state.js'
import type { StateStore } from '../state/types.js'
import { collectorService, type CollectorService } from './collector-service.js'
import type { PipelineContext } from './context.js'
import { BLOCKS_SUBJECT } from './messages.js'
import { testBlock as block } from '../../test/support/mock-jobs.js'

const PG_URL = process.env.PROOFLINE_TEST_PG_URL ?? 'postgres://root@127.0.0.1:5432/test'
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

const CONFIG = `
version: 1
source: { type: synthetic, startBlock: 1 }
stages:
  - name: range
    input: blocks
    collector: { strategy: sequential, maxCount: 4, timeoutMs: 200 }
    executor: { type: mock }
`


/**
 * The real Postgres state store behind a switch: while `down`, every call fails as the driver
 * does when the server is gone (found by the chaos run: a Postgres crash-restart).
 */
function switchable(state: StateStore): { store: StateStore; setDown(v: boolean): void } {
  let down = false
  const store = new Proxy(state, {
    get(target, key, receiver) {
      const v: unknown = Reflect.get(target, key, receiver)
      if (typeof v !== 'function') return v
      return (...args: unknown[]) => {
        if (down) return Promise.reject(new StateError('STATE_UNAVAILABLE', 'connect ECONNREFUSED (test: the database is down)', { retryable: true }))
        return (v as (...a: unknown[]) => unknown).apply(target, args)
      }
    },
  })
  return { store, setDown: (v) => (down = v) }
}

describe('collector service', () => {
  let database: SqlDatabase
  let state: StateStore
  let bus: Bus
  let dir: string
  let service: CollectorService | undefined
  const schema = `coll_${Math.random().toString(36).slice(2, 10)}`

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'pl-coll-'))
    database = await openPostgres(PG_URL, schema)
    state = await sqlStateStore(database)
    bus = memoryBus()
  })
  afterEach(async () => {
    await service?.stop()
    await bus.close()
    await sql`drop schema if exists ${sql.id(schema)} cascade`.execute(database.db)
    await database.close()
    await rm(dir, { recursive: true, force: true })
  })

  it('behavior: a group that closes while the database is down is not lost — memory is restored from the store before anything else is collected', async () => {
    const config = parseConfig(CONFIG, join(dir, 'p.yaml'))
    const { store, setDown } = switchable(state)
    const ctx: PipelineContext = { config, state: store, bus, artifacts: fsArtifacts({ dir: join(dir, 'a') }), log: pino({ level: 'silent' }), now: () => Date.now(), fatal: (err) => { throw err } }
    service = collectorService(ctx, config.stages[0] as ResolvedStage)
    await service.start()
    const publish = async (n: number): Promise<void> => void (await bus.publish(BLOCKS_SUBJECT, { id: `block:${n}:${block(n).hash}`, data: block(n) }))

    // Blocks 1-3 are stored; the database goes down before their group times out and closes.
    for (const n of [1, 2, 3]) await publish(n)
    for (let i = 0; i < 100 && (await state.listOpenCollectorItems('range')).length < 3; i++) await sleep(20)
    expect((await state.listOpenCollectorItems('range')).map((i) => i.start)).toEqual([1, 2, 3])
    setDown(true)
    // The group closes in memory (timeout 200 ms), its commit fails, and so does the resync.
    await sleep(800)
    expect(await state.listJobs({ stage: 'range' })).toEqual([])
    setDown(false)

    // Back up: later blocks arrive. Every block must end up in exactly one job, in order.
    for (const n of [4, 5, 6, 7, 8]) await publish(n)
    let jobs: { first: number; last: number }[] = []
    for (let i = 0; i < 200; i++) {
      jobs = (await state.listJobs({ stage: 'range' })).map((j) => ({ first: j.first, last: j.last })).sort((a, b) => a.first - b.first)
      if (jobs.length > 0 && jobs[jobs.length - 1]?.last === 8) break
      await sleep(25)
    }
    expect(jobs[0]?.first).toBe(1)
    expect(jobs[jobs.length - 1]?.last).toBe(8)
    for (let i = 1; i < jobs.length; i++) expect(jobs[i]?.first, JSON.stringify(jobs)).toBe((jobs[i - 1]?.last ?? 0) + 1)
    expect(await state.listOpenCollectorItems('range')).toEqual([])
  })
})
