import { randomBytes } from 'node:crypto'
import { sql } from 'kysely'
import { afterEach, describe, expect, it } from 'vitest'
import { StateError } from '../../core/errors.js'
import { fencedStateStoreConformance, stateStoreConformance } from '../conformance.js'
import type { StateStore } from '../types.js'
import { type SqlDatabase, openPostgres } from './database.js'
import { type Fence, type LeaderElection, type LeaderElectionOptions, type LeaderLost, leaderElection, readLeader } from './leader.js'
import { migrateState } from './migrations.js'
import { sqlStateStore } from './sql-state.js'

/** A real Postgres server (trust auth). Each test uses its own schema and drops it. */
const URL = process.env.PROOFLINE_TEST_POSTGRES_URL ?? 'postgres://root@127.0.0.1:5432/test'

const freshSchema = (): string => `t_leader_${randomBytes(6).toString('hex')}`
const delay = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

/** Blocks this thread (timers, I/O, everything) like a long GC pause or a SIGSTOP would. */
function freeze(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms)
}

/** Resolves within `ms` with 'pending' if `p` has not settled yet. */
async function settledWithin<T>(p: Promise<T>, ms: number): Promise<T | 'pending'> {
  return Promise.race([p, delay(ms).then(() => 'pending' as const)])
}

// Everything a test opens, closed (and the schema dropped) after it.
let cleanups: (() => Promise<void>)[] = []
afterEach(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => {})
  cleanups = []
})

/** One "process": its own pool on a shared schema. */
async function open(schema: string, poolSize = 4): Promise<SqlDatabase> {
  const database = await openPostgres(URL, schema, poolSize)
  cleanups.push(() => database.close())
  return database
}

async function freshDatabase(): Promise<{ schema: string; db: SqlDatabase }> {
  const schema = freshSchema()
  const db = await open(schema)
  await migrateState(db)
  cleanups.push(async () => void (await sql`drop schema if exists ${sql.id(schema)} cascade`.execute(db.db)))
  return { schema, db }
}

function elect(database: SqlDatabase, opts: Partial<LeaderElectionOptions> & { holderId: string }): LeaderElection {
  const e = leaderElection(database, opts)
  cleanups.push(() => e.resign())
  return e
}

/** Ends the lease of `name` now, as if its holder had stopped renewing long ago (no row lock is waited for). */
async function expireLease(database: SqlDatabase, name = 'orchestrator'): Promise<void> {
  await sql`update state_leader set expires_at = statement_timestamp() - interval '1 millisecond' where name = ${name}`.execute(database.db)
}

// -- the store's conformance, fenced by a valid leadership ------------------------------------

async function openFenced(): Promise<{ store: StateStore; takeOver: () => Promise<void>; cleanup: () => Promise<void> }> {
  const schema = freshSchema()
  const database = await openPostgres(URL, schema, 4)
  const a = leaderElection(database, { holderId: 'a', leaseMs: 60_000 })
  await a.campaign()
  const store = await sqlStateStore(database, { fence: () => a.fence })
  const b = leaderElection(database, { holderId: 'b', leaseMs: 60_000 })
  return {
    store,
    takeOver: async () => {
      await expireLease(database)
      await b.campaign()
    },
    cleanup: async () => {
      await a.resign()
      await b.resign()
      await store.close()
      await sql`drop schema if exists ${sql.id(schema)} cascade`.execute(database.db)
      await database.close()
    },
  }
}

stateStoreConformance('postgres, fenced by a valid leadership', async () => {
  const { store, cleanup } = await openFenced()
  return { store, cleanup }
})

fencedStateStoreConformance('postgres', openFenced)

// -- the election -------------------------------------------------------------------------------

