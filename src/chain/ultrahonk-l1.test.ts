/**
 * The L1 side with real proofs: the UltraHonk verifier bb generates for the aggregate program
 * (patched to the development CRS's G2), the UltraHonkAdapter and the OutputOracle, deployed
 * on anvil; proposals carry real aggregate proofs of real dev-L2 blocks.
 *
 * Expensive things are cached in the shared proofline cache (`$PROOFLINE_CACHE_DIR` or
 * ~/.cache/proofline): the CRS, compiled circuits, keys, the verifier, the dev blocks and the
 * proof set (keyed by both programs' key hashes, the CRS and the blocks). A warm run proves
 * nothing; a cold one proves 2·K range proofs and 2 aggregates, alone among heavy tests.
 *
 * Sizes: PROOFLINE_TEST_BLOCKS_PER_RANGE (default 1: a 2^19 range circuit) and
 * PROOFLINE_TEST_AGGREGATE_K (default 1: a 2^20 aggregate) keep a cold run short on 2 cores; the
 * circuits and the verifier template are the ones `up` uses (set both to 2 for `up`'s sizes).
 */
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { BaseError, bytesToHex, decodeErrorResult, getAddress, keccak256, type Abi, type Address, type Hex } from 'viem'
import { getCode, readContract, simulateContract, waitForTransactionReceipt, writeContract } from 'viem/actions'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { builtinBackend, type BuiltinBackend, type BuiltinSetup } from '../backends/builtin/backend.js'
import { withCacheLock } from '../backends/crs/cache-lock.js'
import { defaultCacheDir, resolveCrs } from '../backends/crs/resolve.js'
import { splitWords } from '../backends/builtin/fields.js'
import type { Proof } from '../backends/types.js'
import { outputOracleAbi, ultraHonkAdapterAbi } from '../contracts/abis.js'
import { ExecutorError } from '../core/errors.js'
import { devBlocks, type DevBlocks } from '../prover-bench/dev-blocks.js'
import { cachedProof, loadProof, proofSet, type ProofSet } from '../prover-bench/proof-set.js'
import { startAnvil, type AnvilInstance } from './anvil.js'
import { deployHonkStack, type HonkStack } from './deploy-honk.js'
import { decodeRevert, deployOracle, type DeployWalletClient } from './deploy.js'
import { devClients, type DevClients } from './deploy.fixture.js'

const N = Number(process.env.PROOFLINE_TEST_BLOCKS_PER_RANGE ?? 1)
const K = Number(process.env.PROOFLINE_TEST_AGGREGATE_K ?? 1)
/** The K=2 aggregate is 2^21 gates; K=1 fits 2^20. */
const CRS_POINTS = 2 ** (K >= 2 ? 21 : 20) + 1
const COLD_MS = 30 * 60_000

/** Heavy proving tests run one at a time on this machine (the lock the backend's tests use too). */
function serialHeavy<T>(cacheDir: string, fn: () => Promise<T>): Promise<T> {
  return withCacheLock(join(cacheDir, 'heavy-tests'), fn)
}

interface Fixture {
  cacheDir: string
  backend: BuiltinBackend
  setup: BuiltinSetup
  blocks: DevBlocks
  set: ProofSet
  a1: Proof
  a2: Proof
  anvil: AnvilInstance
  dev: DevClients
  proposer: DeployWalletClient
  stack: HonkStack
  oracle: Address
  abis: Abi[]
  /** The optimized verifier reverts in assembly with selectors its ABI lacks: read from its source. */
  verifierSelectors: Map<string, string>
}

/** `bytes4 internal constant SUMCHECK_FAILED_SELECTOR = 0x9fc3a218;` → 0x9fc3a218 → SUMCHECK_FAILED. */
async function verifierSelectors(sourcePath: string): Promise<Map<string, string>> {
  const source = await readFile(sourcePath, 'utf8')
  return new Map([...source.matchAll(/bytes4 internal constant ([A-Z0-9_]+)_SELECTOR = (0x[0-9a-fA-F]{8});/g)].map((m) => [(m[2] as string).toLowerCase(), m[1] as string]))
}

