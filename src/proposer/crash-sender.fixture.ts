/**
 * Child process of the crash test: sends one intent through a tx manager on a SQL journal and
 * prints `JOURNALED <hash>` once the signed tx is journaled. With `hang-after-journal`, it then
 * stops before broadcasting (the parent SIGKILLs it there); with `normal`, it goes on to
 * broadcast and wait for confirmations (the parent SIGKILLs it once the tx is in the pool).
 *
 * argv: <rpcUrl> <pgUrl> <schema> <intentKey> <to> <mode>; the key in PROPOSER_PRIVATE_KEY.
 */
import type { Address } from 'viem'
import { openPostgres } from '../state/sql/database.js'
import type { TxJournal } from './journal.js'
import { loadSigner } from './signer.js'
import { sqlTxJournal } from './sql-journal.js'
import { txManager } from './tx-manager.js'

const [rpcUrl, pgUrl, schema, key, to, mode] = process.argv.slice(2)
if (rpcUrl === undefined || pgUrl === undefined || schema === undefined || key === undefined || to === undefined || mode === undefined) {
  throw new Error('usage: crash-sender <rpcUrl> <pgUrl> <schema> <key> <to> <mode>')
}
const database = await openPostgres(pgUrl, schema, 2)
const inner = await sqlTxJournal(database)
const journal: TxJournal = {
  ...inner,
  async create(intent, first) {
    await inner.create(intent, first)
    process.stdout.write(`JOURNALED ${first.hash}\n`)
    if (mode === 'hang-after-journal') {
      setInterval(() => {}, 1_000)
      await new Promise<never>(() => {})
    }
  },
}
const account = await loadSigner({ env: process.env })
const m = txManager({ rpcUrls: [rpcUrl], chainId: 31337, account, journal, confirmations: 3, pollIntervalMs: 50, resubmitAfterMs: 60_000 })
await m.send({ key, to: to as Address, data: '0x', value: 1n })
process.stdout.write('CONFIRMED\n')
await m.close()
await database.close()
