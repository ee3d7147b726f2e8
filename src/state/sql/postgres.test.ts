import { randomBytes } from 'node:crypto'
import { sql } from 'kysely'
import { describe, expect, it } from 'vitest'
import { StateError } from '../../core/errors.js'
import { newJob, stateStoreConformance } from '../conformance.js'
import { type SqlDatabase, openPostgres, openSqlDatabase } from './database.js'
import { type Migration, migrateState, runMigrations } from './migrations.js'
import { sqlStateStore } from './sql-state.js'

/** A real Postgres server (trust auth). Each test uses its own schema and drops it. */
const URL = process.env.PROOFLINE_TEST_POSTGRES_URL ?? 'postgres://root@127.0.0.1:5432/test'

const freshSchema = (): string => `t_state_${randomBytes(6).toString('hex')}`

async function dropAndClose(database: SqlDatabase): Promise<void> {
  try {
    await sql`drop schema if exists ${sql.id(database.schema)} cascade`.execute(database.db)
  } finally {
    await database.close()
  }
}

stateStoreConformance('postgres', async () => {
  const database = await openPostgres(URL, freshSchema(), 4)
  const store = await sqlStateStore(database)
  return {
    store,
    cleanup: async () => {
      await store.close()
      await dropAndClose(database)
    },
  }
})

describe('sql state store on postgres', () => {
  it('behavior: stores opened at once on a new schema all succeed and migrate it once', async () => {
    const schema = freshSchema()
    const n = 8
    const databases = await Promise.all(Array.from({ length: n }, () => openPostgres(URL, schema, 2)))
    try {
      const results = await Promise.all(databases.map((d) => migrateState(d)))
      const stores = await Promise.all(databases.map((d) => sqlStateStore(d)))
      expect(results.filter((r) => r.applied.length > 0)).toEqual([{ applied: [1, 2], version: 2 }])
      const rows = await sql<{ version: number }>`select version from state_migrations order by version`.execute(databases[0]!.db)
      expect(rows.rows).toEqual([{ version: 1 }, { version: 2 }])
      // Every store works on the one set of tables.
      await Promise.all(stores.map((s, i) => s.createJobs([newJob(`j${i}`)])))
      expect(await stores[0]!.listJobs()).toHaveLength(n)
    } finally {
      await sql`drop schema if exists ${sql.id(schema)} cascade`.execute(databases[0]!.db)
      await Promise.all(databases.map((d) => d.close()))
    }
  })

  it('behavior: a migration run concurrently by many processes runs its body once', async () => {
    const database = await openPostgres(URL, freshSchema(), 10)
    try {
      const counting: Migration[] = [
        { version: 1, name: 'table', up: async (db) => void (await sql`create table counted (n int)`.execute(db)) },
        { version: 2, name: 'row', up: async (db) => void (await sql`insert into counted values (1)`.execute(db)) },
      ]
      const results = await Promise.all(Array.from({ length: 6 }, () => runMigrations(database, { table: 'test_migrations', migrations: counting })))
      expect(results.flatMap((r) => r.applied)).toEqual([1, 2])
      const count = await sql<{ n: string }>`select count(*) as n from counted`.execute(database.db)
      expect(count.rows[0]!.n).toBe('1')
    } finally {
      await dropAndClose(database)
    }
  })

  it('behavior: a schema migrated by a newer proofline is refused with a non-retryable error', async () => {
    const database = await openPostgres(URL, freshSchema(), 2)
    try {
      await migrateState(database)
      await sql`insert into state_migrations (version, name, applied_at) values (99, 'future', 0)`.execute(database.db)
      const err = await sqlStateStore(database).catch((e: unknown) => e)
      expect(err).toBeInstanceOf(StateError)
      expect(err).toMatchObject({ code: 'STATE_SCHEMA_TOO_NEW', retryable: false })
    } finally {
      await dropAndClose(database)
    }
  })

  it('behavior: a number that is not a safe integer is refused before it reaches the database', async () => {
    const database = await openPostgres(URL, freshSchema(), 2)
    try {
      const store = await sqlStateStore(database)
      await expect(store.createJobs([newJob('j1', { cost: 1.5 })])).rejects.toMatchObject({ code: 'STATE_INVALID_VALUE', retryable: false })
      await expect(store.recordBlocks([{ number: 2 ** 53, hash: '0x', parentHash: '0x', gasUsed: 0, cost: 0, seenAt: 0 }])).rejects.toBeInstanceOf(StateError)
      expect(await store.listJobs()).toEqual([])
    } finally {
      await dropAndClose(database)
    }
  })

  it('behavior: an unreachable server is a retryable StateError naming the redacted url', async () => {
    const err = await openSqlDatabase({ kind: 'postgres', url: 'postgres://u:secret@127.0.0.1:1/db', schema: 'x' }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(StateError)
    expect(err).toMatchObject({ code: 'STATE_UNAVAILABLE', retryable: true })
    expect((err as Error).message).toContain('***')
    expect((err as Error).message).not.toContain('secret')
  })

  it('behavior: a transaction-bound store refuses use after its transaction ended', async () => {
    const database = await openPostgres(URL, freshSchema(), 2)
    try {
      const store = await sqlStateStore(database)
      let leaked: typeof store | undefined
      await store.transaction(async (tx) => {
        leaked = tx
        await tx.setMeta('a', 'b')
      })
      await expect(leaked!.getMeta('a')).rejects.toMatchObject({ code: 'STATE_TX_FINISHED' })
      expect(await store.getMeta('a')).toBe('b')
    } finally {
      await dropAndClose(database)
    }
  })
})
