import { spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import { sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Address, Hex } from 'viem'
import { privateKeyToAccount } from 'viem/accounts'
import { startAnvil, type AnvilInstance } from '../chain/anvil.js'
import { openPostgres, type SqlDatabase } from '../state/sql/database.js'
import { sqlTxJournal } from './sql-journal.js'
import { ANVIL_KEYS, backgroundMiner, recordingLogger, rpcCall, until } from './test-chain.js'
import { txManager } from './tx-manager.js'

const PG_URL = process.env.PROOFLINE_TEST_PG_URL ?? 'postgres://root@127.0.0.1:5432/test'
const CHAIN_ID = 31337
const SINK = '0x000000000000000000000000000000000000dEaD' as Address
const FIXTURE = fileURLToPath(new URL('./crash-sender.fixture.ts', import.meta.url))

let anvil: AnvilInstance
const databases: SqlDatabase[] = []
beforeAll(async () => {
  anvil = await startAnvil({ chainId: CHAIN_ID })
})
afterAll(async () => {
  await anvil.stop()
  for (const d of databases) {
    await sql`drop schema if exists ${sql.id(d.schema)} cascade`.execute(d.db)
    await d.close()
  }
})

const nonceOf = async (address: Address): Promise<number> => Number(BigInt(await rpcCall<Hex>(anvil.rpcUrl, 'eth_getTransactionCount', [address, 'latest'])))

/** Starts the fixture and resolves with the journaled hash and the child, still running. */
async function startSender(privateKey: Hex, schema: string, key: string, mode: 'normal' | 'hang-after-journal'): Promise<{ child: ChildProcess; hash: Hex; exited: Promise<number | null> }> {
  const child = spawn(process.execPath, ['--import', 'tsx', FIXTURE, anvil.rpcUrl, PG_URL, schema, key, SINK, mode], {
    env: { ...process.env, PROPOSER_PRIVATE_KEY: privateKey },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)))
  let out = ''
  let err = ''
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()))
  const hash = await new Promise<Hex>((resolve, reject) => {
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString()
      const m = /JOURNALED (0x[0-9a-f]{64})/.exec(out)
      if (m?.[1]) resolve(m[1] as Hex)
    })
    void exited.then((code) => reject(new Error(`fixture exited ${code} before journaling: ${err}`)))
  })
  return { child, hash, exited }
}

describe('txManager crash safety (SIGKILL, SQL journal, anvil)', () => {
  for (const mode of ['hang-after-journal', 'normal'] as const) {
    const when = mode === 'normal' ? 'after the broadcast' : 'after journaling, before the broadcast'
    it(`behavior: SIGKILL ${when} → a restarted manager confirms the ORIGINAL tx, exactly one tx for the key`, async () => {
      const privateKey = ANVIL_KEYS[mode === 'normal' ? 0 : 1]
      if (privateKey === undefined) throw new Error('unreachable')
      const address = privateKeyToAccount(privateKey).address
      const schema = `txcrash_${randomBytes(5).toString('hex')}`
      const database = await openPostgres(PG_URL, schema, 3)
      databases.push(database)
      await rpcCall(anvil.rpcUrl, 'evm_setAutomine', [false])
      const before = await nonceOf(address)
      const key = `propose:${mode}`

      const { child, hash, exited } = await startSender(privateKey, schema, key, mode)
      if (mode === 'normal') {
        await until('the tx is in the pool', async () => (await rpcCall(anvil.rpcUrl, 'eth_getTransactionByHash', [hash])) !== null)
      } else {
        await new Promise((r) => setTimeout(r, 300))
        expect(await rpcCall(anvil.rpcUrl, 'eth_getTransactionByHash', [hash])).toBeNull()
      }
      child.kill('SIGKILL')
      await exited
      await rpcCall(anvil.rpcUrl, 'evm_setAutomine', [true])

      const journal = await sqlTxJournal(database)
      expect((await journal.get(key))?.status).toBe('pending')
      const log = recordingLogger()
      const m = txManager({
        rpcUrls: [anvil.rpcUrl],
        chainId: CHAIN_ID,
        account: privateKeyToAccount(privateKey),
        journal,
        confirmations: 3,
        pollIntervalMs: 50,
        resubmitAfterMs: 60_000,
        log,
      })
      const miner = backgroundMiner(anvil.rpcUrl, 100)
      try {
        await m.recover()
        expect(log.lines.some((l) => l.msg === 'resuming journaled intent')).toBe(true)
        const res = await m.send({ key, to: SINK, data: '0x', value: 1n })
        expect(res.txHash).toBe(hash)
        expect(res.nonce).toBe(before)
        expect(res.attempts).toBe(1)
        expect(await nonceOf(address)).toBe(before + 1)
        expect((await journal.get(key))?.status).toBe('confirmed')
        // The next intent takes the next nonce: nothing skipped, nothing reused.
        const next = await m.send({ key: `${key}:next`, to: SINK, data: '0x', value: 1n })
        expect(next.nonce).toBe(before + 1)
        expect(await nonceOf(address)).toBe(before + 2)
      } finally {
        await miner.stop()
        await m.close()
      }
    })
  }
})
