/**
 * The state store on Postgres (a server, or the embedded cluster), written with Kysely: the
 * same SQL for both. Tables are described in ./migrations.ts and docs/state.md.
 */
import { type ColumnType, type Generated, type Insertable, type Kysely, type Selectable, type Updateable, sql } from 'kysely'
import pg from 'pg'
import type { FailureClass } from '../../core/errors.js'
import { ProoflineError, StateError, errorMessage } from '../../core/errors.js'
import type { Attempt, JobInput, JobState, StageResult } from '../../core/types.js'
import type {
  BlockRecord,
  CollectorItem,
  JobCounts,
  JobFilter,
  JobPatch,
  NewJob,
  PipelineEvent,
  StateStore,
  StoredJob,
} from '../types.js'
import { type SqlDatabaseOptions, type SqlDatabase, openSqlDatabase } from './database.js'
import { type Fence, assertFence } from './leader.js'
import { migrateState } from './migrations.js'
import { GroupCommit } from '../../core/group-commit.js'

/** Options of {@link sqlStateStore}. */
export interface SqlStateStoreOptions {
  /** Clock for `createdAt`/`updatedAt` and similar stamps (ms since epoch). @default Date.now */
  now?: () => number
  /**
   * Whether `close()` closes `database`. Off by default because the database is usually shared
   * with the local bus; whoever opened it closes it.
   * @default false
   */
  closeDatabase?: boolean
  /**
   * The leader's fence, read before every write (pass `() => election.fence`, see ./leader.ts).
   * When given, every write method and every `transaction` first checks, in the same
   * transaction and holding a lock on the leader row until it ends, that this fence is still
   * the current unexpired leadership; otherwise it throws `STATE_FENCED` (not retryable) and
   * writes nothing. A single-statement write becomes a transaction (check + write). Reads are
   * not fenced. When the function returns undefined, writes are refused.
   */
  fence?: () => Fence | undefined
  /**
   * With `fence`: Postgres ends the session of a fenced transaction left idle this long (its
   * process paused while holding the leader-row lock), so a takeover waits at most this long
   * for it. Use the election's `leaseMs`.
   * @default 15000
   */
  fenceIdleTimeoutMs?: number
}

/**
 * A {@link StateStore} on `database` (its schema), after bringing the state tables up to date.
 * Several stores may open the same schema at once (migrations are serialised).
 */
export async function sqlStateStore(database: SqlDatabase, opts: SqlStateStoreOptions = {}): Promise<StateStore> {
  try {
    await migrateState(database)
  } catch (err) {
    throw toStateError(err, 'migrate')
  }
  const ctx: Ctx = {
    now: opts.now ?? Date.now,
    ...(opts.fence ? { fence: { current: opts.fence, idleTimeoutMs: opts.fenceIdleTimeoutMs ?? 15_000 } } : {}),
  }
  return new SqlStateStore(database.db as Kysely<Tables>, ctx, undefined, async () => {
    if (opts.closeDatabase) await database.close()
  })
}

/**
 * Opens the database `opts` describes (starting or reusing the embedded cluster) and a state
 * store on it that owns the database: `close()` closes it (and stops an embedded server no
 * other open uses).
 */
export async function sqlState(opts: SqlDatabaseOptions & Omit<SqlStateStoreOptions, 'closeDatabase'>): Promise<StateStore> {
  const database = await openSqlDatabase(opts)
  try {
    return await sqlStateStore(database, {
      ...(opts.now ? { now: opts.now } : {}),
      ...(opts.fence ? { fence: opts.fence } : {}),
      ...(opts.fenceIdleTimeoutMs === undefined ? {} : { fenceIdleTimeoutMs: opts.fenceIdleTimeoutMs }),
      closeDatabase: true,
    })
  } catch (err) {
    await database.close()
    throw err
  }
}

// -- tables ------------------------------------------------------------------------------------

/** pg returns int8 as a string; inserts take numbers. */
type Int8 = ColumnType<string | number, number, number>
type Int8Null = ColumnType<string | number | null, number | null, number | null>
/** jsonb columns are written as JSON text (pg would turn a JS array into a Postgres array) and read parsed. */
type Json = ColumnType<unknown, string, string>
type JsonNull = ColumnType<unknown, string | null, string | null>