describe('leader election on postgres', () => {
  it('behavior: of two elections on one schema only one leads; when it resigns the other takes over with a higher epoch', async () => {
    const { schema, db } = await freshDatabase()
    const a = elect(db, { holderId: 'a', leaseMs: 2000, pollEveryMs: 50 })
    const b = elect(await open(schema), { holderId: 'b', leaseMs: 2000, pollEveryMs: 50 })
    const fa = await a.campaign()
    expect(fa).toEqual({ name: 'orchestrator', epoch: 1, holderId: 'a' })
    const bCampaign = b.campaign()
    // b keeps waiting while a renews (well past a's first lease).
    expect(await settledWithin(bCampaign, 2600)).toBe('pending')
    expect(b.state).toBe('campaigning')
    expect(b.fence).toBeUndefined()
    expect(a.state).toBe('leader')
    expect(a.fence).toEqual(fa)
    expect((await readLeader(db))!).toMatchObject({ holder: 'a', epoch: 1, expired: false })

    const resignedAt = Date.now()
    await a.resign()
    expect(a.state).toBe('resigned')
    expect(a.fence).toBeUndefined()
    const fb = await bCampaign
    expect(Date.now() - resignedAt).toBeLessThan(1000) // not a whole lease: resign expired the row
    expect(fb).toEqual({ name: 'orchestrator', epoch: 2, holderId: 'b' })
    expect(b.fence).toEqual(fb)
    expect((await readLeader(db))!).toMatchObject({ holder: 'b', epoch: 2, expired: false })
  })

  it('behavior: a leader that stops renewing loses its lease, the standby takes over, the old fence’s writes are refused and change nothing, and onLost fires once it resumes', async () => {
    const { schema, db } = await freshDatabase()
    const a = elect(db, { holderId: 'a', leaseMs: 600, pollEveryMs: 50 })
    const b = elect(await open(schema), { holderId: 'b', leaseMs: 600, pollEveryMs: 50 })
    const lost: LeaderLost[] = []
    a.onLost((l) => lost.push(l))
    const fa = await a.campaign()
    // Store of the old leader that keeps believing in its fence (as a process that has not looked at its clock yet).
    const stale = await sqlStateStore(db, { fence: () => fa })
    const live = await sqlStateStore(db, { fence: () => a.fence })
    await live.setMeta('k', 'from a')
    const bCampaign = b.campaign()

    freeze(1000) // a cannot renew (nor b campaign) while the thread is stopped
    const fb = await bCampaign
    expect(fb.epoch).toBe(fa.epoch + 1)
    expect(lost).toHaveLength(1)
    expect(lost[0]).toMatchObject({ fence: fa })
    expect(lost[0]!.reason).toMatch(/not renewed within 600 ms/)
    expect(a.state).toBe('lost')
    expect(a.fence).toBeUndefined()

    const err = await stale.setMeta('k', 'late write from a').catch((e: unknown) => e)
    expect(err).toBeInstanceOf(StateError)
    expect(err).toMatchObject({ code: 'STATE_FENCED', retryable: false, details: { epoch: 1, currentEpoch: 2, currentHolder: 'b' } })
    expect((err as Error).message).toMatch(/another orchestrator took over.*held by b at epoch 2, this process has epoch 1/)
    await expect(stale.createJobs([{ id: 'x', stage: 'range', first: 1, last: 1, lastHash: '0x', programId: 'p', maxAttempts: 1, inputs: [], cost: 1, capacity: null, overCapacity: false, parentId: null }])).rejects.toMatchObject({ code: 'STATE_FENCED' })
    await expect(live.setMeta('k', 'late write from a')).rejects.toMatchObject({ code: 'STATE_FENCED' })
    expect(await stale.getMeta('k')).toBe('from a')
    expect(await stale.listJobs()).toEqual([])

    const fromB = await sqlStateStore(db, { fence: () => b.fence })
    await fromB.setMeta('k', 'from b')
    expect(await stale.getMeta('k')).toBe('from b')
    // A callback registered after the loss is still told.
    const late = await new Promise<LeaderLost>((resolve) => a.onLost(resolve))
    expect(late.fence).toEqual(fa)
  })

  it('behavior: a leader whose row was taken over notices at its next renewal and onLost says who holds it', async () => {
    const { db } = await freshDatabase()
    const a = elect(db, { holderId: 'a', leaseMs: 900 })
    const lostP = new Promise<LeaderLost>((resolve) => a.onLost(resolve))
    await a.campaign()
    await sql`update state_leader set holder = 'intruder', epoch = epoch + 1 where name = 'orchestrator'`.execute(db.db)
    const lost = await lostP
    expect(lost.reason).toMatch(/held by intruder at epoch 2, this process has epoch 1/)
    expect(lost.current).toMatchObject({ holder: 'intruder', epoch: 2 })
    expect(a.state).toBe('lost')
  })

  it('behavior: a lost leader may campaign again and gets a new epoch', async () => {
    const { db } = await freshDatabase()
    const a = elect(db, { holderId: 'a', leaseMs: 600, pollEveryMs: 50 })
    await a.campaign()
    freeze(700)
    await delay(10)
    expect(a.state).toBe('lost')
    expect(await a.campaign()).toEqual({ name: 'orchestrator', epoch: 2, holderId: 'a' })
  })

  it('behavior: a campaign is cancelled by its signal and by resign()', async () => {
    const { schema, db } = await freshDatabase()
    const a = elect(db, { holderId: 'a', leaseMs: 5000 })
    await a.campaign()
    const b = elect(await open(schema), { holderId: 'b', leaseMs: 5000, pollEveryMs: 50 })
    const ac = new AbortController()
    const c1 = b.campaign({ signal: ac.signal })
    await delay(100)
    ac.abort(new Error('stop waiting'))
    await expect(c1).rejects.toThrow('stop waiting')
    expect(b.state).toBe('idle')
    const c2 = b.campaign()
    await delay(100)
    await b.resign()
    await expect(c2).rejects.toMatchObject({ code: 'STATE_LEADER_RESIGNED' })
    expect((await readLeader(db))!).toMatchObject({ holder: 'a', epoch: 1 })
  })

  it('behavior: the standby logs once that it waits, naming the leader', async () => {
    const { schema, db } = await freshDatabase()
    const a = elect(db, { holderId: 'a', leaseMs: 1000 })
    await a.campaign()
    const logs: string[] = []
    const log = { info: (_: unknown, m: string) => logs.push(m), warn: (_: unknown, m: string) => logs.push(m), error: (_: unknown, m: string) => logs.push(m) }
    const b = elect(await open(schema), { holderId: 'b', leaseMs: 1000, pollEveryMs: 50, log })
    const c = b.campaign()
    await delay(500)
    expect(logs).toEqual(['standing by: orchestrator is held by a (epoch 1); taking over if its lease expires'])
    await a.resign()
    await c
    expect(logs.at(-1)).toBe('became leader of orchestrator (epoch 2)')
  })

  it('behavior: invalid options are refused', async () => {
    const { db } = await freshDatabase()
    expect(() => leaderElection(db, { holderId: 'a', leaseMs: 100, renewEveryMs: 100 })).toThrow(/renewEveryMs/)
    expect(() => leaderElection(db, { holderId: '' })).toThrow(/holderId/)
  })
})

