import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import { sql } from 'kysely'
import { afterEach, describe, expect, it } from 'vitest'
import { openPostgres, type SqlDatabase } from '../../state/sql/database.js'
import { busConformance } from '../conformance.js'
import type { Bus, Delivery } from '../types.js'
import { localBus, type LocalBusOptions } from './local-bus.js'

const PG_URL = process.env.PROOFLINE_TEST_PG_URL ?? 'postgres://root@127.0.0.1:5432/test'

const freshSchema = () => `bus_test_${randomBytes(6).toString('hex')}`

async function dropSchema(database: SqlDatabase): Promise<void> {
  await sql`drop schema if exists ${sql.id(database.schema)} cascade`.execute(database.db)
  await database.close()
}

busConformance('local (Postgres)', async () => {
  const database = await openPostgres(PG_URL, freshSchema(), 5)
  const quiet = { warn: () => {} }
  const bus = await localBus({ database, logger: quiet })
  return {
    bus,
    // A restarted embedded process: same database, in-flight leases reclaimed.
    reopen: () => localBus({ database, reclaimOnOpen: true, logger: quiet }),
    cleanup: () => dropSchema(database),
  }
})

describe('localBus', () => {
  const cleanups: Array<() => Promise<void>> = []
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c()
  })

  const open = async (opts: Omit<LocalBusOptions, 'database'> = {}, database?: SqlDatabase) => {
    const db = database ?? (await openPostgres(PG_URL, freshSchema(), 5))
    if (database === undefined) cleanups.push(() => dropSchema(db))
    const bus = await localBus({ database: db, logger: { warn: () => {} }, ...opts })
    cleanups.push(() => bus.close())
    return { bus, database: db }
  }

  const collect = (bus: Bus, subject: string, group: string, opts: { ackWaitMs?: number; concurrency?: number } = {}, onDelivery?: (d: Delivery) => Promise<void>) => {
    const stop = new AbortController()
    const got: Delivery[] = []
    const done = bus.consume(subject, group, async (d) => {
      got.push(d)
      if (onDelivery !== undefined) await onDelivery(d)
    }, { signal: stop.signal, ...opts })
    cleanups.push(async () => {
      stop.abort()
      await done
    })
    return { got, stop, done }
  }

  const until = async (what: string, cond: () => boolean, ms = 15_000) => {
    const end = Date.now() + ms
    while (!cond()) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
      await new Promise((r) => setTimeout(r, 5))
    }
  }

  it('behavior: opening twice on one schema migrates once and both buses work', async () => {
    const { bus, database } = await open()
    const { bus: bus2 } = await open({}, database)
    const res = await sql<{ version: number }>`select version from bus_migrations`.execute(database.db)
    expect(res.rows.map((r) => r.version)).toEqual([1])
    await bus.publish('s', { id: 'a', data: 1 })
    const c = collect(bus2, 's', 'g')
    await until('delivery through the other bus', () => c.got.length === 1)
  })

  it('behavior: a consumer in another bus on the same database sees publishes by polling', async () => {
    const { bus, database } = await open()
    const { bus: other } = await open({ pollIntervalMs: 50 }, database)
    const c = collect(other, 's', 'g')
    await new Promise((r) => setTimeout(r, 100))
    const t0 = Date.now()
    await bus.publish('s', { id: 'x', data: 1 })
    await until('the delivery', () => c.got.length === 1)
    expect(Date.now() - t0).toBeLessThan(2_000)
  })

  it('behavior: without reclaimOnOpen a crashed lease is redelivered only after it expires; with it, at once', async () => {
    const { bus, database } = await open()
    let release!: () => void
    const hold = new Promise<void>((r) => (release = r))
    const stuck = collect(bus, 's', 'g', { ackWaitMs: 60_000 }, () => hold)
    await bus.publish('s', { id: 'a', data: 1 })
    await until('the first delivery', () => stuck.got.length === 1)
    // The process dies: the bus goes away with the lease held (the handler settling later has no effect).
    await bus.close()
    release()
    const { bus: plain } = await open({}, database)
    const waiting = collect(plain, 's', 'g', { ackWaitMs: 60_000 })
    await new Promise((r) => setTimeout(r, 500))
    expect(waiting.got).toHaveLength(0)
    waiting.stop.abort()
    await waiting.done
    const { bus: reclaiming } = await open({ reclaimOnOpen: true }, database)
    const c = collect(reclaiming, 's', 'g')
    await until('the reclaimed delivery', () => c.got.length === 1)
    expect(c.got[0]?.deliveryCount).toBe(2)
  })

  it('behavior: purge deletes done messages after the dedupe window and keeps undelivered ones', async () => {
    const { bus, database } = await open({ dedupeWindowMs: 0 })
    await bus.publish('s', { id: 'done', data: 1 })
    await bus.publish('s', { id: 'pending', data: 2, notBefore: Date.now() + 60_000 })
    await bus.publish('nobody', { id: 'kept', data: 3 })
    const c = collect(bus, 's', 'g')
    await until('the delivery', () => c.got.length === 1)
    await c.got[0]?.ack()
    await new Promise((r) => setTimeout(r, 50))
    expect(await bus.purge()).toBe(1)
    const left = await sql<{ id: string }>`select id from bus_messages order by seq`.execute(database.db)
    expect(left.rows.map((r) => r.id)).toEqual(['pending', 'kept'])
    // The id is forgotten, so publishing it again is a new message.
    await expect(bus.publish('s', { id: 'done', data: 1 })).resolves.toEqual({ duplicate: false })
  })

  it('behavior: ids stay deduplicated within the dedupe window after the message is done', async () => {
    const { bus } = await open()
    await bus.publish('s', { id: 'a', data: 1 })
    const c = collect(bus, 's', 'g')
    await until('the delivery', () => c.got.length === 1)
    await new Promise((r) => setTimeout(r, 100))
    expect(await bus.purge()).toBe(0)
    await expect(bus.publish('s', { id: 'a', data: 1 })).resolves.toEqual({ duplicate: true })
  })

  it('behavior: concurrent publishes of one id store it once', async () => {
    const { bus } = await open()
    const results = await Promise.all(Array.from({ length: 20 }, () => bus.publish('s', { id: 'same', data: 1 })))
    expect(results.filter((r) => !r.duplicate)).toHaveLength(1)
  })

  it('behavior: a group created while messages are being published gets each message exactly once', async () => {
    const { bus, database } = await open()
    const { bus: other } = await open({ pollIntervalMs: 20 }, database)
    const n = 300
    const publishing = (async () => {
      for (let i = 0; i < n; i++) await bus.publish('race', { id: `m${i}`, data: i })
    })()
    await new Promise((r) => setTimeout(r, 30))
    const c = collect(other, 'race', 'late', { concurrency: 8 })
    await publishing
    await until(`${n} deliveries`, () => c.got.length >= n)
    await new Promise((r) => setTimeout(r, 200))
    expect(new Set(c.got.map((d) => d.id)).size).toBe(n)
    expect(c.got).toHaveLength(n)
  })

  it('behavior: every publish that resolved before SIGKILL is delivered after reopening', async () => {
    const database = await openPostgres(PG_URL, freshSchema(), 5)
    cleanups.push(() => dropSchema(database))
    const child = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(new URL('./crash-publisher.fixture.ts', import.meta.url))], {
      env: { ...process.env, PG_URL, PG_SCHEMA: database.schema },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    })
    const reported: string[] = []
    let stderr = ''
    let buffer = ''
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      buffer += chunk
      const lines = buffer.split('\n')
      buffer = lines.pop() ?? ''
      for (const line of lines) if (line.startsWith('published ')) reported.push(line.slice('published '.length))
    })
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk))
    const exited = new Promise<NodeJS.Signals | number | null>((resolve) => child.on('exit', (code, signal) => resolve(signal ?? code)))
    await until('the child to publish 300 messages', () => reported.length >= 300 || child.exitCode !== null, 60_000).catch((err: unknown) => {
      throw new Error(`${String(err)}; child stderr: ${stderr}`)
    })
    expect(child.exitCode, stderr).toBeNull()
    process.kill(-(child.pid ?? 0), 'SIGKILL')
    expect(await exited).toBe('SIGKILL')
    const acknowledged = new Set(reported)

    const { bus } = await open({ reclaimOnOpen: true }, database)
    const c = collect(bus, 'crash.blocks', 'g', { concurrency: 16 })
    await until('every reported id', () => {
      const got = new Set(c.got.map((d) => d.id))
      for (const id of acknowledged) if (!got.has(id)) return false
      return true
    })
    expect(acknowledged.size).toBeGreaterThanOrEqual(300)
  })
})
