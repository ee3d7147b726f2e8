import { Kysely, PostgresDialect, sql } from 'kysely'
import pg from 'pg'
import { StateError } from '../../core/errors.js'

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
      /** Folder of the embedded Postgres cluster (created on first use). */
      dataDir: string
      /** @default 'proofline' */
      schema?: string
      /** @default 10 */
      poolSize?: number
    }

/**
 * An open SQL database shared by the state store and the local bus. Every connection has
 * `search_path` set to `schema`, so all SQL in proofline is unqualified.
 */
export interface SqlDatabase {
  // Kysely<any> on purpose: each module declares the tables it owns and casts; one global
  // table map would couple the bus, the state store and later modules.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  readonly db: Kysely<any>
  readonly schema: string
  /** Closes the pool (and stops the embedded server when this process started it). */
  close(): Promise<void>
}

const SCHEMA_RE = /^[a-z_][a-z0-9_]{0,62}$/

/** Opens a pool to Postgres with `search_path` set to the schema, creating the schema if needed. */
export async function openPostgres(url: string, schema = 'proofline', poolSize = 10): Promise<SqlDatabase> {
  if (!SCHEMA_RE.test(schema)) {
    throw new StateError('STATE_SCHEMA_INVALID', `schema name ${JSON.stringify(schema)} must match ${SCHEMA_RE}`, { retryable: false })
  }
  const pool = new pg.Pool({ connectionString: url, max: poolSize, options: `-c search_path=${schema}` })
  // An idle client's error (server restart) must not crash the process; the next query reconnects.
  pool.on('error', () => {})
  const db = new Kysely<Record<string, never>>({ dialect: new PostgresDialect({ pool }) })
  try {
    await sql`create schema if not exists ${sql.id(schema)}`.execute(db)
  } catch (err) {
    await db.destroy()
    throw new StateError('STATE_UNAVAILABLE', `cannot connect to Postgres at ${redactUrl(url)}: ${(err as Error).message}`, { retryable: true, cause: err })
  }
  return { db, schema, close: () => db.destroy() }
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
