import { sql, type Kysely, type Transaction } from 'kysely'
import type { Address, Hex } from 'viem'
import { StateError, errorMessage } from '../core/errors.js'
import type { SqlDatabase } from '../state/sql/database.js'
import { TxJournalConflictError, type JournaledTx, type TxAttempt, type TxJournal, type TxOutcome } from './journal.js'

/**
 * The tx journal in the state store's database, in tables of its own (`proposer_txs`,
 * `proposer_tx_attempts`) migrated on their own (`proposer_migrations`), like the local bus,
 * so the proposer and the state store evolve separately.
 *
 * The two uniqueness rules of the port are table constraints: `proposer_txs.key` is the
 * primary key and `(chain_id, sender, nonce)` is unique, so two processes sharing the database
 * can never give one key two nonces or one nonce two keys.
 */
const MIGRATIONS: ReadonlyArray<{ version: number; name: string; statements: readonly string[] }> = [
  {
    version: 1,
    name: 'proposer tx journal',
    statements: [
      `create table if not exists proposer_txs (
        key text primary key,
        chain_id bigint not null,
        sender text not null,
        nonce bigint not null,
        to_address text not null,
        data text not null,
        value numeric(78, 0) not null,
        gas numeric(78, 0) not null,
        status text not null check (status in ('pending', 'confirmed', 'reverted')),
        tx_hash text,
        block_number numeric(78, 0),
        block_hash text,
        gas_used numeric(78, 0),
        effective_gas_price numeric(78, 0),
        created_at timestamptz not null default now(),
        updated_at timestamptz not null default now(),
        unique (chain_id, sender, nonce)
      )`,
      `create index if not exists proposer_txs_pending on proposer_txs (chain_id, sender, nonce) where status = 'pending'`,
      `create table if not exists proposer_tx_attempts (
        key text not null references proposer_txs (key) on delete cascade,
        attempt integer not null,
        nonce bigint not null,
        tx_hash text not null unique,
        raw text not null,
        max_fee_per_gas numeric(78, 0) not null,
        max_priority_fee_per_gas numeric(78, 0) not null,
        created_at timestamptz not null default now(),
        primary key (key, attempt)
      )`,
    ],
  },
]

/** The latest journal migration version this code knows. */
export const PROPOSER_SCHEMA_VERSION = MIGRATIONS.length

/** Creates or upgrades the journal tables; safe to run from several processes at once. */
export async function migrateTxJournal(db: Kysely<any>): Promise<void> {
  await db.transaction().execute(async (trx) => {
    await sql`select pg_advisory_xact_lock(hashtextextended('proofline.proposer.migrate:' || current_schema(), 0))`.execute(trx)
    await sql`create table if not exists proposer_migrations (
      version integer primary key,
      name text not null,
      applied_at timestamptz not null default now()
    )`.execute(trx)
    const applied = await sql<{ version: number }>`select version from proposer_migrations`.execute(trx)
    const done = new Set(applied.rows.map((r) => r.version))
    for (const m of MIGRATIONS) {
      if (done.has(m.version)) continue
      for (const statement of m.statements) await sql.raw(statement).execute(trx)
      await sql`insert into proposer_migrations (version, name) values (${m.version}, ${m.name})`.execute(trx)
    }
  })
}

interface TxRow {
  key: string
  chain_id: string
  sender: string
  nonce: string
  to_address: string
  data: string
  value: string
  gas: string
  status: JournaledTx['status']
  tx_hash: string | null
  block_number: string | null
  block_hash: string | null
  gas_used: string | null
  effective_gas_price: string | null
}

interface AttemptRow {
  key: string
  attempt: number
  nonce: string
  tx_hash: string
  raw: string
  max_fee_per_gas: string
  max_priority_fee_per_gas: string
  created_ms: string
}

const UNIQUE_VIOLATION = '23505'

