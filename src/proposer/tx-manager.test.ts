import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { parseTransaction, type Address, type Hex } from 'viem'
import { privateKeyToAccount } from 'viem/accounts'
import { startAnvil, type AnvilInstance } from '../chain/anvil.js'
import { freePort } from '../chain/test-anvil.js'
import { memoryTxJournal, type TxJournal } from './journal.js'
import { ANVIL_KEYS, backgroundMiner, recordingLogger, rpcCall, until } from './test-chain.js'
import { txManager, TxError, type TxManager, type TxManagerOptions } from './tx-manager.js'

const CHAIN_ID = 31337
const SINK = '0x000000000000000000000000000000000000dEaD' as Address

let anvil: AnvilInstance
beforeAll(async () => {
  anvil = await startAnvil({ chainId: CHAIN_ID })
})
afterAll(async () => {
  await anvil.stop()
})

const cleanups: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
  await rpcCall(anvil.rpcUrl, 'evm_setAutomine', [true])
})

/** A manager on its own dev account (each test its own, so nonces never interfere). */
function manager(keyIndex: number, opts: Partial<TxManagerOptions> = {}): { m: TxManager; journal: TxJournal; address: Address; log: ReturnType<typeof recordingLogger> } {
  const key = ANVIL_KEYS[keyIndex]
  if (key === undefined) throw new Error(`no anvil key ${keyIndex}`)
  const account = privateKeyToAccount(key)
  const journal = opts.journal ?? memoryTxJournal()
  const log = recordingLogger()
  const m = txManager({
    rpcUrls: [anvil.rpcUrl],
    chainId: CHAIN_ID,
    account,
    journal,
    confirmations: 3,
    pollIntervalMs: 50,
    resubmitAfterMs: 1_000,
    log,
    ...opts,
  })
  cleanups.push(() => m.close())
  return { m, journal, address: account.address, log }
}

const nonceOf = async (address: Address): Promise<number> => Number(BigInt(await rpcCall<Hex>(anvil.rpcUrl, 'eth_getTransactionCount', [address, 'latest'])))
const headOf = async (): Promise<bigint> => BigInt(await rpcCall<Hex>(anvil.rpcUrl, 'eth_blockNumber'))

describe('txManager options', () => {
  it('behavior: a fee bump below 10%, no RPC URL or zero confirmations is refused at construction', () => {
    const base = { rpcUrls: ['http://127.0.0.1:1'], chainId: 1, account: privateKeyToAccount(ANVIL_KEYS[0] ?? '0x'), journal: memoryTxJournal() }
    expect(() => txManager({ ...base, feeBumpPercent: 9.9 })).toThrow(/feeBumpPercent must be >= 10/)
    expect(() => txManager({ ...base, rpcUrls: [] })).toThrow(TxError)
    expect(() => txManager({ ...base, confirmations: 0 })).toThrow(/confirmations/)
  })

  it('behavior: close rejects later sends with TX_MANAGER_CLOSED', async () => {
    const m = txManager({ rpcUrls: ['http://127.0.0.1:1'], chainId: 1, account: privateKeyToAccount(ANVIL_KEYS[0] ?? '0x'), journal: memoryTxJournal() })
    await m.close()
    await expect(m.send({ key: 'k', to: SINK, data: '0x' })).rejects.toMatchObject({ code: 'TX_MANAGER_CLOSED' })
  })
})

