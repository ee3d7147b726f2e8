import { createPublicClient, custom, encodeAbiParameters, hexToBytes, keccak256, parseEther, type Client, type Hex } from 'viem'
import { getStorageAt } from 'viem/actions'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { l2ToL1MessagePasserAbi } from '../contracts/abis.js'
import { startAnvil, type AnvilInstance } from './anvil.js'
import { installDevMessagePasser } from './deploy.js'
import { devClients, type DevClients } from './deploy.fixture.js'
import { EMPTY_STORAGE_ROOT, L2_TO_L1_MESSAGE_PASSER, outputRootAt, outputRootV0, type OutputV0 } from './output-root.js'

/** Independent of outputRootV0: lays the 128 bytes out by hand, then hashes. */
function handAssembled(o: OutputV0): Hex {
  const buf = new Uint8Array(128) // bytes 0..31 stay zero: version 0
  buf.set(hexToBytes(o.stateRoot), 32)
  buf.set(hexToBytes(o.messagePasserStorageRoot), 64)
  buf.set(hexToBytes(o.blockHash), 96)
  return keccak256(buf)
}

describe('outputRootV0', () => {
  it('behavior: matches the published op-node vector', () => {
    // From ethereum-optimism/optimism, op-node/node/server_test.go (TestOutputAtBlock,
    // commit cb9b4ecbf6d0a2e0b7385c444eeca69d72a2c786): op-node's optimism_outputAtBlock
    // returns this outputRoot for these three inputs. (Its inputs are an Ethereum mainnet header,
    // block 0xdcdc89, and the eth2 deposit contract's storage hash; the hashing is OP's v0.)
    const output: OutputV0 = {
      stateRoot: '0xb46d4bcb0e471e1b8506031a1f34ebc6f200253cbaba56246dd2320e8e2c8f13',
      messagePasserStorageRoot: '0xc1917a80cb25ccc50d0d1921525a44fb619b4601194ca726ae32312f08a799f8',
      blockHash: '0x8512bee03061475e4b069171f7b406097184f16b22c3f5c97c0abfc49591c524',
    }
    expect(outputRootV0(output)).toBe('0xc861dbdc5bf1d8bbbc0bca7cd876ab6a70748c50b2054a46e8f30e99002170ab')
    expect(handAssembled(output)).toBe('0xc861dbdc5bf1d8bbbc0bca7cd876ab6a70748c50b2054a46e8f30e99002170ab')
  })

  it('behavior: every part and its position matter; wrong-size parts are refused', () => {
    const a = keccak256('0x01')
    const b = keccak256('0x02')
    const c = keccak256('0x03')
    const base = outputRootV0({ stateRoot: a, messagePasserStorageRoot: b, blockHash: c })
    expect(base).toBe(handAssembled({ stateRoot: a, messagePasserStorageRoot: b, blockHash: c }))
    expect(outputRootV0({ stateRoot: b, messagePasserStorageRoot: a, blockHash: c })).not.toBe(base)
    expect(outputRootV0({ stateRoot: a, messagePasserStorageRoot: c, blockHash: b })).not.toBe(base)
    expect(() => outputRootV0({ stateRoot: '0x1234', messagePasserStorageRoot: b, blockHash: c })).toThrow(/32 bytes/)
  })
})

