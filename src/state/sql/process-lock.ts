import { sql } from 'kysely'
import { createHash } from 'node:crypto'
import type { SqlDatabase } from './database.js'

/** A held lock; release it on clean shutdown (a crash releases it with the connection). */
export interface ProcessLock {
  release(): Promise<void>
}

/** 63-bit advisory lock key derived from a name. */
function lockKey(name: string): string {
  const h = createHash('sha256').update(name).digest()
  return (h.readBigInt64BE(0) & 0x7fffffffffffffffn).toString()
}

/**
 * Takes a Postgres session advisory lock on a connection held for as long as the lock is.
 * Returns undefined when another session holds it. When the holder dies (even by SIGKILL) its
 * connection closes and Postgres releases the lock, so a stale lock never blocks a restart.
 */
export async function tryProcessLock(database: SqlDatabase, name: string): Promise<ProcessLock | undefined> {
  const key = lockKey(`${database.schema}:${name}`)
  let release: () => void = () => {}
  const released = new Promise<void>((r) => (release = r))
  return new Promise<ProcessLock | undefined>((resolve, reject) => {
    const held = database.db.connection().execute(async (conn) => {
      const r = await sql<{ ok: boolean }>`select pg_try_advisory_lock(${key}::bigint) as ok`.execute(conn)
      if (!r.rows[0]?.ok) {
        resolve(undefined)
        return
      }
      resolve({
        async release() {
          release()
          await held
        },
      })
      await released
      await sql`select pg_advisory_unlock(${key}::bigint)`.execute(conn)
    })
    held.catch(reject)
  })
}
