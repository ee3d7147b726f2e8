import { createHash } from 'node:crypto'
import { existsSync } from 'node:fs'
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { createPublicClient, http, keccak256, stringToHex, type Hex } from 'viem'
import { withCacheLock } from '../backends/crs/cache-lock.js'
import { DEV_L2_CHAIN_ID, startAnvil } from '../chain/anvil.js'
import { fetchBlockTrace, fetchOutputRootInputs, httpChainRpc, outputRootInputs, parseRpcBlock, rpcRequest, type BlockTraceArtifact } from '../chain/traces.js'
import { installDevMessagePasser } from '../chain/deploy.js'
import { L2_TO_L1_MESSAGE_PASSER } from '../chain/output-root.js'

/**
 * Real L2 blocks for proving tests and the prover benchmark (a labelled dev tool): a fresh dev
 * L2 (anvil) mines `count` blocks with a value transfer and a message-passer withdrawal each,
 * and they are read back as the watcher's trace artifacts (with each first block's parent
 * output-root inputs). The set is cached as JSON under `<cacheDir>/fixtures/` so proofs made
 * from it can be cached too (see proof-set.ts): anvil stamps blocks with the wall clock, so a new
 * chain never gives the same blocks twice.
 */

/** A cached set of consecutive dev L2 blocks. */
export interface DevBlocks {
  format: 'proofline/dev-blocks@1'
  chainId: number
  /** The chain config hash `proofline up` uses for this chain id. */
  chainConfigHash: Hex
  /** Consecutive blocks, each with `parentOutput` set. */
  blocks: BlockTraceArtifact[]
  /** sha256 of the canonical blocks (a proof set's cache key). */
  sha256: string
}

/** The chain config hash `proofline up` binds for a dev L2 (src/cli/up.ts). */
export function devChainConfigHash(chainId: number): Hex {
  return keccak256(stringToHex(`proofline-dev-l2:${chainId}`))
}

/** Mines `count` blocks on a fresh dev L2 and returns them as trace artifacts (not cached). */
export async function mineDevBlocks(count: number, opts: { signal?: AbortSignal } = {}): Promise<DevBlocks> {
  if (!Number.isSafeInteger(count) || count < 1) throw new RangeError(`block count must be a positive integer (got ${count})`)
  const anvil = await startAnvil({ chainId: DEV_L2_CHAIN_ID, ...(opts.signal ? { signal: opts.signal } : {}) })
  try {
    const rpc = httpChainRpc(anvil.rpcUrl, { timeoutMs: 10_000 })
    const client = createPublicClient({ transport: http(anvil.rpcUrl) })
    await installDevMessagePasser(client)
    const accounts = (await rpcRequest(rpc, 'eth_accounts', [])) as Hex[]
    const from = accounts[0] as Hex
    const to = accounts[1] as Hex
    // Block 1 (the message passer's code is set at block 0's state, so start from a mined block).
    await rpcRequest(rpc, 'evm_mine', [])
    const blocks: BlockTraceArtifact[] = []
    for (let i = 0; i < count; i++) {
      // Two transactions per block: a transfer and a withdrawal (changes the message-passer storage root).
      await rpcRequest(rpc, 'evm_setAutomine', [false])
      await rpcRequest(rpc, 'eth_sendTransaction', [{ from, to, value: `0x${(1_000 + i).toString(16)}` }])
      // Plain value to the message passer: its receive() records a withdrawal.
      await rpcRequest(rpc, 'eth_sendTransaction', [{ from, to: L2_TO_L1_MESSAGE_PASSER, value: '0x1', gas: '0x30000' }])
      await rpcRequest(rpc, 'evm_mine', [])
      const raw = await rpcRequest(rpc, 'eth_getBlockByNumber', ['latest', true])
      const block = parseRpcBlock(raw)
      if (block === null) throw new Error('the dev L2 has no latest block')
      const artifact = await fetchBlockTrace(rpc, block, { traces: 'none' })
      const prev = blocks[blocks.length - 1]
      artifact.parentOutput = prev !== undefined ? outputRootInputs(prev) : await fetchOutputRootInputs(rpc, block.parentHash)
      blocks.push(artifact)
    }
    const chainConfigHash = devChainConfigHash(DEV_L2_CHAIN_ID)
    return { format: 'proofline/dev-blocks@1', chainId: DEV_L2_CHAIN_ID, chainConfigHash, blocks, sha256: blocksSha256(blocks) }
  } finally {
    await anvil.stop()
  }
}

function blocksSha256(blocks: readonly BlockTraceArtifact[]): string {
  return createHash('sha256').update(JSON.stringify(blocks.map((b) => [b.hash, b.parentOutput?.blockHash ?? null, b.messagePasser.storageHash]))).digest('hex')
}

/** `count` dev L2 blocks, from `<cacheDir>/fixtures/dev-blocks-<count>.json` or mined once and cached. */
export async function devBlocks(cacheDir: string, count: number, opts: { signal?: AbortSignal } = {}): Promise<DevBlocks> {
  const dir = join(cacheDir, 'fixtures')
  const file = join(dir, `dev-blocks-${count}.json`)
  const read = async (): Promise<DevBlocks> => JSON.parse(await readFile(file, 'utf8')) as DevBlocks
  if (existsSync(file)) return read()
  await mkdir(dir, { recursive: true })
  return withCacheLock(file, async () => {
    if (existsSync(file)) return read()
    const set = await mineDevBlocks(count, opts)
    const tmp = `${file}.${process.pid}.tmp`
    await writeFile(tmp, JSON.stringify(set))
    await rename(tmp, file)
    return set
  }, opts.signal ? { signal: opts.signal } : {})
}
