import { mkdtemp, rm } from 'node:fs/promises'
import { createServer } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Hex } from 'viem'
import { privateKeyToAddress } from 'viem/accounts'
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest'
import { fsArtifacts } from '../artifacts/fs/fs-artifacts.js'
import type { ArtifactStore } from '../artifacts/types.js'
import type { BlockMessage } from '../core/types.js'
import { l2ToL1MessagePasserDeployedBytecode } from '../contracts/bytecode.js'
import { freePort } from '../core/net.js'
import { ANVIL_DEV_KEYS, assemble, BURNER_INITCODE, BURNER_RUNTIME, burnerCalldata, installMessagePasser, startLoad } from './load.js'
import { memorySink, startTestAnvil, waitFor, type TestAnvil } from './test-anvil.js'
import { MESSAGE_PASSER_ADDRESS, readBlockTrace } from './traces.js'
import { l2Watcher } from './watcher.js'

/** The root of an empty Merkle-Patricia trie: a storage root that says "no storage". */
const EMPTY_TRIE_ROOT = '0x56e81f171bcc55a6ff8345e692c0f86e5b48e01b996cadc001622fb5e363b421'
const DEV0 = '0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266'

let dir: string
let artifacts: ArtifactStore
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'proofline-load-'))
  artifacts = fsArtifacts({ dir })
})
afterAll(async () => {
  await artifacts.close()
  await rm(dir, { recursive: true, force: true })
})

async function anvil(): Promise<TestAnvil> {
  const a = await startTestAnvil()
  onTestFinished(() => a.stop())
  return a
}

type Receipt = { gasUsed: Hex; status: Hex; contractAddress: Hex | null }

/** Waits for a receipt (anvil's automine mines in the background). */
async function receiptOf(a: TestAnvil, hash: Hex): Promise<Receipt> {
  let r: Receipt | null = null
  await waitFor(async () => (r = (await a.call('eth_getTransactionReceipt', [hash])) as Receipt | null) !== null, 5_000, 'the receipt')
  return r as unknown as Receipt
}

describe('burner bytecode', () => {
  it('behavior: the assembler resolves labels and the runtime is the commented program', () => {
    // PUSH1 0 CALLDATALOAD PUSH1 ff AND | loop(6): JUMPDEST DUP1 ISZERO PUSH1 end JUMPI GAS DUP2 SSTORE
    // PUSH1 1 SWAP1 SUB PUSH1 loop JUMP | end(0x16): JUMPDEST STOP
    expect(BURNER_RUNTIME).toBe('0x' + '600035' + '60ff16' + '5b' + '8015' + '6016' + '57' + '5a8155' + '6001' + '9003' + '6006' + '56' + '5b00')
    expect(BURNER_INITCODE).toBe('0x' + '6018' + '80' + '600b' + '6000' + '39' + '6000' + 'f3' + BURNER_RUNTIME.slice(2))
    expect(() => assemble(['PUSH1 @nowhere'])).toThrow(/bad PUSH1/)
    expect(() => assemble(['BLOBHASH'])).toThrow(/unknown opcode/)
  })

  it('behavior: deployed on anvil, a call writing n slots costs ~n SSTOREs and leaves the slots set', async () => {
    const a = await anvil()
    const deploy = (await a.call('eth_sendTransaction', [{ from: DEV0, data: BURNER_INITCODE }])) as Hex
    const burner = (await receiptOf(a, deploy)).contractAddress as Hex
    expect(await a.call('eth_getCode', [burner, 'latest'])).toBe(BURNER_RUNTIME)
    const gasFor = async (n: number): Promise<number> => {
      const tx = (await a.call('eth_sendTransaction', [{ from: DEV0, to: burner, data: burnerCalldata(n), gas: '0x2dc6c0' }])) as Hex
      const r = await receiptOf(a, tx)
      expect(r.status).toBe('0x1')
      return Number(BigInt(r.gasUsed))
    }
    const g1 = await gasFor(1)
    const g20 = await gasFor(20)
    expect(g20 - g1).toBeGreaterThan(19 * 20_000)
    for (const slot of [1, 20]) expect(BigInt((await a.call('eth_getStorageAt', [burner, `0x${slot.toString(16)}`, 'latest'])) as Hex)).toBeGreaterThan(0n)
    expect(BigInt((await a.call('eth_getStorageAt', [burner, '0x15', 'latest'])) as Hex)).toBe(0n)
  })
})

describe('installMessagePasser', () => {
  it('behavior: places the message passer at the predeploy address, idempotently', async () => {
    const a = await anvil()
    expect(await a.call('eth_getCode', [MESSAGE_PASSER_ADDRESS, 'latest'])).toBe('0x')
    expect(await installMessagePasser(a.rpc)).toBe(MESSAGE_PASSER_ADDRESS)
    expect(await installMessagePasser(a.rpc)).toBe(MESSAGE_PASSER_ADDRESS)
    expect(await a.call('eth_getCode', [MESSAGE_PASSER_ADDRESS, 'latest'])).toBe(l2ToL1MessagePasserDeployedBytecode)
  })
})