/**
 * The journal on a SQL database (the state store's; not closed by the journal). Migrates its
 * tables on open. Writes commit with `synchronous_commit` on whatever the server's default is:
 * "resolved" must mean "on disk" for a write-ahead journal.
 */
export async function sqlTxJournal(database: SqlDatabase): Promise<TxJournal> {
  const db = database.db
  try {
    await migrateTxJournal(db)
  } catch (err) {
    throw new StateError('STATE_MIGRATION_FAILED', `cannot migrate the proposer journal tables in schema ${database.schema}: ${errorMessage(err)}`, {
      retryable: true,
      cause: err,
    })
  }

  const write = async <T>(fn: (trx: Transaction<any>) => Promise<T>): Promise<T> =>
    db.transaction().execute(async (trx) => {
      await sql`select set_config('synchronous_commit', 'on', true)`.execute(trx)
      return fn(trx)
    })

  const load = async (q: Kysely<any>, rows: TxRow[]): Promise<JournaledTx[]> => {
    if (rows.length === 0) return []
    const keys = rows.map((r) => r.key)
    const attempts = await sql<AttemptRow>`
      select key, attempt, nonce, tx_hash, raw, max_fee_per_gas, max_priority_fee_per_gas,
             (extract(epoch from created_at) * 1000)::bigint as created_ms
      from proposer_tx_attempts where key = any(${keys}) order by key, attempt`.execute(q)
    return rows.map((r) => toTx(r, attempts.rows.filter((a) => a.key === r.key)))
  }

  const insertAttempt = (trx: Transaction<any>, key: string, a: TxAttempt) => sql`
    insert into proposer_tx_attempts (key, attempt, nonce, tx_hash, raw, max_fee_per_gas, max_priority_fee_per_gas, created_at)
    values (${key}, ${a.attempt}, ${a.nonce}, ${a.hash.toLowerCase()}, ${a.raw}, ${a.maxFeePerGas.toString()},
            ${a.maxPriorityFeePerGas.toString()}, to_timestamp(${a.createdAtMs}::double precision / 1000))`.execute(trx)

  const lockPending = async (trx: Transaction<any>, key: string): Promise<TxRow> => {
    const res = await sql<TxRow>`select * from proposer_txs where key = ${key} for update`.execute(trx)
    const row = res.rows[0]
    if (row === undefined) throw new TxJournalConflictError('state', `no journaled intent ${key}`, { key })
    if (row.status !== 'pending') throw new TxJournalConflictError('state', `intent ${key} is ${row.status}, not pending`, { key })
    return row
  }

  const conflicts = async <T>(key: string, nonce: number | undefined, fn: () => Promise<T>): Promise<T> => {
    try {
      return await fn()
    } catch (err) {
      const e = err as { code?: string; constraint?: string }
      if (e.code !== UNIQUE_VIOLATION) throw err
      if (e.constraint === 'proposer_txs_pkey') throw new TxJournalConflictError('key', `intent ${key} is already journaled`, { key })
      if (e.constraint === 'proposer_txs_chain_id_sender_nonce_key') {
        throw new TxJournalConflictError('nonce', `nonce ${nonce} is held by another intent`, { key, nonce })
      }
      throw new TxJournalConflictError('state', `journal write for ${key} conflicts: ${errorMessage(err)}`, { key })
    }
  }

  return {
    async get(key) {
      const res = await sql<TxRow>`select * from proposer_txs where key = ${key}`.execute(db)
      return (await load(db, res.rows))[0]
    },

    create: (intent, first) =>
      conflicts(intent.key, intent.nonce, () =>
        write(async (trx) => {
          await sql`
            insert into proposer_txs (key, chain_id, sender, nonce, to_address, data, value, gas, status)
            values (${intent.key}, ${intent.chainId}, ${intent.from.toLowerCase()}, ${intent.nonce}, ${intent.to.toLowerCase()},
                    ${intent.data}, ${intent.value.toString()}, ${intent.gas.toString()}, 'pending')`.execute(trx)
          await insertAttempt(trx, intent.key, first)
        }),
      ),

    addAttempt: (key, attempt) =>
      conflicts(key, attempt.nonce, () =>
        write(async (trx) => {
          const same = await sql<{ tx_hash: string }>`
            select tx_hash from proposer_tx_attempts where key = ${key} and attempt = ${attempt.attempt}`.execute(trx)
          if (same.rows[0]?.tx_hash === attempt.hash.toLowerCase()) return
          await lockPending(trx, key)
          if (same.rows.length > 0) throw new TxJournalConflictError('state', `attempt ${attempt.attempt} of ${key} is taken`, { key })
          await insertAttempt(trx, key, attempt)
          await sql`update proposer_txs set updated_at = now() where key = ${key}`.execute(trx)
        }),
      ),

    reassignNonce: (key, nonce, attempt) =>
      conflicts(key, nonce, () =>
        write(async (trx) => {
          await lockPending(trx, key)
          await sql`update proposer_txs set nonce = ${nonce}, updated_at = now() where key = ${key}`.execute(trx)
          await insertAttempt(trx, key, attempt)
        }),
      ),

    finish: (key, status, outcome) =>
      write(async (trx) => {
        const cur = await sql<TxRow>`select * from proposer_txs where key = ${key} for update`.execute(trx)
        const row = cur.rows[0]
        if (row !== undefined && row.status === status && row.tx_hash === outcome.txHash.toLowerCase()) return
        await lockPending(trx, key)
        await sql`
          update proposer_txs set status = ${status}, tx_hash = ${outcome.txHash.toLowerCase()},
            block_number = ${outcome.blockNumber.toString()}, block_hash = ${outcome.blockHash.toLowerCase()},
            gas_used = ${outcome.gasUsed.toString()}, effective_gas_price = ${outcome.effectiveGasPrice.toString()}, updated_at = now()
          where key = ${key}`.execute(trx)
      }),

    async pending(chainId, from) {
      const res = await sql<TxRow>`
        select * from proposer_txs where chain_id = ${chainId} and sender = ${from.toLowerCase()} and status = 'pending'
        order by nonce`.execute(db)
      return load(db, res.rows)
    },

    async highestNonce(chainId, from) {
      const res = await sql<{ max: string | null }>`
        select max(a.nonce) as max from proposer_tx_attempts a join proposer_txs t on t.key = a.key
        where t.chain_id = ${chainId} and t.sender = ${from.toLowerCase()}`.execute(db)
      const max = res.rows[0]?.max
      return max === null || max === undefined ? undefined : Number(max)
    },
  }
}