let fx: Fixture

beforeAll(async () => {
  const cacheDir = defaultCacheDir()
  const crs = await resolveCrs({ kind: 'dev', points: CRS_POINTS, cacheDir })
  const backend = builtinBackend({ crs, cacheDir, blocksPerRange: N, aggregateK: K })
  const { setup, blocks, set } = await serialHeavy(cacheDir, async () => {
    const setup = await backend.ready()
    const blocks = await devBlocks(cacheDir, 2 * K * N)
    const set = await proofSet({ backend, blocks, cacheDir, blocksPerRange: N, aggregateK: K, aggregates: 2 })
    return { setup, blocks, set }
  })
  const anvil = await startAnvil({ chainId: 900 })
  const dev = devClients(anvil.rpcUrl, 900)
  const proposer = dev.wallet(0)
  const stack = await deployHonkStack(proposer, dev.publicClient, setup.verifier, setup.programId)
  const a1 = loadProof(set.aggregates[0] as ProofSet['aggregates'][number])
  const a2 = loadProof(set.aggregates[1] as ProofSet['aggregates'][number])
  const oracle = await deployOracle(proposer, dev.publicClient, {
    anchorRoot: a1.publicValues.previousOutputRoot,
    anchorBlock: BigInt(a1.publicValues.firstBlock - 1),
    intervalBlocks: 1n,
    verifier: stack.adapter.address,
    programId: setup.programId,
    chainConfigHash: blocks.chainConfigHash,
    proposer: proposer.account.address,
  })
  fx = { cacheDir, backend, setup, blocks, set, a1, a2, anvil, dev, proposer, stack, oracle: oracle.address, abis: [outputOracleAbi as Abi, setup.verifier.abi, ultraHonkAdapterAbi as Abi], verifierSelectors: await verifierSelectors(setup.verifier.sourcePath) }
}, COLD_MS)

afterAll(async () => {
  await fx?.anvil.stop()
})

/** The custom error's name from a viem error, decoded with the oracle's, the adapter's or the verifier's ABI. */
function revertName(err: unknown): string | undefined {
  if (!(err instanceof BaseError)) return undefined
  let raw: Hex | undefined
  err.walk((e) => {
    const r = (e as { raw?: unknown }).raw
    if (typeof r === 'string' && r.startsWith('0x')) raw = r as Hex
    return false
  })
  if (raw === undefined) {
    for (const abi of fx.abis) {
      const d = decodeRevert(err, abi)
      if (d) return d.errorName
    }
    return undefined
  }
  for (const abi of fx.abis) {
    try {
      return decodeErrorResult({ abi, data: raw }).errorName
    } catch {
      // Next ABI.
    }
  }
  return fx.verifierSelectors.get(raw.slice(0, 10).toLowerCase()) ?? `revert ${raw.slice(0, 10)}`
}

type Outcome = { ok: true; gasUsed: bigint } | { ok: false; error: string; mined: 'reverted' }

/**
 * Proposes on the dev L1 twice over: an `eth_call` first (for the decoded revert), then a real
 * transaction with a fixed gas limit (no estimation, so a bad proposal is mined and reverts).
 */