describe('startLoad on anvil', () => {
  it('behavior: done resolves only once the node answered every call of the load, so a reorg sent next never overlaps its last evm_mine', async () => {
    const a = await anvil()
    // A proxy that makes evm_mine slow (200 ms) and counts the calls the node has not answered yet.
    let inFlight = 0
    let minesInFlight = 0
    const port = await freePort()
    const server = createServer((req, res) => {
      const chunks: Buffer[] = []
      req.on('data', (c: Buffer) => chunks.push(c))
      req.on('end', () => {
        const body = Buffer.concat(chunks).toString()
        const mine = body.includes('"evm_mine"')
        inFlight++
        if (mine) minesInFlight++
        setTimeout(() => {
          void fetch(a.url, { method: 'POST', headers: { 'content-type': 'application/json' }, body })
            .then((r) => r.text())
            .then((text) => {
              inFlight--
              if (mine) minesInFlight--
              res.end(text)
            })
        }, mine ? 200 : 0)
      })
    })
    await new Promise<void>((r) => server.listen(port, '127.0.0.1', () => r()))
    onTestFinished(() => {
      server.closeAllConnections()
      server.close()
    })
    const abort = new AbortController()
    onTestFinished(() => abort.abort())
    const load = await startLoad({ rpcUrl: `http://127.0.0.1:${port}`, privateKeys: ANVIL_DEV_KEYS.slice(1, 2), txPerBlock: 1, blockIntervalMs: 0, seed: 3, signal: abort.signal })
    await waitFor(() => minesInFlight > 0, 10_000)
    abort.abort()
    await load.done
    expect(inFlight).toBe(0)
  })

  it('behavior: txPerBlock mixes transfers, burner calls and withdrawals; the predeploy storage root changes across blocks; automine is restored', async () => {
    const a = await anvil()
    await installMessagePasser(a.rpc)
    const abort = new AbortController()
    onTestFinished(() => abort.abort())
    const load = await startLoad({ rpcUrl: a.url, privateKeys: ANVIL_DEV_KEYS.slice(0, 3), txPerBlock: 8, blockIntervalMs: 10, seed: 42, signal: abort.signal })
    const sink = memorySink()
    const w = l2Watcher({
      client: a.rpc,
      artifacts,
      sink,
      safety: { kind: 'latest', confirmations: 0 },
      startBlock: 2, // block 1 holds the burner deployment
      untilBlock: 13,
      pollIntervalMs: 20,
      cost: { base: 0, perGas: 1, perTx: 0 },
      log: { info() {}, warn() {}, error() {} },
    })
    onTestFinished(() => w.stop())
    w.start()
    await w.finished
    abort.abort()
    const stats = await load.done
    expect(stats.failed).toBe(0)
    expect(stats.blocksMined).toBeGreaterThanOrEqual(12)
    expect(stats.byKind.transfer).toBeGreaterThan(0)
    expect(stats.byKind.call).toBeGreaterThan(0)
    expect(stats.byKind.withdrawal).toBeGreaterThan(0)
    expect(await a.call('anvil_getAutomine')).toBe(true)

    const blocks = sink.emitted()
    expect(blocks.map((b) => b.number)).toEqual([2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13])
    expect(blocks.every((b) => b.txCount === 8)).toBe(true)
    expect(new Set(blocks.map((b) => b.gasUsed)).size).toBeGreaterThan(6) // varied gas
    const roots: Hex[] = []
    for (const b of blocks) roots.push((await readBlockTrace(artifacts, b.trace as NonNullable<BlockMessage['trace']>)).messagePasser.storageHash)
    expect(roots.at(-1)).not.toBe(EMPTY_TRIE_ROOT)
    expect(new Set(roots).size).toBeGreaterThan(6)
    const nonce = BigInt((await a.call('eth_getStorageAt', [MESSAGE_PASSER_ADDRESS, '0x1', 'latest'])) as Hex)
    expect(nonce).toBeGreaterThanOrEqual(BigInt(stats.byKind.withdrawal))
  })

  it('behavior: txPerSecond sends at the rate and leaves mining to the node (automine: one block per tx)', async () => {
    const a = await anvil()
    await installMessagePasser(a.rpc)
    const abort = new AbortController()
    onTestFinished(() => abort.abort())
    const before = Number(BigInt((await a.call('eth_blockNumber')) as Hex))
    const t0 = Date.now()
    const load = await startLoad({ rpcUrl: a.url, privateKeys: ANVIL_DEV_KEYS.slice(0, 2), txPerSecond: 40, seed: 7, signal: abort.signal })
    await waitFor(() => load.stats().sent >= 20, 10_000, '20 transactions')
    const elapsedMs = Date.now() - t0
    abort.abort()
    const stats = await load.done
    expect(stats.failed).toBe(0)
    expect(stats.blocksMined).toBe(0)
    expect(elapsedMs).toBeGreaterThanOrEqual(19 * 25 - 50) // paced at 40/s, not a burst
    // Every transaction (and the burner deployment) was mined by the node's automine.
    const mined = async (): Promise<number> => {
      let n = 0
      for (const key of ANVIL_DEV_KEYS.slice(0, 2)) n += Number(BigInt((await a.call('eth_getTransactionCount', [privateKeyToAddress(key), 'latest'])) as Hex))
      return n
    }
    await waitFor(async () => (await mined()) === stats.sent + 1, 5_000, 'all transactions mined')
    expect(Number(BigInt((await a.call('eth_blockNumber')) as Hex))).toBeGreaterThan(before + 10)
  })

  it('behavior: options are checked', async () => {
    const signal = new AbortController().signal
    await expect(startLoad({ rpcUrl: 'http://127.0.0.1:1', privateKeys: ANVIL_DEV_KEYS, seed: 1, signal })).rejects.toThrow(/exactly one/)
    await expect(startLoad({ rpcUrl: 'http://127.0.0.1:1', privateKeys: [], txPerSecond: 1, seed: 1, signal })).rejects.toThrow(/empty/)
  })
})