interface JobsTable {
  id: string
  stage: string
  first: Int8
  last: Int8
  last_hash: string
  program_id: string
  state: JobState
  attempt: number
  max_attempts: number
  inputs: Json
  cost: Int8
  capacity: Int8Null
  over_capacity: boolean
  parent_id: string | null
  result: JsonNull
  failure_class: FailureClass | null
  last_error: string | null
  lease_expires_at: Int8Null
  heartbeat_at: Int8Null
  not_before: Int8Null
  dispatched_attempt: number
  result_published: boolean
  created_at: Int8
  updated_at: Int8
}

interface CollectorItemsTable {
  collector: string
  id: string
  start_key: Int8
  end_key: Int8
  cost: Int8
  data: Json
  received_at: Int8
  job_id: string | null
  consumed_at: Int8Null
}

interface AttemptsTable {
  job_id: string
  attempt: number
  worker_id: string | null
  started_at: Int8Null
  ended_at: Int8Null
  /** Defaults to 'running' when an attempt is first stored without one. */
  outcome: ColumnType<Attempt['outcome'], Attempt['outcome'] | undefined, Attempt['outcome']>
  failure_class: FailureClass | null
  error: string | null
  stderr_tail: string | null
  duration_ms: Int8Null
  updated_at: Int8
}

interface BlocksTable {
  number: Int8
  hash: string
  parent_hash: string
  gas_used: Int8
  cost: Int8
  seen_at: Int8
}

interface EventsTable {
  id: Generated<string>
  at: Int8
  kind: PipelineEvent['kind']
  job_id: string | null
  message: string
  details: Json
}

interface KeyValueTable {
  value: string
  updated_at: Int8
}

interface Tables {
  state_jobs: JobsTable
  state_collector_items: CollectorItemsTable
  state_attempts: AttemptsTable
  state_blocks: BlocksTable
  state_events: EventsTable
  state_cursors: KeyValueTable & { name: string }
  state_meta: KeyValueTable & { key: string }
}

interface Ctx {
  now: () => number
  /** Set when writes are fenced. */
  fence?: { current: () => Fence | undefined; idleTimeoutMs: number }
}

/** Rows per INSERT: well under Postgres's 65535 bind parameters for the widest table. */
const CHUNK = 500

// -- the store ---------------------------------------------------------------------------------

/** One caller's `markDispatched`, waiting for the group commit that writes it. */
interface MarkItem {
  jobs: { id: string; attempt: number }[]
  resolve(jobs: StoredJob[]): void
  reject(err: unknown): void
}

class SqlStateStore implements StateStore {
  #finished = false
  /**
   * Concurrent `markDispatched` calls outside a transaction (a dispatcher publishing many jobs
   * one by one) are written together: one statement, one commit, for all of them.
   */
  #marks: GroupCommit<MarkItem> | undefined

  constructor(
    private readonly db: Kysely<Tables>,
    private readonly ctx: Ctx,
    /** Set when this store is bound to a transaction. */
    private readonly tx: { active: boolean } | undefined,
    private readonly onClose: () => Promise<void>,
  ) {}

  async transaction<T>(fn: (tx: StateStore) => Promise<T>): Promise<T> {
    this.assertOpen()
    if (this.tx) return fn(this)
    const thrown: { error?: unknown } = {}
    try {
      return await this.db.transaction().execute(async (trx) => {
        // Checked once, first: the lock it takes on the leader row lasts until this transaction ends.
        await this.checkFence(trx)
        const state = { active: true }
        const store = new SqlStateStore(trx, this.ctx, state, () => {
          throw new StateError('STATE_MISUSE', 'close() called on a transaction-bound store', { retryable: false })
        })
        try {
          return await fn(store)
        } catch (err) {
          thrown.error = err
          throw err
        } finally {
          state.active = false
        }
      })
    } catch (err) {
      // The callback's own error goes back unchanged (after the rollback); BEGIN/COMMIT failures are wrapped.
      if ('error' in thrown && err === thrown.error) throw err
      throw toStateError(err, 'transaction')
    }
  }

