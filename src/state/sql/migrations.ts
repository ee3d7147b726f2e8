/**
 * Versioned migrations of the state tables. They run in one transaction under a Postgres
 * advisory lock, so several processes opening the same schema at once migrate it once; the
 * applied versions are kept per schema in `state_migrations` (the local bus keeps its own in
 * `bus_migrations`, so the two evolve separately).
 */
import { type Kysely, sql } from 'kysely'
import { StateError } from '../../core/errors.js'
import type { SqlDatabase } from './database.js'
import { advisoryKey } from './embedded-postgres.js'

/** One schema change. Never edit a released migration: add a new version. */
export interface Migration {
  /** 1, 2, 3… in order, no gaps. */
  readonly version: number
  /** A short name, kept in the migrations table and checked on every run. */
  readonly name: string
  /** Applies the change inside the migration transaction (unqualified names: `search_path` is the schema). */
  up(db: Kysely<any>): Promise<void>
}

/** Options of {@link runMigrations}. */
export interface RunMigrationsOptions {
  /** Table keeping the applied versions, in the database's schema. */
  table: string
  migrations: readonly Migration[]
}

/** What {@link runMigrations} did. */
export interface MigrationsResult {
  /** Versions applied by this call (empty when the schema was up to date). */
  applied: number[]
  /** The schema's version afterwards. */
  version: number
}

const TABLE_RE = /^[a-z_][a-z0-9_]{0,62}$/

/**
 * Applies the migrations missing from `opts.table`, all in one transaction holding a
 * transaction-level advisory lock keyed on (schema, table): concurrent callers wait, then find
 * nothing left to do. Refuses a schema migrated by a newer proofline (unknown versions) or
 * whose recorded names differ from this code's.
 */
export async function runMigrations(database: SqlDatabase, opts: RunMigrationsOptions): Promise<MigrationsResult> {
  if (!TABLE_RE.test(opts.table)) throw new StateError('STATE_MIGRATION_INVALID', `bad migrations table name ${opts.table}`, { retryable: false })
  opts.migrations.forEach((m, i) => {
    if (m.version !== i + 1) {
      throw new StateError('STATE_MIGRATION_INVALID', `migration ${m.name} has version ${m.version}, expected ${i + 1}`, { retryable: false })
    }
  })
  const table = sql.table(opts.table)
  return database.db.transaction().execute(async (trx) => {
    await sql`select pg_advisory_xact_lock(${advisoryKey(`proofline:migrate:${database.schema}.${opts.table}`)}::bigint)`.execute(trx)
    await sql`create table if not exists ${table} (
      version integer primary key,
      name text not null,
      applied_at bigint not null
    )`.execute(trx)
    const rows = await sql<{ version: number; name: string }>`select version, name from ${table} order by version`.execute(trx)
    const known = new Map(opts.migrations.map((m) => [m.version, m]))
    for (const row of rows.rows) {
      const m = known.get(row.version)
      if (!m) {
        throw new StateError(
          'STATE_SCHEMA_TOO_NEW',
          `schema ${database.schema} is at version ${row.version} of ${opts.table}, newer than this proofline knows (${opts.migrations.length}). Upgrade proofline or use another schema.`,
          { retryable: false, details: { schema: database.schema, table: opts.table, version: row.version } },
        )
      }
      if (m.name !== row.name) {
        throw new StateError(
          'STATE_SCHEMA_MISMATCH',
          `schema ${database.schema}: ${opts.table} version ${row.version} is ${JSON.stringify(row.name)} but this proofline calls it ${JSON.stringify(m.name)}.`,
          { retryable: false, details: { schema: database.schema, table: opts.table, version: row.version } },
        )
      }
    }
    const done = new Set(rows.rows.map((r) => r.version))
    const applied: number[] = []
    for (const m of opts.migrations) {
      if (done.has(m.version)) continue
      await m.up(trx)
      await sql`insert into ${table} (version, name, applied_at) values (${m.version}, ${m.name}, ${Date.now()})`.execute(trx)
      applied.push(m.version)
    }
    return { applied, version: opts.migrations.length }
  })
}

/** The state store's table of applied migrations. */
export const STATE_MIGRATIONS_TABLE = 'state_migrations'