describe('txManager on anvil', () => {
  it('behavior: a send is mined at once but resolves only after `confirmations` blocks', async () => {
    const { m, address } = manager(0)
    const before = await nonceOf(address)
    let settled = false
    const sent = m.send({ key: 'confirm-1', to: SINK, data: '0x', value: 1n })
    void sent.then(() => (settled = true), () => (settled = true))
    await until('the transaction is mined', async () => (await nonceOf(address)) === before + 1)
    await new Promise((r) => setTimeout(r, 400))
    expect(settled).toBe(false)
    await rpcCall(anvil.rpcUrl, 'evm_mine')
    await new Promise((r) => setTimeout(r, 300))
    expect(settled).toBe(false)
    await rpcCall(anvil.rpcUrl, 'evm_mine')
    const res = await sent
    expect(res.nonce).toBe(before)
    expect(res.attempts).toBe(1)
    expect((await headOf()) - res.blockNumber + 1n).toBeGreaterThanOrEqual(3n)
    expect(res.gasUsed).toBe(21_000n)
    const receipt = await rpcCall<{ blockHash: Hex; transactionHash: Hex }>(anvil.rpcUrl, 'eth_getTransactionReceipt', [res.txHash])
    expect(receipt.blockHash).toBe(res.blockHash)
    // The same key again returns the journaled receipt and sends nothing.
    const again = await m.send({ key: 'confirm-1', to: SINK, data: '0x', value: 1n })
    expect(again).toEqual(res)
    expect(await nonceOf(address)).toBe(before + 1)
  })

  it('behavior: the same key with a different call is refused, not sent', async () => {
    const { m } = manager(0, { confirmations: 1 })
    await m.send({ key: 'mismatch', to: SINK, data: '0x', value: 2n })
    await expect(m.send({ key: 'mismatch', to: SINK, data: '0x', value: 3n })).rejects.toMatchObject({ code: 'TX_INTENT_MISMATCH' })
  })

  it('behavior: a stuck underpriced tx is replaced by a fee bump on the same nonce and the replacement is mined', async () => {
    const { m, journal, address, log } = manager(1, { confirmations: 2, resubmitAfterMs: 800 })
    await rpcCall(anvil.rpcUrl, 'evm_setAutomine', [false])
    const nonce = await nonceOf(address)
    const sent = m.send({ key: 'stuck-1', to: SINK, data: '0x', value: 1n })
    await until('the first attempt is in the pool', async () => {
      const first = (await journal.get('stuck-1'))?.attempts[0]
      return first !== undefined && (await rpcCall(anvil.rpcUrl, 'eth_getTransactionByHash', [first.hash])) !== null
    })
    const first = (await journal.get('stuck-1'))?.attempts[0]
    if (first === undefined) throw new Error('unreachable')
    // The next block's base fee is far above the first attempt's max fee: it cannot be included.
    const high = first.maxFeePerGas * 20n
    await rpcCall(anvil.rpcUrl, 'anvil_setNextBlockBaseFeePerGas', [`0x${high.toString(16)}`])
    await rpcCall(anvil.rpcUrl, 'evm_mine')
    expect(await rpcCall(anvil.rpcUrl, 'eth_getTransactionReceipt', [first.hash])).toBeNull()
    const miner = backgroundMiner(anvil.rpcUrl, 150)
    cleanups.push(() => miner.stop())
    const res = await sent
    await miner.stop()

    expect(res.attempts).toBeGreaterThan(1)
    expect(res.nonce).toBe(nonce)
    expect(res.txHash).not.toBe(first.hash)
    const mined = await rpcCall<{ nonce: Hex; maxFeePerGas: Hex; maxPriorityFeePerGas: Hex }>(anvil.rpcUrl, 'eth_getTransactionByHash', [res.txHash])
    expect(Number(BigInt(mined.nonce))).toBe(nonce)
    expect(BigInt(mined.maxFeePerGas)).toBeGreaterThan(first.maxFeePerGas)
    expect(BigInt(mined.maxPriorityFeePerGas)).toBeGreaterThan(first.maxPriorityFeePerGas)
    // Every signed replacement kept the nonce and raised both fees by at least 10%.
    const attempts = (await journal.get('stuck-1'))?.attempts ?? []
    for (let i = 1; i < attempts.length; i++) {
      const [prev, cur] = [attempts[i - 1], attempts[i]]
      if (prev === undefined || cur === undefined) throw new Error('unreachable')
      expect(cur.nonce).toBe(nonce)
      expect(parseTransaction(cur.raw).nonce).toBe(nonce)
      expect(cur.maxFeePerGas * 100n).toBeGreaterThanOrEqual(prev.maxFeePerGas * 110n)
      expect(cur.maxPriorityFeePerGas * 100n).toBeGreaterThanOrEqual(prev.maxPriorityFeePerGas * 110n)
    }
    expect(log.lines.some((l) => l.msg === 'fee bump')).toBe(true)
    expect(await nonceOf(address)).toBe(nonce + 1)
  })

  it('behavior: an L1 reorg that drops the mined tx makes the manager re-broadcast it, and it confirms', async () => {
    const { m, journal, address, log } = manager(2, { confirmations: 3 })
    await rpcCall(anvil.rpcUrl, 'evm_setAutomine', [false])
    const nonce = await nonceOf(address)
    const sent = m.send({ key: 'reorg-1', to: SINK, data: '0x', value: 1n })
    await until('the tx is in the pool', async () => {
      const first = (await journal.get('reorg-1'))?.attempts[0]
      return first !== undefined && (await rpcCall(anvil.rpcUrl, 'eth_getTransactionByHash', [first.hash])) !== null
    })
    const hash = (await journal.get('reorg-1'))?.attempts[0]?.hash
    const snapshot = await rpcCall<Hex>(anvil.rpcUrl, 'evm_snapshot')
    await rpcCall(anvil.rpcUrl, 'evm_mine')
    const minedIn = (await rpcCall<{ blockHash: Hex }>(anvil.rpcUrl, 'eth_getTransactionReceipt', [hash])).blockHash
    await until('the manager saw it mined', () => log.lines.some((l) => l.msg === 'transaction mined'))
    // The reorg: back to before the block; anvil's pool does not keep the tx.
    await rpcCall(anvil.rpcUrl, 'evm_revert', [snapshot])
    expect(await rpcCall(anvil.rpcUrl, 'eth_getTransactionReceipt', [hash])).toBeNull()
    await until('the manager noticed the reorg', () => log.lines.some((l) => l.msg.startsWith('L1 reorg dropped')))
    await until('the tx is back in the pool', async () => (await rpcCall(anvil.rpcUrl, 'eth_getTransactionByHash', [hash])) !== null)
    const miner = backgroundMiner(anvil.rpcUrl, 100)
    cleanups.push(() => miner.stop())
    const res = await sent
    await miner.stop()
    expect(res.txHash).toBe(hash)
    expect(res.nonce).toBe(nonce)
    expect(res.blockHash).not.toBe(minedIn)
    const receipt = await rpcCall<{ blockHash: Hex }>(anvil.rpcUrl, 'eth_getTransactionReceipt', [hash])
    expect(receipt.blockHash).toBe(res.blockHash)
    expect(await nonceOf(address)).toBe(nonce + 1)
  })

  it('behavior: with the first of two RPC URLs dead, sends still confirm through the second', async () => {
    const dead = `http://127.0.0.1:${await freePort()}`
    const { m, address } = manager(3, { rpcUrls: [dead, anvil.rpcUrl], confirmations: 1 })
    const before = await nonceOf(address)
    const a = await m.send({ key: 'failover-1', to: SINK, data: '0x', value: 1n })
    const b = await m.send({ key: 'failover-2', to: SINK, data: '0x', value: 1n })
    expect([a.nonce, b.nonce]).toEqual([before, before + 1])
    expect(await nonceOf(address)).toBe(before + 2)
  })

  it('behavior: a call that would revert is refused before anything is journaled', async () => {
    // A contract whose code is `revert(0, 0)`.
    const reverter = '0x00000000000000000000000000000000000bad01' as Address
    await rpcCall(anvil.rpcUrl, 'anvil_setCode', [reverter, '0x60006000fd'])
    const { m, journal } = manager(4, { confirmations: 1 })
    const err = await m.send({ key: 'revert-1', to: reverter, data: '0x01' }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(TxError)
    expect((err as TxError).code).toBe('TX_WOULD_REVERT')
    expect(await journal.get('revert-1')).toBeUndefined()
  })

  it('behavior: a tx mined but reverted is final: TX_REVERTED now and on every later send of the key', async () => {
    const reverter = '0x00000000000000000000000000000000000bad02' as Address
    await rpcCall(anvil.rpcUrl, 'anvil_setCode', [reverter, '0x60006000fd'])
    const { m, journal, address } = manager(4, { confirmations: 1 })
    const before = await nonceOf(address)
    // An explicit gas skips estimation, so the revert happens on chain.
    await expect(m.send({ key: 'revert-2', to: reverter, data: '0x01', gas: 50_000n })).rejects.toMatchObject({ code: 'TX_REVERTED' })
    expect((await journal.get('revert-2'))?.status).toBe('reverted')
    await expect(m.send({ key: 'revert-2', to: reverter, data: '0x01', gas: 50_000n })).rejects.toMatchObject({ code: 'TX_REVERTED' })
    expect(await nonceOf(address)).toBe(before + 1)
  })

  it('behavior: the wrong chain id is refused before signing', async () => {
    const { m, journal } = manager(5, { chainId: 1 })
    await expect(m.send({ key: 'chain-1', to: SINK, data: '0x' })).rejects.toMatchObject({ code: 'TX_WRONG_CHAIN' })
    expect(await journal.get('chain-1')).toBeUndefined()
  })

  it('behavior: a nonce taken by a transaction the journal does not know moves the intent to a new nonce (no skip)', async () => {
    const key = ANVIL_KEYS[5]
    if (key === undefined) throw new Error('unreachable')
    const account = privateKeyToAccount(key)
    const { m, journal, log } = manager(5, { confirmations: 2 })
    await rpcCall(anvil.rpcUrl, 'evm_setAutomine', [false])
    const nonce = await nonceOf(account.address)
    // Journal an intent on `nonce` but make a foreign tx with more gas win the nonce.
    const sent = m.send({ key: 'foreign-1', to: SINK, data: '0x', value: 1n })
    await until('journaled', async () => (await journal.get('foreign-1')) !== undefined)
    const ours = (await journal.get('foreign-1'))?.attempts[0]
    if (ours === undefined) throw new Error('unreachable')
    const foreign = await account.signTransaction({
      type: 'eip1559', chainId: CHAIN_ID, nonce, to: SINK, value: 7n, gas: 21_000n,
      maxFeePerGas: ours.maxFeePerGas * 2n, maxPriorityFeePerGas: ours.maxPriorityFeePerGas * 2n,
    })
    await until('ours is in the pool', async () => (await rpcCall(anvil.rpcUrl, 'eth_getTransactionByHash', [ours.hash])) !== null)
    await rpcCall(anvil.rpcUrl, 'eth_sendRawTransaction', [foreign])
    const miner = backgroundMiner(anvil.rpcUrl, 100)
    cleanups.push(() => miner.stop())
    const res = await sent
    await miner.stop()
    expect(res.nonce).toBe(nonce + 1)
    expect(log.lines.some((l) => l.msg.includes('intent moved to a new nonce'))).toBe(true)
    expect(await nonceOf(account.address)).toBe(nonce + 2)
  })
})
