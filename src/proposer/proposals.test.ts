import { randomBytes } from 'node:crypto'
import { sql } from 'kysely'
import type { Address, Hex } from 'viem'
import { afterAll, describe, expect, it } from 'vitest'
import { openPostgres, type SqlDatabase } from '../state/sql/database.js'
import { memoryProposalStore, sqlProposalStore, type InFlightProposal, type ProposalRecord, type ProposalStore } from './proposals.js'
import { sqlTxJournal } from './sql-journal.js'

const PG_URL = process.env.PROOFLINE_TEST_PG_URL ?? 'postgres://root@127.0.0.1:5432/test'
const ORACLE = '0x1111111111111111111111111111111111111111' as Address

const hex32 = (): Hex => `0x${randomBytes(32).toString('hex')}`
const inFlight = (l2Block: number, over: Partial<InFlightProposal> = {}): InFlightProposal => {
  const outputRoot = over.outputRoot ?? hex32()
  return {
    l2Block,
    first: l2Block - 2,
    outputRoot,
    lastHash: hex32(),
    jobId: `job-${l2Block}`,
    verifier: 'MockVerifier',
    key: `propose:${l2Block}:${outputRoot}`,
    to: ORACLE,
    data: `0x${randomBytes(100).toString('hex')}`,
    proofBytes: 32,
    startedAt: 1_700_000_000_000 + l2Block,
    ...over,
  }
}
const record = (l2Block: number, over: Partial<ProposalRecord> = {}): ProposalRecord => ({
  l2Block,
  first: l2Block - 2,
  outputRoot: hex32(),
  txHash: hex32(),
  l1Block: 10n ** 20n + BigInt(l2Block),
  gasUsed: 86_996n,
  effectiveGasPrice: 10n ** 30n,
  verifier: 'MockVerifier',
  jobId: `job-${l2Block}`,
  proofBytes: 32,
  proposedAt: 1_700_000_000_000 + l2Block,
  ...over,
})

/** The `ProposalStore` contract; every adapter passes it. */
function proposalStoreConformance(name: string, open: () => Promise<ProposalStore>): void {
  describe(`ProposalStore conformance: ${name}`, () => {
    it('behavior: begin stores an in-flight proposal, a later begin for the block replaces it, abandon drops it only by its key', async () => {
      const s = await open()
      const a = inFlight(10)
      await s.begin(a)
      await s.begin(inFlight(4))
      expect((await s.listInFlight()).map((p) => p.l2Block)).toEqual([4, 10])
      expect((await s.listInFlight())[1]).toEqual({ ...a, outputRoot: a.outputRoot.toLowerCase(), lastHash: a.lastHash.toLowerCase() })
      const b = inFlight(10)
      await s.begin(b)
      expect((await s.listInFlight()).find((p) => p.l2Block === 10)?.key).toBe(b.key)
      await s.abandon(10, a.key) // not its key any more: kept
      expect((await s.listInFlight()).map((p) => p.l2Block)).toEqual([4, 10])
      await s.abandon(10, b.key)
      expect((await s.listInFlight()).map((p) => p.l2Block)).toEqual([4])
      expect(await s.list()).toEqual([])
    })

    it('behavior: complete is idempotent by L2 block: the first record stays, the in-flight row is cleared, big values round-trip', async () => {
      const s = await open()
      await s.begin(inFlight(7))
      const first = record(7)
      expect(await s.complete(first)).toEqual(first)
      expect(await s.listInFlight()).toEqual([])
      const second = record(7)
      expect(await s.complete(second)).toEqual(first)
      expect(await s.get(7)).toEqual(first)
      expect(await s.get(8)).toBeUndefined()
      // A proposed block never goes back to in-flight.
      await s.begin(inFlight(7))
      expect(await s.listInFlight()).toEqual([])
      expect(await s.list()).toEqual([first])
    })

    it('behavior: list is ascending by L2 block; limit keeps the latest ones', async () => {
      const s = await open()
      for (const n of [9, 3, 6]) await s.complete(record(n))
      expect((await s.list()).map((r) => r.l2Block)).toEqual([3, 6, 9])
      expect((await s.list({ limit: 2 })).map((r) => r.l2Block)).toEqual([6, 9])
    })

    it('behavior: refusals are appended and listed newest first', async () => {
      const s = await open()
      await s.recordRefusal({ at: 1, kind: 'refused', l2Block: 5, first: 2, jobId: 'j1', reason: 'reorged', details: { nodeHash: '0xab' } })
      await s.recordRefusal({ at: 2, kind: 'rejected', l2Block: 5, first: 2, jobId: 'j1', reason: 'InvalidProof()', details: {} })
      const all = await s.listRefusals()
      expect(all.map((r) => r.kind)).toEqual(['rejected', 'refused'])
      expect(all[1]).toEqual({ at: 1, kind: 'refused', l2Block: 5, first: 2, jobId: 'j1', reason: 'reorged', details: { nodeHash: '0xab' } })
      expect(await s.listRefusals({ limit: 1 })).toHaveLength(1)
    })
  })
}

proposalStoreConformance('memory', () => Promise.resolve(memoryProposalStore()))

const databases: SqlDatabase[] = []
afterAll(async () => {
  for (const d of databases) {
    await sql`drop schema if exists ${sql.id(d.schema)} cascade`.execute(d.db)
    await d.close()
  }
})
const freshDatabase = async (): Promise<SqlDatabase> => {
  const d = await openPostgres(PG_URL, `t_proposals_${randomBytes(6).toString('hex')}`, 4)
  databases.push(d)
  return d
}

proposalStoreConformance('postgres', async () => sqlProposalStore(await freshDatabase()))

describe('sqlProposalStore migrations', () => {
  it('behavior: shares proposer_migrations with the tx journal in either order, concurrently, each applying its own versions once', async () => {
    const d = await freshDatabase()
    await Promise.all([sqlProposalStore(d), sqlTxJournal(d), sqlProposalStore(d), sqlTxJournal(d)])
    const rows = await sql<{ version: number }>`select version from proposer_migrations order by version`.execute(d.db)
    expect(rows.rows.map((r) => r.version)).toEqual([1, 101])
    // Reopening applies nothing and keeps the data.
    const s = await sqlProposalStore(d)
    await s.complete(record(3))
    expect((await (await sqlProposalStore(d)).list()).map((r) => r.l2Block)).toEqual([3])
  })
})