/**
 * The state tables. Numbers that are block numbers, costs or times (ms since epoch) are
 * `bigint`; the store converts them to JS numbers (they are safe integers).
 */
export const stateMigrations: readonly Migration[] = [
  {
    version: 1,
    name: 'state tables',
    async up(db) {
      const statements = [
        `create table state_jobs (
          id text primary key,
          stage text not null,
          first bigint not null,
          last bigint not null,
          last_hash text not null,
          program_id text not null,
          state text not null check (state in ('pending','running','succeeded','failed','retrying','dead','split','cancelled','invalidated')),
          attempt integer not null default 1,
          max_attempts integer not null,
          inputs jsonb not null,
          cost bigint not null,
          capacity bigint,
          over_capacity boolean not null default false,
          parent_id text,
          result jsonb,
          failure_class text,
          last_error text,
          lease_expires_at bigint,
          heartbeat_at bigint,
          not_before bigint,
          dispatched_attempt integer not null default 0,
          result_published boolean not null default false,
          created_at bigint not null,
          updated_at bigint not null
        )`,
        `create index state_jobs_stage_state_idx on state_jobs (stage, state)`,
        `create index state_jobs_stage_first_idx on state_jobs (stage, first)`,
        `create index state_jobs_updated_idx on state_jobs (updated_at)`,
        // Recovery scans after a restart: few rows match, so partial indexes stay tiny.
        `create index state_jobs_undispatched_idx on state_jobs (stage, first) where dispatched_attempt < attempt`,
        `create index state_jobs_unpublished_idx on state_jobs (stage, first) where state = 'succeeded' and not result_published`,
        `create index state_jobs_parent_idx on state_jobs (parent_id) where parent_id is not null`,

        `create table state_collector_items (
          collector text not null,
          id text not null,
          start_key bigint not null,
          end_key bigint not null,
          cost bigint not null,
          data jsonb not null,
          received_at bigint not null,
          job_id text,
          consumed_at bigint,
          primary key (collector, id)
        )`,
        // Open items of a collector in key order; consumed items (job_id set) are not in it.
        `create index state_collector_items_open_idx on state_collector_items (collector, start_key) where job_id is null`,
        `create index state_collector_items_job_idx on state_collector_items (job_id) where job_id is not null`,

        `create table state_cursors (
          name text primary key,
          value text not null,
          updated_at bigint not null
        )`,

        `create table state_attempts (
          job_id text not null,
          attempt integer not null,
          worker_id text,
          started_at bigint,
          ended_at bigint,
          outcome text not null default 'running',
          failure_class text,
          error text,
          stderr_tail text,
          duration_ms bigint,
          updated_at bigint not null,
          primary key (job_id, attempt)
        )`,

        `create table state_blocks (
          number bigint primary key,
          hash text not null,
          parent_hash text not null,
          gas_used bigint not null,
          cost bigint not null,
          seen_at bigint not null
        )`,

        `create table state_events (
          id bigint generated always as identity primary key,
          at bigint not null,
          kind text not null,
          job_id text,
          message text not null,
          details jsonb not null
        )`,
        `create index state_events_at_idx on state_events (at, id)`,
        `create index state_events_kind_idx on state_events (kind, at, id)`,
        `create index state_events_job_idx on state_events (job_id, at, id) where job_id is not null`,

        `create table state_meta (
          key text primary key,
          value text not null,
          updated_at bigint not null
        )`,
      ]
      for (const s of statements) await sql.raw(s).execute(db)
    },
  },
  {
    version: 2,
    name: 'leader lease',
    async up(db) {
      // One row per elected role (see ./leader.ts): who holds it, under which fencing epoch,
      // until when. Times are the database's clock (timestamptz), never a caller's.
      await sql`create table state_leader (
        name text primary key,
        holder text not null,
        epoch bigint not null check (epoch > 0),
        expires_at timestamptz not null,
        acquired_at timestamptz not null,
        renewed_at timestamptz not null
      )`.execute(db)
    },
  },
]

/** Brings the state tables of `database`'s schema up to date. Safe to call from many processes at once. */
export function migrateState(database: SqlDatabase): Promise<MigrationsResult> {
  return runMigrations(database, { table: STATE_MIGRATIONS_TABLE, migrations: stateMigrations })
}
