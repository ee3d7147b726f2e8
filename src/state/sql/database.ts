import { Kysely, PostgresDialect, sql } from 'kysely'
import pg from 'pg'
import { StateError, errorMessage } from '../../core/errors.js'
import { advisoryKey, startEmbeddedPostgres } from './embedded-postgres.js'

/** Where the SQL database is. */
export type SqlDatabaseOptions =
  | {
      kind: 'postgres'
      /** libpq connection URL, e.g. `postgres://root@127.0.0.1:5432/test`. */
      url: string
      /** Schema holding proofline's tables; created if missing. @default 'proofline' */
      schema?: string
      /** Pool size. @default 10 */
      poolSize?: number
    }
  | {
      kind: 'embedded'
      /**
       * Folder of the embedded Postgres cluster (created on first use): the cluster is in
       * `<dataDir>/pgdata`, see `embedded-postgres.ts` and docs/state.md.
       */
      dataDir: string
      /** @default 'proofline' */
      schema?: string
      /** @default 10 */
      poolSize?: number
      /** On close, stop the server unless another open (in any process) still uses it. @default true */
      stopOnClose?: boolean
      /** How long to wait for the server to accept connections, crash recovery included. @default 120000 */
      startTimeoutMs?: number
    }

/**
 * An open SQL database shared by the state store and the local bus. Every connection has
 * `search_path` set to `schema`, so all SQL in proofline is unqualified.
 */
export interface SqlDatabase {
  // Kysely<any> on purpose: each module declares the tables it owns and casts; one global
  // table map would couple the bus, the state store and later modules.
  readonly db: Kysely<any>
  readonly schema: string
  /**
   * Closes the pool. For an embedded database, also stops the server unless another open (in
   * this or another process) still uses it, or `stopOnClose` is false. Idempotent.
   */
  close(): Promise<void>
}

const SCHEMA_RE = /^[a-z_][a-z0-9_]{0,62}$/

/** Opens a pool to Postgres with `search_path` set to the schema, creating the schema if needed. */
export async function openPostgres(url: string, schema = 'proofline', poolSize = 10): Promise<SqlDatabase> {
  return openPool({ connectionString: url }, schema, poolSize, redactUrl(url))
}

/**
 * Opens the database `opts` describes: a pool to a Postgres server (`postgres`), or the
 * embedded cluster in a folder (`embedded`), started or reused, then a pool to it. Closing an
 * embedded database stops its server when no other open uses it (see `stopOnClose`).
 */
export async function openSqlDatabase(opts: SqlDatabaseOptions): Promise<SqlDatabase> {
  if (opts.kind === 'postgres') return openPostgres(opts.url, opts.schema, opts.poolSize)
  const server = await startEmbeddedPostgres({
    dataDir: opts.dataDir,
    ...(opts.stopOnClose === undefined ? {} : { stopOnRelease: opts.stopOnClose }),
    ...(opts.startTimeoutMs === undefined ? {} : { startTimeoutMs: opts.startTimeoutMs }),
  })
  let database: SqlDatabase
  try {
    database = await openPool({ ...server.connection }, opts.schema ?? 'proofline', opts.poolSize ?? 10, `embedded Postgres in ${server.clusterDir}`)
  } catch (err) {
    await server.release()
    throw err
  }
  let closing: Promise<void> | undefined
  return {
    db: database.db,
    schema: database.schema,
    close: () =>
      (closing ??= (async () => {
        try {
          await database.close()
        } finally {
          await server.release()
        }
      })()),
  }
}

async function openPool(config: pg.PoolConfig, schema: string, poolSize: number, where: string): Promise<SqlDatabase> {
  if (!SCHEMA_RE.test(schema)) {
    throw new StateError('STATE_SCHEMA_INVALID', `schema name ${JSON.stringify(schema)} must match ${SCHEMA_RE}`, { retryable: false })
  }
  const pool = new pg.Pool({
    ...config,
    max: poolSize,
    options: `-c search_path=${schema}`,
    application_name: 'proofline',
    // Without it a pool waits forever for an unreachable server.
    connectionTimeoutMillis: 30_000,
    keepAlive: true,
  })
  // An idle client's error (server restart) must not crash the process; the next query reconnects.
  pool.on('error', () => {})
  // A checked-out client whose session the server ends between two queries (the idle timeout
  // of a fenced transaction whose process was paused, see leader.ts; a server restart) emits
  // 'error' with no listener, which would crash the process. With this one, the next query on
  // it fails instead and the pool drops it on release.
  pool.on('connect', (client) => {
    client.on('error', () => {})
  })
  const db = new Kysely<Record<string, never>>({ dialect: new PostgresDialect({ pool }) })
  try {
    await ensureSchema(db, schema)
  } catch (err) {
    await db.destroy()
    throw new StateError('STATE_UNAVAILABLE', `cannot connect to Postgres at ${where}: ${errorMessage(err)}`, { retryable: true, cause: err })
  }
  let closing: Promise<void> | undefined
  return { db, schema, close: () => (closing ??= db.destroy()) }
}

/**
 * Creates the schema unless it exists. Checking first lets a role without CREATE on the
 * database use a schema an operator made; the advisory lock makes concurrent first opens safe
 * (two `create schema if not exists` at once can fail on the catalog's unique index).
 */
async function ensureSchema(db: Kysely<Record<string, never>>, schema: string): Promise<void> {
  const exists = await sql<{ one: number }>`select 1 as one from pg_namespace where nspname = ${schema}`.execute(db)
  if (exists.rows.length > 0) return
  await db.transaction().execute(async (trx) => {
    await sql`select pg_advisory_xact_lock(${advisoryKey(`proofline:schema:${schema}`)}::bigint)`.execute(trx)
    await sql`create schema if not exists ${sql.id(schema)}`.execute(trx)
  })
}

/** Removes a password from a connection URL for messages and logs. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url)
    if (u.password) u.password = '***'
    return u.toString()
  } catch {
    return '<unparseable url>'
  }
}