  // -- collectors ----------------------------------------------------------------------------

  addCollectorItems(collector: string, items: CollectorItem[]): Promise<string[]> {
    return this.op('addCollectorItems', async () => {
      const unique = dedupe(items, (i) => i.id, 'first')
      if (unique.length === 0) return []
      const rows: Insertable<CollectorItemsTable>[] = unique.map((i) => ({
        collector,
        id: i.id,
        start_key: int(i.start, 'start'),
        end_key: int(i.end, 'end'),
        cost: int(i.cost, 'cost'),
        data: json(i.data),
        received_at: int(i.receivedAt, 'receivedAt'),
        job_id: null,
        consumed_at: null,
      }))
      return this.write(async (db) => {
        const added: string[] = []
        for (const part of chunks(rows)) {
          const r = await db
            .insertInto('state_collector_items')
            .values(part)
            .onConflict((oc) => oc.columns(['collector', 'id']).doNothing())
            .returning('id')
            .execute()
          for (const row of r) added.push(row.id)
        }
        return added
      })
    })
  }

  listOpenCollectorItems(collector: string): Promise<CollectorItem[]> {
    return this.op('listOpenCollectorItems', async () => {
      const rows = await this.db
        .selectFrom('state_collector_items')
        .selectAll()
        .where('collector', '=', collector)
        .where('job_id', 'is', null)
        .orderBy('start_key')
        .orderBy('id')
        .execute()
      return rows.map((r) => ({
        id: r.id,
        start: num(r.start_key),
        end: num(r.end_key),
        cost: num(r.cost),
        data: r.data,
        receivedAt: num(r.received_at),
      }))
    })
  }

  consumeCollectorItems(collector: string, itemIds: string[], jobId: string): Promise<void> {
    return this.op('consumeCollectorItems', async () => {
      const ids = [...new Set(itemIds)]
      if (ids.length === 0) return
      const now = this.ctx.now()
      await this.write(async (db) => {
        let marked = 0
        for (const part of chunks(ids)) {
          const r = await db
            .updateTable('state_collector_items')
            .set({ job_id: jobId, consumed_at: now })
            .where('collector', '=', collector)
            .where('id', 'in', part)
            // Consuming again for the same job is a no-op; items another job took are not stolen.
            .where((eb) => eb.or([eb('job_id', 'is', null), eb('job_id', '=', jobId)]))
            .returning('id')
            .execute()
          marked += r.length
        }
        if (marked !== ids.length) {
          throw new StateError(
            'STATE_CONFLICT',
            `collector ${collector}: ${ids.length - marked} of ${ids.length} items are unknown or consumed by another job; nothing was consumed for ${jobId}`,
            { retryable: false, details: { collector, jobId } },
          )
        }
      })
    })
  }

  getCursor(name: string): Promise<string | undefined> {
    return this.op('getCursor', async () => {
      const r = await this.db.selectFrom('state_cursors').select('value').where('name', '=', name).executeTakeFirst()
      return r?.value
    })
  }

  setCursor(name: string, value: string): Promise<void> {
    return this.op('setCursor', async () => {
      const now = this.ctx.now()
      await this.write(
        (db) =>
          db
            .insertInto('state_cursors')
            .values({ name, value, updated_at: now })
            .onConflict((oc) => oc.column('name').doUpdateSet({ value, updated_at: now }))
            .execute(),
        false,
      )
    })
  }

  // -- jobs ----------------------------------------------------------------------------------