async function propose(outputRoot: Hex, l2Block: number, proof: Uint8Array | Hex): Promise<Outcome> {
  const args = [outputRoot, BigInt(l2Block), typeof proof === 'string' ? proof : bytesToHex(proof)] as const
  let error: string | undefined
  try {
    await simulateContract(fx.dev.publicClient, { address: fx.oracle, abi: outputOracleAbi, functionName: 'proposeL2Output', args, account: fx.proposer.account })
  } catch (err) {
    error = revertName(err) ?? `undecoded: ${(err as Error).message.split('\n')[0]}`
  }
  const hash = await writeContract(fx.proposer, { address: fx.oracle, abi: outputOracleAbi, functionName: 'proposeL2Output', args, gas: 5_000_000n, account: fx.proposer.account, chain: fx.dev.chain })
  const receipt = await waitForTransactionReceipt(fx.dev.publicClient, { hash })
  if (receipt.status === 'success') {
    expect(error, 'eth_call reverted but the transaction succeeded').toBeUndefined()
    return { ok: true, gasUsed: receipt.gasUsed }
  }
  expect(error, 'the transaction reverted but eth_call did not').toBeDefined()
  return { ok: false, error: error as string, mined: 'reverted' }
}

function latestIndex(): Promise<bigint> {
  return readContract(fx.dev.publicClient, { address: fx.oracle, abi: outputOracleAbi, functionName: 'latestOutputIndex' })
}

/** The proof with byte `at` XOR-ed with `mask`. */
function flipped(proof: Uint8Array, at: number, mask = 0x01): Uint8Array {
  const out = new Uint8Array(proof)
  out[at] = (out[at] as number) ^ mask
  return out
}

/** Proposals must be rejected with one of these: the oracle's own check or the verifier's. */
function expectRejected(o: Outcome, allowed: readonly string[]): void {
  expect(o.ok, JSON.stringify(o, (_k, v: unknown) => (typeof v === 'bigint' ? String(v) : v))).toBe(false)
  if (!o.ok) {
    expect(allowed, `revert ${o.error}`).toContain(o.error)
    console.log(`rejected on L1: ${o.error} (${expect.getState().currentTestName ?? ''})`)
  }
}

/**
 * A proof the verifier does not accept: the oracle's InvalidProof (the verifier returned false)
 * or a revert of the generated verifier's checks, passed through by the oracle (bb 5.0.0's
 * optimized template reverts rather than returning false).
 */
const PROOF_REJECTED = ['InvalidProof', 'SUMCHECK_FAILED', 'SHPLEMINI_FAILED', 'CONSISTENCY_CHECK_FAILED', 'GEMINI_CHALLENGE_IN_SUBGROUP', 'VALUE_GE_FIELD_ORDER', 'VALUE_GE_GROUP_ORDER', 'VALUE_GE_LIMB_MAX']
/** A valid proof of another statement fails the sumcheck (the public inputs enter the transcript and the permutation argument). */
const WRONG_STATEMENT = ['InvalidProof', 'SUMCHECK_FAILED']

