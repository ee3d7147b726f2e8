import { randomBytes } from 'node:crypto'
import { sql } from 'kysely'
import { afterAll, describe, expect, it } from 'vitest'
import type { Address, Hex } from 'viem'
import { openPostgres, type SqlDatabase } from '../state/sql/database.js'
import { memoryTxJournal, TxJournalConflictError, type NewJournaledTx, type TxAttempt, type TxJournal } from './journal.js'
import { sqlTxJournal } from './sql-journal.js'

const PG_URL = process.env.PROOFLINE_TEST_PG_URL ?? 'postgres://root@127.0.0.1:5432/test'
const FROM = '0xAbCd00000000000000000000000000000000Ef01' as Address
const TO = '0x1111111111111111111111111111111111111111' as Address

const hash = (): Hex => `0x${randomBytes(32).toString('hex')}`
const attempt = (n: number, nonce: number, fee = 100n): TxAttempt => ({
  attempt: n,
  nonce,
  hash: hash(),
  raw: `0x02${randomBytes(40).toString('hex')}`,
  maxFeePerGas: fee,
  maxPriorityFeePerGas: fee / 10n,
  createdAtMs: 1_700_000_000_000 + n,
})
const intent = (key: string, nonce: number, chainId = 900): NewJournaledTx => ({
  key,
  chainId,
  from: FROM,
  nonce,
  to: TO,
  data: '0xdeadbeef',
  value: 10n ** 30n,
  gas: 100_000n,
})

/** The `TxJournal` contract; every adapter passes it. */
function journalConformance(name: string, open: () => Promise<TxJournal>): void {
  describe(`TxJournal conformance: ${name}`, () => {
    it('behavior: create stores the intent pending with its first attempt; big values round-trip', async () => {
      const j = await open()
      const a = attempt(1, 0)
      await j.create(intent('k', 0), a)
      const got = await j.get('k')
      expect(got).toMatchObject({ key: 'k', chainId: 900, from: FROM.toLowerCase(), nonce: 0, value: 10n ** 30n, gas: 100_000n, status: 'pending' })
      expect(got?.attempts).toEqual([a])
      expect(await j.get('absent')).toBeUndefined()
    })

    it('behavior: one key never gets two nonces and one nonce never two keys', async () => {
      const j = await open()
      await j.create(intent('a', 5), attempt(1, 5))
      const sameKey = await j.create(intent('a', 6), attempt(1, 6)).catch((e: unknown) => e)
      expect(sameKey).toBeInstanceOf(TxJournalConflictError)
      expect((sameKey as TxJournalConflictError).reason).toBe('key')
      const sameNonce = await j.create(intent('b', 5), attempt(1, 5)).catch((e: unknown) => e)
      expect((sameNonce as TxJournalConflictError).reason).toBe('nonce')
      expect(await j.get('b')).toBeUndefined()
      // Another chain or account has its own nonces.
      await j.create(intent('c', 5, 901), attempt(1, 5))
      expect((await j.get('a'))?.attempts).toHaveLength(1)
    })

    it('behavior: attempts append in order, the same attempt twice is stored once, a taken number is a conflict', async () => {
      const j = await open()
      await j.create(intent('k', 1), attempt(1, 1))
      const second = attempt(2, 1, 200n)
      await j.addAttempt('k', second)
      await j.addAttempt('k', second)
      await expect(j.addAttempt('k', attempt(2, 1, 300n))).rejects.toBeInstanceOf(TxJournalConflictError)
      const got = await j.get('k')
      expect(got?.attempts.map((a) => a.maxFeePerGas)).toEqual([100n, 200n])
    })

    it('behavior: finish is final and idempotent; pending lists only unfinished intents by nonce', async () => {
      const j = await open()
      await j.create(intent('n2', 2), attempt(1, 2))
      await j.create(intent('n0', 0), attempt(1, 0))
      await j.create(intent('n1', 1), attempt(1, 1))
      const a = (await j.get('n1'))?.attempts[0]
      const outcome = { txHash: a?.hash ?? '0x', blockNumber: 12n, blockHash: hash(), gasUsed: 21_000n, effectiveGasPrice: 7n }
      await j.finish('n1', 'confirmed', outcome)
      await j.finish('n1', 'confirmed', outcome)
      await expect(j.finish('n1', 'reverted', outcome)).rejects.toBeInstanceOf(TxJournalConflictError)
      await expect(j.addAttempt('n1', attempt(2, 1))).rejects.toBeInstanceOf(TxJournalConflictError)
      expect(await j.get('n1')).toMatchObject({ status: 'confirmed', outcome })
      expect((await j.pending(900, FROM)).map((t) => t.key)).toEqual(['n0', 'n2'])
      expect(await j.pending(901, FROM)).toEqual([])
    })

    it('behavior: highestNonce covers every status and reassigned nonces; reassignNonce keeps old attempts', async () => {
      const j = await open()
      expect(await j.highestNonce(900, FROM)).toBeUndefined()
      await j.create(intent('x', 3), attempt(1, 3))
      await j.create(intent('y', 4), attempt(1, 4))
      await expect(j.reassignNonce('x', 4, attempt(2, 4))).rejects.toMatchObject({ reason: 'nonce' })
      await j.reassignNonce('x', 9, attempt(2, 9))
      const x = await j.get('x')
      expect(x?.nonce).toBe(9)
      expect(x?.attempts.map((a) => a.nonce)).toEqual([3, 9])
      expect(await j.highestNonce(900, FROM.toLowerCase() as Address)).toBe(9)
      expect(await j.highestNonce(901, FROM)).toBeUndefined()
    })
  })
}

journalConformance('memory', () => Promise.resolve(memoryTxJournal()))

const databases: SqlDatabase[] = []
afterAll(async () => {
  for (const d of databases) {
    await sql`drop schema if exists ${sql.id(d.schema)} cascade`.execute(d.db)
    await d.close()
  }
})

journalConformance('sql (Postgres)', async () => {
  const database = await openPostgres(PG_URL, `txj_test_${randomBytes(6).toString('hex')}`, 3)
  databases.push(database)
  return sqlTxJournal(database)
})

describe('sqlTxJournal', () => {
  it('behavior: opening twice at once on one schema migrates once', async () => {
    const database = await openPostgres(PG_URL, `txj_test_${randomBytes(6).toString('hex')}`, 4)
    databases.push(database)
    const [a, b] = await Promise.all([sqlTxJournal(database), sqlTxJournal(database)])
    const rows = await sql<{ version: number }>`select version from proposer_migrations`.execute(database.db)
    expect(rows.rows.map((r) => r.version)).toEqual([1])
    await a.create(intent('k', 0), attempt(1, 0))
    expect((await b.get('k'))?.status).toBe('pending')
  })
})