  createJobs(jobs: NewJob[]): Promise<string[]> {
    return this.op('createJobs', async () => {
      const unique = dedupe(jobs, (j) => j.id, 'first')
      if (unique.length === 0) return []
      const now = this.ctx.now()
      const rows: Insertable<JobsTable>[] = unique.map((j) => ({
        id: j.id,
        stage: j.stage,
        first: int(j.first, 'first'),
        last: int(j.last, 'last'),
        last_hash: j.lastHash,
        program_id: j.programId,
        state: 'pending',
        attempt: 1,
        max_attempts: j.maxAttempts,
        inputs: json(j.inputs),
        cost: int(j.cost, 'cost'),
        capacity: intOrNull(j.capacity, 'capacity'),
        over_capacity: j.overCapacity,
        parent_id: j.parentId,
        result: null,
        failure_class: null,
        last_error: null,
        lease_expires_at: null,
        heartbeat_at: null,
        not_before: intOrNull(j.notBefore ?? null, 'notBefore'),
        dispatched_attempt: 0,
        result_published: false,
        created_at: now,
        updated_at: now,
      }))
      // One statement (up to CHUNK jobs) is atomic on its own: no BEGIN/COMMIT round trips then.
      const created = await this.write(async (db) => {
        const ids = new Set<string>()
        for (const part of chunks(rows)) {
          const r = await db.insertInto('state_jobs').values(part).onConflict((oc) => oc.column('id').doNothing()).returning('id').execute()
          for (const row of r) ids.add(row.id)
        }
        return ids
      }, rows.length > CHUNK)
      return unique.filter((j) => created.has(j.id)).map((j) => j.id)
    })
  }

  getJob(id: string): Promise<StoredJob | undefined> {
    return this.op('getJob', async () => {
      const r = await this.db.selectFrom('state_jobs').selectAll().where('id', '=', id).executeTakeFirst()
      return r && toJob(r)
    })
  }

  listJobs(filter: JobFilter = {}): Promise<StoredJob[]> {
    return this.op('listJobs', async () => {
      if (filter.states && filter.states.length === 0) return []
      let q = this.db.selectFrom('state_jobs').selectAll()
      if (filter.stage !== undefined) q = q.where('stage', '=', filter.stage)
      if (filter.states) q = q.where('state', 'in', filter.states)
      if (filter.undispatched) q = q.whereRef('dispatched_attempt', '<', 'attempt')
      if (filter.unpublishedResults) q = q.where('state', '=', 'succeeded').where('result_published', '=', false)
      if (filter.coversBlock !== undefined) {
        const n = int(filter.coversBlock, 'coversBlock')
        q = q.where('first', '<=', n).where('last', '>=', n)
      }
      if (filter.lastAtLeast !== undefined) q = q.where('last', '>=', int(filter.lastAtLeast, 'lastAtLeast'))
      q =
        filter.order === 'recent'
          ? q.orderBy('updated_at', 'desc').orderBy('id', 'desc')
          : q.orderBy('first', 'asc').orderBy('last', 'asc').orderBy('id', 'asc')
      if (filter.limit !== undefined) q = q.limit(Math.max(0, Math.floor(filter.limit)))
      if (filter.omitInputs) return (await q.clearSelect().select(JOB_COLUMNS_WITHOUT_INPUTS).select(sql<unknown>`'[]'::jsonb`.as('inputs')).execute()).map(toJob)
      return (await q.execute()).map(toJob)
    })
  }

  countJobs(): Promise<JobCounts> {
    return this.op('countJobs', async () => {
      const rows = await this.db
        .selectFrom('state_jobs')
        .select(['stage', 'state', (eb) => eb.fn.countAll<string>().as('n')])
        .groupBy(['stage', 'state'])
        .execute()
      const counts: JobCounts = {}
      for (const r of rows) (counts[r.stage] ??= {})[r.state] = num(r.n)
      return counts
    })
  }

