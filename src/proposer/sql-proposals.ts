import { sql, type Kysely } from 'kysely'
import type { Address, Hex } from 'viem'
import { StateError, errorMessage } from '../core/errors.js'
import type { SqlDatabase } from '../state/sql/database.js'
import type { InFlightProposal, ProposalRecord, ProposalRefusal, ProposalStore } from './proposals.js'

/**
 * The proposal store in the state store's database, in tables of its own
 * (`proposer_proposals`, `proposer_proposal_refusals`). Its migrations are recorded in the tx
 * journal's `proposer_migrations` table under the journal's advisory lock, with versions from
 * 101 up: versions 1–100 belong to sql-journal.ts, 101–200 to this file. Each module applies
 * only the versions it knows, so the two evolve separately in one table.
 */
const MIGRATIONS: ReadonlyArray<{ version: number; name: string; statements: readonly string[] }> = [
  {
    version: 101,
    name: 'proposer proposals',
    statements: [
      `create table if not exists proposer_proposals (
        l2_block bigint primary key,
        status text not null check (status in ('in-flight', 'proposed')),
        first_block bigint not null,
        output_root text not null,
        last_hash text,
        job_id text not null,
        verifier text not null,
        tx_key text,
        to_address text,
        calldata text,
        proof_bytes integer not null,
        tx_hash text,
        l1_block numeric(78, 0),
        gas_used numeric(78, 0),
        effective_gas_price numeric(78, 0),
        started_at bigint,
        proposed_at bigint
      )`,
      `create table if not exists proposer_proposal_refusals (
        id bigserial primary key,
        at bigint not null,
        kind text not null check (kind in ('refused', 'rejected')),
        l2_block bigint not null,
        first_block bigint not null,
        job_id text not null,
        reason text not null,
        details jsonb not null default '{}'::jsonb
      )`,
      `create index if not exists proposer_proposal_refusals_at on proposer_proposal_refusals (at desc, id desc)`,
    ],
  },
]