// -- the lock protocol ----------------------------------------------------------------------------

describe('fencing locks on postgres', () => {
  /** A fenced transaction of `store` held open until the returned `release` is called. */
  function holdTransaction(store: StateStore, write: (tx: StateStore) => Promise<unknown>): { entered: Promise<void>; release: () => void; done: Promise<unknown> } {
    let release: () => void = () => {}
    const gate = new Promise<void>((r) => (release = r))
    let entered: () => void = () => {}
    const enteredP = new Promise<void>((r) => (entered = r))
    const done = store.transaction(async (tx) => {
      await write(tx)
      entered()
      await gate
      await tx.setMeta('after-gate', 'yes')
    })
    done.catch(() => {}) // observed by the test
    return { entered: enteredP, release, done }
  }

  it('behavior: an open fenced transaction blocks a takeover (FOR UPDATE) but not the leader’s renewal (plain UPDATE)', async () => {
    const { schema, db } = await freshDatabase()
    const a = elect(db, { holderId: 'a', leaseMs: 60_000 })
    await a.campaign()
    const store = await sqlStateStore(db, { fence: () => a.fence })
    const held = holdTransaction(store, (tx) => tx.setMeta('k', 'v'))
    await held.entered
    const other = await open(schema, 1)
    // The renewal statement's lock mode passes at once…
    const renewed = await other.db.transaction().execute(async (trx) => {
      await sql`set local lock_timeout = '300ms'`.execute(trx)
      return sql`update state_leader set expires_at = expires_at + interval '1 millisecond', renewed_at = statement_timestamp() where name = 'orchestrator' returning epoch`.execute(trx)
    })
    expect(renewed.rows).toHaveLength(1)
    // …the takeover's waits.
    const takeover = await other.db
      .transaction()
      .execute(async (trx) => {
        await sql`set local lock_timeout = '300ms'`.execute(trx)
        return sql`select epoch from state_leader where name = 'orchestrator' for update`.execute(trx)
      })
      .catch((e: unknown) => e)
    expect(String(takeover)).toMatch(/lock timeout/)
    held.release()
    await held.done
  })

  it('behavior: a takeover waits for the old epoch’s in-flight transaction, which commits first; after it, the old epoch is refused', async () => {
    const { schema, db } = await freshDatabase()
    const a = elect(db, { holderId: 'a', leaseMs: 60_000 })
    await a.campaign()
    const fa = a.fence!
    const store = await sqlStateStore(db, { fence: () => fa })
    const held = holdTransaction(store, (tx) => tx.setMeta('k', 'old epoch'))
    await held.entered
    await expireLease(db)
    const b = elect(await open(schema), { holderId: 'b', leaseMs: 60_000, pollEveryMs: 50 })
    const bCampaign = b.campaign()
    expect(await settledWithin(bCampaign, 800)).toBe('pending')
    const bTook = bCampaign.then(() => Date.now())
    await delay(50)
    const releasedAt = Date.now()
    held.release()
    await held.done
    const doneAt = Date.now()
    expect(await bTook).toBeGreaterThanOrEqual(releasedAt)
    expect(doneAt).toBeGreaterThanOrEqual(releasedAt)
    expect(await store.getMeta('after-gate')).toBe('yes') // committed: before the takeover
    expect((await readLeader(db))!).toMatchObject({ holder: 'b', epoch: 2 })
    await expect(store.setMeta('k', 'too late')).rejects.toMatchObject({ code: 'STATE_FENCED' })
    expect(await store.getMeta('k')).toBe('old epoch')
  })

  it('behavior: a fenced transaction left idle past fenceIdleTimeoutMs is ended by Postgres, the takeover proceeds and the late commit fails', async () => {
    const { schema, db } = await freshDatabase()
    const a = elect(db, { holderId: 'a', leaseMs: 60_000 })
    await a.campaign()
    const fa = a.fence!
    const store = await sqlStateStore(db, { fence: () => fa, fenceIdleTimeoutMs: 400 })
    const held = holdTransaction(store, (tx) => tx.setMeta('k', 'paused'))
    await held.entered
    await expireLease(db)
    const b = elect(await open(schema), { holderId: 'b', leaseMs: 60_000, pollEveryMs: 50 })
    const started = Date.now()
    expect(await b.campaign()).toMatchObject({ epoch: 2 })
    expect(Date.now() - started).toBeLessThan(3000)
    held.release()
    await expect(held.done).rejects.toBeInstanceOf(StateError)
    expect(await store.getMeta('k')).toBeUndefined()
    expect(await store.getMeta('after-gate')).toBeUndefined()
  })

  it('behavior: a store whose fence is undefined (not leader) refuses writes, and reads work', async () => {
    const { db } = await freshDatabase()
    let fence: Fence | undefined
    const store = await sqlStateStore(db, { fence: () => fence })
    await expect(store.setMeta('k', 'v')).rejects.toMatchObject({ code: 'STATE_FENCED', retryable: false })
    await expect(store.transaction(async () => 1)).rejects.toMatchObject({ code: 'STATE_FENCED' })
    expect(await store.getMeta('k')).toBeUndefined()
    const a = elect(db, { holderId: 'a', leaseMs: 60_000 })
    fence = await a.campaign()
    await store.setMeta('k', 'v')
    expect(await store.getMeta('k')).toBe('v')
  })
})