  updateJob(id: string, expect: { states: JobState[]; attempt?: number }, patch: JobPatch): Promise<StoredJob | undefined> {
    return this.op('updateJob', async () => {
      if (expect.states.length === 0) return undefined
      const set: Updateable<JobsTable> = { updated_at: this.ctx.now() }
      if (patch.state !== undefined) set.state = patch.state
      if (patch.attempt !== undefined) set.attempt = patch.attempt
      if (patch.result !== undefined) set.result = patch.result === null ? null : json(patch.result)
      if (patch.failureClass !== undefined) set.failure_class = patch.failureClass
      if (patch.lastError !== undefined) set.last_error = patch.lastError
      if (patch.leaseExpiresAt !== undefined) set.lease_expires_at = intOrNull(patch.leaseExpiresAt, 'leaseExpiresAt')
      if (patch.heartbeatAt !== undefined) set.heartbeat_at = intOrNull(patch.heartbeatAt, 'heartbeatAt')
      if (patch.notBefore !== undefined) set.not_before = intOrNull(patch.notBefore, 'notBefore')
      if (patch.dispatchedAttempt !== undefined) set.dispatched_attempt = patch.dispatchedAttempt
      if (patch.resultPublished !== undefined) set.result_published = patch.resultPublished
      if (patch.maxAttempts !== undefined) set.max_attempts = patch.maxAttempts
      if (patch.inputs !== undefined) set.inputs = json(patch.inputs)
      const r = await this.write((db) => {
        let q = db.updateTable('state_jobs').set(set).where('id', '=', id).where('state', 'in', expect.states)
        if (expect.attempt !== undefined) q = q.where('attempt', '=', expect.attempt)
        return q.returningAll().executeTakeFirst()
      }, false)
      return r && toJob(r)
    })
  }