/** Creates or upgrades the proposal tables; safe to run from several processes at once. */
export async function migrateProposalStore(db: Kysely<any>): Promise<void> {
  await db.transaction().execute(async (trx) => {
    // The same lock key as the tx journal's migrations: one migration runner at a time per schema.
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

interface ProposalRow {
  l2_block: string
  status: 'in-flight' | 'proposed'
  first_block: string
  output_root: string
  last_hash: string | null
  job_id: string
  verifier: string
  tx_key: string | null
  to_address: string | null
  calldata: string | null
  proof_bytes: number
  tx_hash: string | null
  l1_block: string | null
  gas_used: string | null
  effective_gas_price: string | null
  started_at: string | null
  proposed_at: string | null
}

interface RefusalRow {
  at: string
  kind: ProposalRefusal['kind']
  l2_block: string
  first_block: string
  job_id: string
  reason: string
  details: Record<string, unknown>
}

/** The proposal store on a SQL database (the state store's; not closed by the store). Migrates its tables on open. */
export async function sqlProposalStore(database: SqlDatabase): Promise<ProposalStore> {
  const db = database.db
  try {
    await migrateProposalStore(db)
  } catch (err) {
    throw new StateError('STATE_MIGRATION_FAILED', `cannot migrate the proposer proposal tables in schema ${database.schema}: ${errorMessage(err)}`, {
      retryable: true,
      cause: err,
    })
  }
  const limitOf = (limit: number | undefined): number => (limit === undefined ? 2_147_483_647 : Math.max(0, Math.floor(limit)))

  return {
    async begin(p) {
      await sql`
        insert into proposer_proposals (l2_block, status, first_block, output_root, last_hash, job_id, verifier, tx_key, to_address, calldata, proof_bytes, started_at)
        values (${p.l2Block}, 'in-flight', ${p.first}, ${p.outputRoot.toLowerCase()}, ${p.lastHash.toLowerCase()}, ${p.jobId}, ${p.verifier}, ${p.key},
                ${p.to.toLowerCase()}, ${p.data}, ${p.proofBytes}, ${p.startedAt})
        on conflict (l2_block) do update set
          first_block = excluded.first_block, output_root = excluded.output_root, last_hash = excluded.last_hash, job_id = excluded.job_id,
          verifier = excluded.verifier, tx_key = excluded.tx_key, to_address = excluded.to_address, calldata = excluded.calldata,
          proof_bytes = excluded.proof_bytes, started_at = excluded.started_at
        where proposer_proposals.status = 'in-flight'`.execute(db)
    },

    async listInFlight() {
      const res = await sql<ProposalRow>`select * from proposer_proposals where status = 'in-flight' order by l2_block`.execute(db)
      return res.rows.map(toInFlight)
    },

    async complete(r) {
      await sql`
        insert into proposer_proposals (l2_block, status, first_block, output_root, job_id, verifier, proof_bytes, tx_hash, l1_block, gas_used,
                                        effective_gas_price, proposed_at)
        values (${r.l2Block}, 'proposed', ${r.first}, ${r.outputRoot.toLowerCase()}, ${r.jobId}, ${r.verifier}, ${r.proofBytes}, ${r.txHash.toLowerCase()},
                ${r.l1Block.toString()}, ${r.gasUsed.toString()}, ${r.effectiveGasPrice.toString()}, ${r.proposedAt})
        on conflict (l2_block) do update set
          status = 'proposed', first_block = excluded.first_block, output_root = excluded.output_root, job_id = excluded.job_id,
          verifier = excluded.verifier, proof_bytes = excluded.proof_bytes, tx_hash = excluded.tx_hash, l1_block = excluded.l1_block,
          gas_used = excluded.gas_used, effective_gas_price = excluded.effective_gas_price, proposed_at = excluded.proposed_at,
          calldata = null
        where proposer_proposals.status = 'in-flight'`.execute(db)
      const res = await sql<ProposalRow>`select * from proposer_proposals where l2_block = ${r.l2Block} and status = 'proposed'`.execute(db)
      const row = res.rows[0]
      if (row === undefined) throw new StateError('STATE_WRITE_LOST', `proposal for L2 block ${r.l2Block} was not stored`, { retryable: true })
      return toRecord(row)
    },

    async abandon(l2Block, key) {
      await sql`delete from proposer_proposals where l2_block = ${l2Block} and status = 'in-flight' and tx_key = ${key}`.execute(db)
    },

    async get(l2Block) {
      const res = await sql<ProposalRow>`select * from proposer_proposals where l2_block = ${l2Block} and status = 'proposed'`.execute(db)
      const row = res.rows[0]
      return row === undefined ? undefined : toRecord(row)
    },

    async list(opts = {}) {
      const res = await sql<ProposalRow>`
        select * from (select * from proposer_proposals where status = 'proposed' order by l2_block desc limit ${limitOf(opts.limit)}) p
        order by l2_block`.execute(db)
      return res.rows.map(toRecord)
    },

    async recordRefusal(r) {
      await sql`
        insert into proposer_proposal_refusals (at, kind, l2_block, first_block, job_id, reason, details)
        values (${r.at}, ${r.kind}, ${r.l2Block}, ${r.first}, ${r.jobId}, ${r.reason}, ${JSON.stringify(r.details)}::jsonb)`.execute(db)
    },

    async listRefusals(opts = {}) {
      const res = await sql<RefusalRow>`
        select at, kind, l2_block, first_block, job_id, reason, details from proposer_proposal_refusals
        order by at desc, id desc limit ${limitOf(opts.limit)}`.execute(db)
      return res.rows.map((r) => ({
        at: Number(r.at),
        kind: r.kind,
        l2Block: Number(r.l2_block),
        first: Number(r.first_block),
        jobId: r.job_id,
        reason: r.reason,
        details: r.details,
      }))
    },
  }
}

function toRecord(r: ProposalRow): ProposalRecord {
  if (r.tx_hash === null || r.l1_block === null || r.gas_used === null || r.effective_gas_price === null || r.proposed_at === null) {
    throw new StateError('STATE_ROW_INVALID', `proposal row for L2 block ${r.l2_block} is proposed without its receipt fields`, { retryable: false })
  }
  return {
    l2Block: Number(r.l2_block),
    first: Number(r.first_block),
    outputRoot: r.output_root as Hex,
    txHash: r.tx_hash as Hex,
    l1Block: BigInt(r.l1_block),
    gasUsed: BigInt(r.gas_used),
    effectiveGasPrice: BigInt(r.effective_gas_price),
    verifier: r.verifier,
    jobId: r.job_id,
    proofBytes: r.proof_bytes,
    proposedAt: Number(r.proposed_at),
  }
}

function toInFlight(r: ProposalRow): InFlightProposal {
  if (r.tx_key === null || r.to_address === null || r.calldata === null || r.last_hash === null || r.started_at === null) {
    throw new StateError('STATE_ROW_INVALID', `in-flight proposal row for L2 block ${r.l2_block} is missing its intent`, { retryable: false })
  }
  return {
    l2Block: Number(r.l2_block),
    first: Number(r.first_block),
    outputRoot: r.output_root as Hex,
    lastHash: r.last_hash,
    jobId: r.job_id,
    verifier: r.verifier,
    key: r.tx_key,
    to: r.to_address as Address,
    data: r.calldata as Hex,
    proofBytes: r.proof_bytes,
    startedAt: Number(r.started_at),
  }
}