function toTx(r: TxRow, attempts: AttemptRow[]): JournaledTx {
  const tx: JournaledTx = {
    key: r.key,
    chainId: Number(r.chain_id),
    from: r.sender as Address,
    nonce: Number(r.nonce),
    to: r.to_address as Address,
    data: r.data as Hex,
    value: BigInt(r.value),
    gas: BigInt(r.gas),
    status: r.status,
    attempts: attempts.map((a) => ({
      attempt: a.attempt,
      nonce: Number(a.nonce),
      hash: a.tx_hash as Hex,
      raw: a.raw as Hex,
      maxFeePerGas: BigInt(a.max_fee_per_gas),
      maxPriorityFeePerGas: BigInt(a.max_priority_fee_per_gas),
      createdAtMs: Number(a.created_ms),
    })),
  }
  if (r.tx_hash !== null && r.block_number !== null && r.block_hash !== null && r.gas_used !== null && r.effective_gas_price !== null) {
    const outcome: TxOutcome = {
      txHash: r.tx_hash as Hex,
      blockNumber: BigInt(r.block_number),
      blockHash: r.block_hash as Hex,
      gasUsed: BigInt(r.gas_used),
      effectiveGasPrice: BigInt(r.effective_gas_price),
    }
    tx.outcome = outcome
  }
  return tx
}