describe.sequential(`UltraHonk verifier + OutputOracle on anvil, real proofs (${N} blocks per range, K=${K})`, () => {
  it('deploys the generated verifier: its code hash on chain is the generated one, the oracle points at the adapter', async () => {
    const code = await getCode(fx.dev.publicClient, { address: fx.stack.verifier.address })
    expect(keccak256(code ?? '0x')).toBe(fx.setup.verifier.codeHash)
    expect(await readContract(fx.dev.publicClient, { address: fx.oracle, abi: outputOracleAbi, functionName: 'verifier' })).toBe(getAddress(fx.stack.adapter.address))
    expect(await readContract(fx.dev.publicClient, { address: fx.stack.adapter.address, abi: ultraHonkAdapterAbi, functionName: 'HONK_VERIFIER' })).toBe(getAddress(fx.stack.verifier.address))
    expect(fx.setup.verifier.crs.kind).toBe('dev')
    expect(await latestIndex()).toBe(0n)
  })

  it('rejects a proof with one flipped byte inside the proof body (public values intact)', async () => {
    const { a1 } = fx
    const root = a1.publicValues.outputRoot
    const block = a1.publicValues.lastBlock
    // The proof body alone (bb writes the public inputs to their own file): start, middle, end.
    const words = splitWords(a1.bytes).length
    expect(words * 32).toBe(a1.bytes.length)
    for (const at of [31, 32 * Math.floor(words / 2) + 31, a1.bytes.length - 1]) {
      expectRejected(await propose(root, block, flipped(a1.bytes, at)), PROOF_REJECTED)
    }
    expect(await latestIndex()).toBe(0n)
  })

  it('rejects a valid proof of a different range (the next one, proposed before its predecessor)', async () => {
    const { a2 } = fx
    expectRejected(await propose(a2.publicValues.outputRoot, a2.publicValues.lastBlock, a2.bytes), WRONG_STATEMENT)
    expect(await latestIndex()).toBe(0n)
  })

  it('rejects a swapped output root (valid proof, another root for its block)', async () => {
    const { a1, a2 } = fx
    expectRejected(await propose(a2.publicValues.outputRoot, a1.publicValues.lastBlock, a1.bytes), WRONG_STATEMENT)
    // The right root for a later block is no better.
    expectRejected(await propose(a1.publicValues.outputRoot, a2.publicValues.lastBlock, a1.bytes), WRONG_STATEMENT)
    expect(await latestIndex()).toBe(0n)
  })

  it('accepts the valid proposal (positive control), then rejects its replay, then accepts the next range', async () => {
    const { a1, a2 } = fx
    // The off-chain verdict (in-process EVM) agrees with the chain's.
    expect(await fx.backend.verify(a1)).toMatchObject({ ok: true, strength: 'full' })

    const accepted = await propose(a1.publicValues.outputRoot, a1.publicValues.lastBlock, a1.bytes)
    expect(accepted).toMatchObject({ ok: true })
    expect(await latestIndex()).toBe(1n)
    const stored = await readContract(fx.dev.publicClient, { address: fx.oracle, abi: outputOracleAbi, functionName: 'getL2Output', args: [1n] })
    expect(stored.outputRoot).toBe(a1.publicValues.outputRoot)
    expect(stored.l2BlockNumber).toBe(BigInt(a1.publicValues.lastBlock))

    // Replayed as it was: the oracle has moved past it.
    expectRejected(await propose(a1.publicValues.outputRoot, a1.publicValues.lastBlock, a1.bytes), ['L2BlockNumberTooLow'])
    // Replayed for the next transition (the next range's root and block): the proof does not prove it.
    expectRejected(await propose(a2.publicValues.outputRoot, a2.publicValues.lastBlock, a1.bytes), WRONG_STATEMENT)
    expect(await latestIndex()).toBe(1n)

    // The range rejected above out of order is accepted in order: it was valid all along.
    const next = await propose(a2.publicValues.outputRoot, a2.publicValues.lastBlock, a2.bytes)
    expect(next).toMatchObject({ ok: true })
    expect(await latestIndex()).toBe(2n)
    if (accepted.ok) console.log(`proposeL2Output with a real ${a1.bytes.length}-byte UltraHonk proof: ${accepted.gasUsed} gas`)
  })

  it('an oracle pinned to another program id rejects the valid proof (the adapter refuses the statement)', async () => {
    const { a1 } = fx
    const other = await deployOracle(fx.proposer, fx.dev.publicClient, {
      anchorRoot: a1.publicValues.previousOutputRoot,
      anchorBlock: BigInt(a1.publicValues.firstBlock - 1),
      intervalBlocks: 1n,
      verifier: fx.stack.adapter.address,
      programId: keccak256(bytesToHex(new TextEncoder().encode('another program'))),
      chainConfigHash: fx.blocks.chainConfigHash,
      proposer: fx.proposer.account.address,
    })
    const saved = fx.oracle
    fx.oracle = other.address
    try {
      expectRejected(await propose(a1.publicValues.outputRoot, a1.publicValues.lastBlock, a1.bytes), ['InvalidProof'])
      expect(await latestIndex()).toBe(0n)
    } finally {
      fx.oracle = saved
    }
  })

  /** A real, valid range proof of another circuit: the range program with one more slot (cached). */
  async function foreignRangeProof(): Promise<{ vkHash: string; proof: Proof }> {
    // Its backend's own aggregate is never used; K=2, the config default, finds its setup cached.
    const foreign = builtinBackend({ crs: fx.setup.crs, cacheDir: fx.cacheDir, blocksPerRange: N + 1, aggregateK: 2 })
    return serialHeavy(fx.cacheDir, async () => {
      const fs = await foreign.ready()
      const proof = await cachedProof(fx.cacheDir, 'foreign-range', [fs.range.vkHash, fs.crs.g1Sha256, fx.blocks.sha256], () =>
        foreign.prove({ blocks: fx.blocks.blocks.slice(0, N + 1), chainConfigHash: fx.blocks.chainConfigHash }),
      )
      return { vkHash: fs.range.vkHash, proof }
    })
  }

  it('an aggregate over a range proof of a foreign circuit fails in witness execution (the pinned key hash)', async () => {
    const { vkHash, proof } = await foreignRangeProof()
    expect(vkHash).not.toBe(fx.setup.range.vkHash)
    expect(proof.vkHash).toBe(vkHash)
    // Same shape as a pinned range proof: only the circuit can tell them apart.
    expect(splitWords(proof.bytes).length).toBe(splitWords(loadProof(fx.set.ranges[0] as ProofSet['ranges'][number]).bytes).length)
    const err = await fx.backend.aggregate([proof]).then(
      () => null,
      (e: unknown) => e,
    )
    expect(err).toBeInstanceOf(ExecutorError)
    expect((err as ExecutorError).failureClass).toBe('unprovable')
    expect((err as Error).message).toMatch(/not of the pinned range program/)
  }, COLD_MS)

  it('an aggregate over a foreign range proof relabelled as the pinned program is not accepted (bb fails, or the verifier rejects it off chain and on L1)', async () => {
    const { proof } = await foreignRangeProof()
    // The key-hash assertion passes; the recursion constraint (pinned key, foreign proof) cannot hold.
    const relabelled: Proof = { ...proof, vkHash: fx.setup.range.vkHash }
    // A proof bb makes anyway is cached (keyed by both programs and the foreign proof): repeated runs only verify it.
    const forged = await serialHeavy(fx.cacheDir, () =>
      cachedProof(fx.cacheDir, 'forged-aggregate', [fx.setup.aggregate.vkHash, fx.setup.range.vkHash, fx.setup.crs.g1Sha256, bytesToHex(proof.bytes).slice(0, 200), proof.publicInputs], () => fx.backend.aggregate([relabelled])).then(
        (p) => ({ proof: p }),
        (err: unknown) => ({ err }),
      ),
    )
    if ('err' in forged) {
      expect(forged.err).toBeInstanceOf(ExecutorError)
      console.log(`foreign relabelled: bb refused to prove: ${(forged.err as Error).message.slice(0, 300)}`)
      return
    }
    expect(await fx.backend.verify(forged.proof)).toMatchObject({ ok: false })
    // On an oracle anchored where the forged statement starts, only the verifier stands in the way.
    const fresh = await deployOracle(fx.proposer, fx.dev.publicClient, {
      anchorRoot: forged.proof.publicValues.previousOutputRoot,
      anchorBlock: BigInt(forged.proof.publicValues.firstBlock - 1),
      intervalBlocks: 1n,
      verifier: fx.stack.adapter.address,
      programId: fx.setup.programId,
      chainConfigHash: fx.blocks.chainConfigHash,
      proposer: fx.proposer.account.address,
    })
    const saved = fx.oracle
    fx.oracle = fresh.address
    try {
      expectRejected(await propose(forged.proof.publicValues.outputRoot, forged.proof.publicValues.lastBlock, forged.proof.bytes), PROOF_REJECTED)
      expect(await latestIndex()).toBe(0n)
    } finally {
      fx.oracle = saved
    }
  }, COLD_MS)
})