  markDispatched(jobs: { id: string; attempt: number }[]): Promise<StoredJob[]> {
    if (this.tx || jobs.length === 0) return this.markDispatchedNow(jobs)
    this.assertOpen()
    this.#marks ??= new GroupCommit<MarkItem>(async (items) => {
      // A job marked twice in one batch (two attempts) goes in separate statements, so each CAS is tried.
      const rounds: MarkItem[][] = []
      const seen: Set<string>[] = []
      for (const item of items) {
        let r = seen.findIndex((ids) => item.jobs.every((j) => !ids.has(j.id)))
        if (r < 0) {
          r = rounds.length
          rounds.push([])
          seen.push(new Set())
        }
        rounds[r]!.push(item)
        for (const j of item.jobs) seen[r]!.add(j.id)
      }
      for (const round of rounds) {
        const updated = await this.markDispatchedNow(round.flatMap((i) => i.jobs))
        const byId = new Map(updated.map((j) => [j.id, j]))
        for (const item of round) {
          item.resolve(item.jobs.flatMap((j) => {
            const u = byId.get(j.id)
            return u && u.dispatchedAttempt === j.attempt ? [u] : []
          }))
        }
      }
    }, 2_000)
    const marks = this.#marks
    return new Promise((resolve, reject) => marks.add({ jobs, resolve, reject }))
  }

  private markDispatchedNow(jobs: { id: string; attempt: number }[]): Promise<StoredJob[]> {
    return this.op('markDispatched', async () => {
      const unique = dedupe(jobs, (j) => j.id, 'last')
      if (unique.length === 0) return []
      const now = this.ctx.now()
      const rows = await this.write(async (db) => {
        const out: Selectable<JobsTable>[] = []
        for (const part of chunks(unique)) {
          const values = sql.join(part.map((j) => sql`(${j.id}::text, ${int(j.attempt, 'attempt')}::int)`))
          const r = await sql<Selectable<JobsTable>>`
            update state_jobs as j set dispatched_attempt = v.attempt, updated_at = ${now}::bigint
            from (values ${values}) as v(id, attempt)
            where j.id = v.id and j.attempt = v.attempt and j.state in ('pending', 'retrying')
            returning ${sql.join(JOB_COLUMNS_WITHOUT_INPUTS.map((c) => sql.ref(`j.${c}`)))}, '[]'::jsonb as inputs`.execute(db)
          out.push(...r.rows)
        }
        return out
      }, false)
      return rows.map(toJob)
    })
  }

  // -- attempts ------------------------------------------------------------------------------

  upsertAttempt(attempt: Partial<Attempt> & Pick<Attempt, 'jobId' | 'attempt'>): Promise<void> {
    return this.op('upsertAttempt', async () => {
      const fields: Partial<Insertable<AttemptsTable>> = {}
      if (attempt.workerId !== undefined) fields.worker_id = attempt.workerId
      if (attempt.startedAt !== undefined) fields.started_at = intOrNull(attempt.startedAt, 'startedAt')
      if (attempt.endedAt !== undefined) fields.ended_at = intOrNull(attempt.endedAt, 'endedAt')
      if (attempt.outcome !== undefined) fields.outcome = attempt.outcome
      if (attempt.failureClass !== undefined) fields.failure_class = attempt.failureClass
      if (attempt.error !== undefined) fields.error = attempt.error
      if (attempt.stderrTail !== undefined) fields.stderr_tail = attempt.stderrTail
      if (attempt.durationMs !== undefined) fields.duration_ms = intOrNull(attempt.durationMs, 'durationMs')
      const now = this.ctx.now()
      await this.write(
        (db) =>
          db
            .insertInto('state_attempts')
            .values({ ...fields, job_id: attempt.jobId, attempt: attempt.attempt, updated_at: now })
            .onConflict((oc) => oc.columns(['job_id', 'attempt']).doUpdateSet({ ...fields, updated_at: now }))
            .execute(),
        false,
      )
    })
  }

  listAttempts(jobId: string): Promise<Attempt[]> {
    return this.op('listAttempts', async () => {
      const rows = await this.db.selectFrom('state_attempts').selectAll().where('job_id', '=', jobId).orderBy('attempt').execute()
      return rows.map(toAttempt)
    })
  }

  // -- blocks, events, meta ----------------------------------------------------------------------

  recordBlocks(blocks: BlockRecord[]): Promise<void> {
    return this.op('recordBlocks', async () => {
      // ON CONFLICT DO UPDATE cannot touch a row twice in one statement: keep the last of each number.
      const unique = dedupe(blocks, (b) => b.number, 'last')
      if (unique.length === 0) return
      const rows: Insertable<BlocksTable>[] = unique.map((b) => ({
        number: int(b.number, 'number'),
        hash: b.hash,
        parent_hash: b.parentHash,
        gas_used: int(b.gasUsed, 'gasUsed'),
        cost: int(b.cost, 'cost'),
        seen_at: int(b.seenAt, 'seenAt'),
      }))
      await this.write(async (db) => {
        for (const part of chunks(rows)) {
          await db
            .insertInto('state_blocks')
            .values(part)
            .onConflict((oc) =>
              oc
                .column('number')
                .doUpdateSet((eb) => ({
                  hash: eb.ref('excluded.hash'),
                  parent_hash: eb.ref('excluded.parent_hash'),
                  gas_used: eb.ref('excluded.gas_used'),
                  cost: eb.ref('excluded.cost'),
                  seen_at: eb.ref('excluded.seen_at'),
                }))
                // The same block seen again keeps its row (and first-seen time); a new hash is a reorg.
                .whereRef('state_blocks.hash', '<>', 'excluded.hash'),
            )
            .execute()
        }
      })
    })
  }

  latestBlock(): Promise<number | undefined> {
    return this.op('latestBlock', async () => {
      // ORDER BY … LIMIT 1 walks the primary key from its end; no scan of the rows.
      const r = await this.db.selectFrom('state_blocks').select('number').orderBy('number', 'desc').limit(1).executeTakeFirst()
      return r === undefined ? undefined : num(r.number)
    })
  }

  blockStats(): Promise<{ count: number; min: number; max: number } | undefined> {
    return this.op('blockStats', async () => {
      const r = await this.db
        .selectFrom('state_blocks')
        .select((eb) => [eb.fn.countAll<string>().as('count'), eb.fn.min('number').as('min'), eb.fn.max('number').as('max')])
        .executeTakeFirstOrThrow()
      const count = num(r.count)
      if (count === 0 || r.min === null || r.max === null) return undefined
      return { count, min: num(r.min), max: num(r.max) }
    })
  }

  listBlocks(range: { from: number; to: number; limit?: number }): Promise<BlockRecord[]> {
    return this.op('listBlocks', async () => {
      let q = this.db
        .selectFrom('state_blocks')
        .selectAll()
        .where('number', '>=', int(range.from, 'from'))
        .where('number', '<=', int(range.to, 'to'))
        .orderBy('number', 'asc')
      if (range.limit !== undefined) q = q.limit(Math.max(0, Math.floor(range.limit)))
      return (await q.execute()).map((r) => ({
        number: num(r.number),
        hash: r.hash,
        parentHash: r.parent_hash,
        gasUsed: num(r.gas_used),
        cost: num(r.cost),
        seenAt: num(r.seen_at),
      }))
    })
  }

  recordEvent(event: PipelineEvent): Promise<void> {
    return this.op('recordEvent', async () => {
      const row = { at: int(event.at, 'at'), kind: event.kind, job_id: event.jobId, message: event.message, details: json(event.details) }
      await this.write((db) => db.insertInto('state_events').values(row).execute(), false)
    })
  }

  listEvents(opts: { kind?: PipelineEvent['kind']; jobId?: string; limit?: number } = {}): Promise<PipelineEvent[]> {
    return this.op('listEvents', async () => {
      let q = this.db.selectFrom('state_events').selectAll()
      if (opts.kind !== undefined) q = q.where('kind', '=', opts.kind)
      if (opts.jobId !== undefined) q = q.where('job_id', '=', opts.jobId)
      q = q.orderBy('at', 'desc').orderBy('id', 'desc')
      if (opts.limit !== undefined) q = q.limit(Math.max(0, Math.floor(opts.limit)))
      const rows = await q.execute()
      return rows.map((r) => ({
        at: num(r.at),
        kind: r.kind,
        jobId: r.job_id,
        message: r.message,
        details: (r.details ?? {}) as Record<string, unknown>,
      }))
    })
  }

  getMeta(key: string): Promise<string | undefined> {
    return this.op('getMeta', async () => {
      const r = await this.db.selectFrom('state_meta').select('value').where('key', '=', key).executeTakeFirst()
      return r?.value
    })
  }

  setMeta(key: string, value: string): Promise<void> {
    return this.op('setMeta', async () => {
      const now = this.ctx.now()
      await this.write(
        (db) =>
          db
            .insertInto('state_meta')
            .values({ key, value, updated_at: now })
            .onConflict((oc) => oc.column('key').doUpdateSet({ value, updated_at: now }))
            .execute(),
        false,
      )
    })
  }

  async close(): Promise<void> {
    if (this.#finished) return
    await this.onClose()
    this.#finished = true
  }

  // -- helpers -------------------------------------------------------------------------------

  private assertOpen(): void {
    if (this.tx && !this.tx.active) {
      throw new StateError('STATE_TX_FINISHED', 'this store was bound to a transaction that has ended; use the outer store', { retryable: false })
    }
    if (this.#finished) throw new StateError('STATE_CLOSED', 'the state store is closed', { retryable: false })
  }

  /** Runs one port method: checks the store is usable and turns driver errors into StateErrors. */
  private async op<T>(name: string, fn: () => Promise<T>): Promise<T> {
    this.assertOpen()
    try {
      return await fn()
    } catch (err) {
      throw toStateError(err, name)
    }
  }

  /**
   * Runs the statements of one write method. Bound to a transaction: in it (the fence was
   * checked when it began). Otherwise in a new transaction that first checks the fence when
   * writes are fenced, or when the write has several statements (`atomic`); else directly.
   */
  private async write<T>(fn: (db: Kysely<Tables>) => Promise<T>, atomic = true): Promise<T> {
    if (this.tx) return fn(this.db)
    if (this.ctx.fence) {
      return this.db.transaction().execute(async (trx) => {
        await this.checkFence(trx)
        return fn(trx)
      })
    }
    return atomic ? this.db.transaction().execute(fn) : fn(this.db)
  }

  private async checkFence(trx: Kysely<Tables>): Promise<void> {
    const fence = this.ctx.fence
    if (fence) await assertFence(trx, fence.current(), { idleTimeoutMs: fence.idleTimeoutMs })
  }
}

// -- conversions -------------------------------------------------------------------------------

/** Every column of state_jobs but `inputs` (the bulk of a job row: its blocks or proofs). */
const JOB_COLUMNS_WITHOUT_INPUTS = [
  'id', 'stage', 'first', 'last', 'last_hash', 'program_id', 'state', 'attempt', 'max_attempts', 'cost', 'capacity', 'over_capacity', 'parent_id',
  'result', 'failure_class', 'last_error', 'lease_expires_at', 'heartbeat_at', 'not_before', 'dispatched_attempt', 'result_published', 'created_at', 'updated_at',
] as const satisfies readonly Exclude<keyof JobsTable, 'inputs'>[]

function toJob(r: Selectable<JobsTable>): StoredJob {
  return {
    id: r.id,
    stage: r.stage,
    first: num(r.first),
    last: num(r.last),
    lastHash: r.last_hash,
    programId: r.program_id,
    state: r.state,
    attempt: r.attempt,
    maxAttempts: r.max_attempts,
    inputs: r.inputs as JobInput[],
    cost: num(r.cost),
    capacity: numOrNull(r.capacity),
    overCapacity: r.over_capacity,
    parentId: r.parent_id,
    result: (r.result ?? null) as StageResult | null,
    failureClass: r.failure_class,
    lastError: r.last_error,
    leaseExpiresAt: numOrNull(r.lease_expires_at),
    heartbeatAt: numOrNull(r.heartbeat_at),
    notBefore: numOrNull(r.not_before),
    createdAt: num(r.created_at),
    updatedAt: num(r.updated_at),
    dispatchedAttempt: r.dispatched_attempt,
    resultPublished: r.result_published,
  }
}

function toAttempt(r: Selectable<AttemptsTable>): Attempt {
  return {
    jobId: r.job_id,
    attempt: r.attempt,
    workerId: r.worker_id,
    startedAt: numOrNull(r.started_at),
    endedAt: numOrNull(r.ended_at),
    outcome: r.outcome,
    failureClass: r.failure_class,
    error: r.error,
    stderrTail: r.stderr_tail,
    durationMs: numOrNull(r.duration_ms),
  }
}

/** An int8 read back (pg gives a string) as a JS number. */
function num(v: string | number): number {
  const n = typeof v === 'number' ? v : Number(v)
  if (!Number.isSafeInteger(n)) throw new StateError('STATE_INVALID_VALUE', `stored integer ${v} is not a safe JS integer`, { retryable: false })
  return n
}

function numOrNull(v: string | number | null): number | null {
  return v === null ? null : num(v)
}

/** A number about to go into a bigint column: must be a safe integer, or Postgres would reject or round it. */
function int(v: number, field: string): number {
  if (!Number.isSafeInteger(v)) {
    throw new StateError('STATE_INVALID_VALUE', `${field} must be a safe integer, got ${String(v)}`, { retryable: false, details: { field, value: String(v) } })
  }
  return v
}

function intOrNull(v: number | null, field: string): number | null {
  return v === null ? null : int(v, field)
}

/** JSON text for a jsonb column; `undefined` (not JSON) is stored as null. */
function json(v: unknown): string {
  return JSON.stringify(v) ?? 'null'
}

function dedupe<T, K>(items: readonly T[], key: (t: T) => K, keep: 'first' | 'last'): T[] {
  const m = new Map<K, T>()
  for (const it of items) {
    const k = key(it)
    if (keep === 'last' || !m.has(k)) m.set(k, it)
  }
  return [...m.values()]
}

function* chunks<T>(items: readonly T[]): Generator<T[]> {
  for (let i = 0; i < items.length; i += CHUNK) yield items.slice(i, i + CHUNK)
}

/** SQLSTATE classes worth retrying: connection, resources, operator intervention, serialization, system I/O. */
const RETRYABLE_SQLSTATE = /^(08|53|57|40|58)/

/** Wraps a driver error into a StateError saying whether a retry can help; ours pass through. */
function toStateError(err: unknown, op: string): ProoflineError {
  if (err instanceof ProoflineError) return err
  const code = typeof err === 'object' && err !== null && 'code' in err ? String((err as { code: unknown }).code) : undefined
  // Not a server error (socket error, timeout, dropped connection): infrastructure, retry.
  const retryable = err instanceof pg.DatabaseError ? RETRYABLE_SQLSTATE.test(code ?? '') : true
  return new StateError(retryable ? 'STATE_UNAVAILABLE' : 'STATE_QUERY_FAILED', `state store ${op} failed: ${errorMessage(err)}`, {
    retryable,
    cause: err,
    details: { op, ...(code === undefined ? {} : { code }) },
  })
}