describe('outputRootAt on anvil', () => {
  let anvil: AnvilInstance
  let dev: DevClients

  beforeAll(async () => {
    anvil = await startAnvil({ chainId: 901 })
    dev = devClients(anvil.rpcUrl, 901)
  })
  afterAll(async () => {
    await anvil?.stop()
  })

  async function rpc<T>(method: string, params: unknown[]): Promise<T> {
    const res = await fetch(anvil.rpcUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method, params }),
    })
    return ((await res.json()) as { result: T }).result
  }

  /** The output root from raw JSON-RPC answers, hashed by hand. */
  async function expected(blockNumber: bigint): Promise<Hex> {
    const tag = `0x${blockNumber.toString(16)}`
    const block = await rpc<{ stateRoot: Hex; hash: Hex }>('eth_getBlockByNumber', [tag, false])
    const proof = await rpc<{ storageHash: Hex }>('eth_getProof', [L2_TO_L1_MESSAGE_PASSER, [], tag])
    return handAssembled({ stateRoot: block.stateRoot, messagePasserStorageRoot: proof.storageHash, blockHash: block.hash })
  }

  it('behavior: withdrawals through the predeploy fill its storage, and the output root matches the formula', async () => {
    // anvil's genesis header carries the empty-trie root instead of its real state root, so the
    // account proof cannot check out there; it says so, and can be told to trust the node.
    await expect(outputRootAt(dev.publicClient, 0n)).rejects.toMatchObject({ code: 'OUTPUT_PROOF_INVALID', message: expect.stringMatching(/genesis/) })
    expect((await outputRootAt(dev.publicClient, 0n, { verifyAccountProof: false })).outputRoot).toBe(await expected(0n))
    // In a mined block, before the predeploy exists, its account is absent: an exclusion proof.
    await rpc('evm_mine', [])
    const absent = await outputRootAt(dev.publicClient, 1n)
    expect(absent.messagePasserStorageRoot).toBe(EMPTY_STORAGE_ROOT)
    expect(absent.outputRoot).toBe(await expected(1n))

    await installDevMessagePasser(dev.publicClient)
    await rpc('evm_mine', [])
    const before = await dev.publicClient.getBlockNumber()
    const emptyOutput = await outputRootAt(dev.publicClient, before)
    expect(emptyOutput.messagePasserStorageRoot).toBe(EMPTY_STORAGE_ROOT)
    expect(emptyOutput.outputRoot).toBe(await expected(before))

    const wallet = dev.wallet(0)
    const sender = wallet.account.address
    const target = dev.wallet(1).account.address
    const tx = await wallet.writeContract({
      address: L2_TO_L1_MESSAGE_PASSER,
      abi: l2ToL1MessagePasserAbi,
      functionName: 'initiateWithdrawal',
      args: [target, 100_000n, '0xabcd'],
      value: parseEther('0.5'),
      chain: dev.chain,
    })
    const receipt = await dev.publicClient.waitForTransactionReceipt({ hash: tx })
    expect(receipt.status).toBe('success')

    const out = await outputRootAt(dev.publicClient, receipt.blockNumber)
    expect(out.messagePasserStorageRoot).not.toBe(EMPTY_STORAGE_ROOT)
    expect(out.outputRoot).toBe(await expected(receipt.blockNumber))
    expect(out.blockHash).toBe(receipt.blockHash)
    expect(out.outputRoot).not.toBe(emptyOutput.outputRoot)

    // OP's storage layout: the withdrawal hash (OP's Hashing.hashWithdrawal) is a key of the
    // mapping in slot 0, so OP's withdrawal-proving tools find it at keccak256(hash ‖ 0).
    const nonce = 1n << 240n
    const withdrawalHash = keccak256(
      encodeAbiParameters(
        [{ type: 'uint256' }, { type: 'address' }, { type: 'address' }, { type: 'uint256' }, { type: 'uint256' }, { type: 'bytes' }],
        [nonce, sender, target, parseEther('0.5'), 100_000n, '0xabcd'],
      ),
    )
    const slot = keccak256(encodeAbiParameters([{ type: 'bytes32' }, { type: 'uint256' }], [withdrawalHash, 0n]))
    const stored = await getStorageAt(dev.publicClient, { address: L2_TO_L1_MESSAGE_PASSER, slot })
    expect(BigInt(stored ?? '0x0')).toBe(1n)
  })

  it('behavior: a storage root or account proof that does not match the state root is refused (OUTPUT_PROOF_INVALID)', async () => {
    const n = await dev.publicClient.getBlockNumber()
    expect((await outputRootAt(dev.publicClient, n)).messagePasserStorageRoot).not.toBe(EMPTY_STORAGE_ROOT)
    const lying = (edit: (proof: { storageHash: Hex; accountProof: Hex[] }) => void) =>
      createPublicClient({
        transport: custom({
          request: async ({ method, params }: { method: string; params?: unknown }) => {
            const result = await rpc<unknown>(method, (params ?? []) as unknown[])
            if (method === 'eth_getProof') edit(result as { storageHash: Hex; accountProof: Hex[] })
            return result
          },
        }),
      })
    const wrongRoot = lying((p) => {
      p.storageHash = EMPTY_STORAGE_ROOT
    })
    await expect(outputRootAt(wrongRoot, n)).rejects.toMatchObject({ code: 'OUTPUT_PROOF_INVALID', retryable: false })
    const wrongNode = lying((p) => {
      const last = p.accountProof.length - 1
      p.accountProof[last] = `${p.accountProof[last]!.slice(0, -2)}00` as Hex
    })
    await expect(outputRootAt(wrongNode, n)).rejects.toMatchObject({ code: 'OUTPUT_PROOF_INVALID' })
    const truncated = lying((p) => {
      p.accountProof.pop()
    })
    await expect(outputRootAt(truncated, n)).rejects.toMatchObject({ code: 'OUTPUT_PROOF_INVALID' })
    // An honest proxy passes.
    expect((await outputRootAt(lying(() => undefined), n)).outputRoot).toBe(await expected(n))
  })

  it('behavior: a block that does not exist is a retryable OUTPUT_BLOCK_NOT_FOUND', async () => {
    const err = await outputRootAt(dev.publicClient, 10_000_000n).catch((e: unknown) => e)
    expect(err).toMatchObject({ code: 'OUTPUT_BLOCK_NOT_FOUND', retryable: true })
    expect((err as Error).message).toContain('does not exist on the L2 node')
  })

  it('behavior: a node that does not answer is a retryable OUTPUT_BLOCK_NOT_FOUND that says why, not a missing block', async () => {
    const silent = { request: () => Promise.reject(Object.assign(new Error('The request took too long to respond.\n\nURL: http://user:secret@l2:8545'), { shortMessage: 'The request took too long to respond.' })) } as unknown as Client
    const err = await outputRootAt(silent, 7n).catch((e: unknown) => e)
    expect(err).toMatchObject({ code: 'OUTPUT_BLOCK_NOT_FOUND', retryable: true })
    expect((err as Error).message).toContain('could not be read (eth_getBlockByNumber failed: The request took too long to respond.)')
    expect((err as Error).message).not.toContain('secret')
  })
})
