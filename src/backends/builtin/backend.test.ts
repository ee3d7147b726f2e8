import type { Hex } from 'viem'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ExecutorError } from '../../core/errors.js'
import { outputRootV0 } from '../../chain/output-root.js'
import { outputRootInputs, type BlockTraceArtifact } from '../../chain/traces.js'
import type { TestAnvil } from '../../chain/test-anvil.js'
import type { Proof } from '../types.js'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fsArtifacts } from '../../artifacts/fs/fs-artifacts.js'
import type { Job, JobInput } from '../../core/types.js'
import { encodeProofArtifact } from '../../executors/builtin/builtin-executor.js'
import { builtinVerifier } from '../../pipeline/verify-builtin.js'
import type { BuiltinBackend } from './backend.js'
import { oraclePublicInputs } from './aggregate-program.js'
import { anvilL2Blocks, serialHeavy, testBackend, TEST_CHAIN_CONFIG } from './test-support.js'

/**
 * The built-in backend end to end over real anvil blocks: setup (dev CRS, compile, keys,
 * verifier), range proofs, an aggregate of K = 2, and its verification by the generated
 * UltraHonk verifier behind the adapter in an in-process EVM. Heavy: runs serially with the
 * other proving tests (see `serialHeavy`); the CRS, circuits and keys are cached across runs.
 */

let anvil: TestAnvil
let blocks: BlockTraceArtifact[]
let backend: BuiltinBackend

beforeAll(async () => {
  ;({ anvil, blocks } = await anvilL2Blocks(4))
  backend = await testBackend({ blocksPerRange: 2, aggregateK: 2 })
}, 900_000)

afterAll(async () => {
  await backend.close()
  await anvil.stop()
})

describe('built-in backend (Noir + UltraHonk, development CRS)', () => {
  let rangeA: Proof
  let rangeB: Proof
  let agg: Proof

  it('proves two ranges of real blocks, each committing to the OP v0 output roots; bb verifies each up to the pairing', { timeout: 1_800_000 }, async () => {
    await serialHeavy(async () => {
      const s = await backend.ready()
      expect(s.range.capacity).toBe(2)
      expect(s.aggregate.capacity).toBe(2)
      rangeA = await backend.prove({ blocks: blocks.slice(0, 2), chainConfigHash: TEST_CHAIN_CONFIG })
      rangeB = await backend.prove({ blocks: blocks.slice(2, 4), chainConfigHash: TEST_CHAIN_CONFIG })
    })
    const [b0, b1, , b3] = blocks as [BlockTraceArtifact, BlockTraceArtifact, BlockTraceArtifact, BlockTraceArtifact]
    expect(rangeA.publicValues).toEqual({
      previousOutputRoot: outputRootV0(b0.parentOutput ?? outputRootInputs(b0)),
      outputRoot: outputRootV0(outputRootInputs(b1)),
      firstBlock: 1,
      lastBlock: 2,
      chainConfigHash: TEST_CHAIN_CONFIG,
    })
    expect(rangeB.publicValues.previousOutputRoot).toBe(rangeA.publicValues.outputRoot)
    expect(rangeB.publicValues.outputRoot).toBe(outputRootV0(outputRootInputs(b3)))
    const v = await backend.verify(rangeA)
    expect(v).toMatchObject({ ok: true, strength: 'deferred' })
    // A range proof with a changed public value fails bb's checks before the pairing.
    const lied: Proof = { ...rangeA, publicInputs: rangeA.publicInputs.map((w, i): Hex => (i === 5 ? `0x${'0'.repeat(63)}3` : w)) }
    expect(await backend.verify(lied)).toMatchObject({ ok: false })
  })

  it('aggregates K = 2 ranges; the UltraHonk verifier accepts it in the in-process EVM and rejects a tampered proof', { timeout: 1_800_000 }, async () => {
    expect(rangeA).toBeDefined()
    agg = await serialHeavy(() => backend.aggregate([rangeA, rangeB]))
    expect(agg.publicValues).toEqual({
      previousOutputRoot: rangeA.publicValues.previousOutputRoot,
      outputRoot: rangeB.publicValues.outputRoot,
      firstBlock: 1,
      lastBlock: 4,
      chainConfigHash: TEST_CHAIN_CONFIG,
    })
    const v = await backend.verify(agg)
    expect(v).toMatchObject({ ok: true, strength: 'full' })
    const s = await backend.ready()
    const evm = await backend.evm()
    const good = await evm.verify(agg.bytes, oraclePublicInputs(agg.publicValues, s.programId))
    expect(good.ok).toBe(true)
    expect(good.gasUsed).toBeGreaterThan(100_000n)
    // One flipped byte in the proof body.
    const flipped = new Uint8Array(agg.bytes)
    flipped[flipped.length >> 1] = (flipped[flipped.length >> 1] as number) ^ 1
    expect((await evm.verify(flipped, oraclePublicInputs(agg.publicValues, s.programId))).ok).toBe(false)
    // The right proof for another statement (a swapped output root).
    expect((await evm.verify(agg.bytes, oraclePublicInputs({ ...agg.publicValues, outputRoot: rangeA.publicValues.outputRoot }, s.programId))).ok).toBe(false)
  })

  it('verify: builtin believes a result only when its proof verifies and its statement is the job\'s', { timeout: 300_000 }, async () => {
    expect(agg).toBeDefined()
    const dir = await mkdtemp(join(tmpdir(), 'pl-verify-builtin-'))
    const artifacts = fsArtifacts({ dir })
    try {
      const [b0, b1, b2, b3] = blocks as [BlockTraceArtifact, BlockTraceArtifact, BlockTraceArtifact, BlockTraceArtifact]
      const blockMsg = (b: BlockTraceArtifact): JobInput => ({ id: `b${b.number}`, data: { number: b.number, hash: b.hash, parentHash: b.block.parentHash } })
      const job = (first: number, last: number, lastHash: string, inputs: JobInput[]): Job => ({
        id: `j${first}-${last}`, stage: 's', first, last, lastHash, programId: 'p', state: 'running', attempt: 1, maxAttempts: 3, inputs, cost: 0, capacity: null,
        overCapacity: false, parentId: null, result: null, failureClass: null, lastError: null, leaseExpiresAt: null, heartbeatAt: null, notBefore: null, createdAt: 0, updatedAt: 0,
      })
      const rangeOut = (p: Proof, last: BlockTraceArtifact, first: BlockTraceArtifact): Record<string, unknown> => ({
        program: 'range', vkHash: p.vkHash, publicValues: p.publicValues, publicInputs: p.publicInputs, lastOutput: outputRootInputs(last), prevOutput: first.parentOutput,
      })
      const range = builtinVerifier({ program: 'range', backend: () => Promise.resolve(backend), artifacts, chainConfigHash: TEST_CHAIN_CONFIG })
      const refA = await artifacts.put(encodeProofArtifact(rangeA), { prefix: 'proofs' })
      const refB = await artifacts.put(encodeProofArtifact(rangeB), { prefix: 'proofs' })
      const jobA = job(1, 2, b1.hash, [blockMsg(b0), blockMsg(b1)])
      expect(await range(jobA, rangeOut(rangeA, b1, b0), refA)).toEqual({ ok: true })
      // The right proof, another job (range B's proof for range A's job).
      expect(await range(jobA, rangeOut(rangeB, b3, b2), refB)).toMatchObject({ ok: false })
      // The statement claimed in the output is A's, the proof is B's.
      expect(await range(jobA, rangeOut(rangeA, b1, b0), refB)).toMatchObject({ ok: false, reason: expect.stringContaining('another statement') as unknown })
      // No proof.
      expect(await range(jobA, rangeOut(rangeA, b1, b0))).toMatchObject({ ok: false })
      // Another chain configuration.
      const other = builtinVerifier({ program: 'range', backend: () => Promise.resolve(backend), artifacts, chainConfigHash: `0x${'22'.repeat(32)}` })
      expect(await other(jobA, rangeOut(rangeA, b1, b0), refA)).toMatchObject({ ok: false })

      const aggregate = builtinVerifier({ program: 'aggregate', backend: () => Promise.resolve(backend), artifacts, chainConfigHash: TEST_CHAIN_CONFIG })
      const refAgg = await artifacts.put(encodeProofArtifact(agg), { prefix: 'proofs' })
      const inner = [rangeA, rangeB].map((p, i): JobInput => ({ id: `r${i}`, data: { output: { publicValues: p.publicValues } } }))
      const aggOut = { program: 'aggregate', vkHash: agg.vkHash, publicValues: agg.publicValues, publicInputs: agg.publicInputs }
      const jobAgg = job(1, 4, b3.hash, inner)
      expect(await aggregate(jobAgg, aggOut, refAgg)).toEqual({ ok: true })
      // A flipped byte in the stored proof body.
      const bad = new Uint8Array(agg.bytes)
      bad[100] = (bad[100] as number) ^ 0xff
      const refBad = await artifacts.put(encodeProofArtifact({ ...agg, bytes: bad }), { prefix: 'proofs' })
      expect(await aggregate(jobAgg, aggOut, refBad)).toMatchObject({ ok: false, reason: expect.stringContaining('does not verify') as unknown })
      // A range proof offered as the aggregate.
      expect(await aggregate(jobAgg, aggOut, refA)).toMatchObject({ ok: false })
    } finally {
      await artifacts.close()
      await rm(dir, { recursive: true, force: true })
    }
  })

  it('a range whose header chain is broken fails in witness execution with the unprovable class', { timeout: 900_000 }, async () => {
    // Blocks 1 and 3: each artifact is genuine, but 3's parentHash is not 1's hash.
    const err = await serialHeavy(() => backend.prove({ blocks: [blocks[0] as BlockTraceArtifact, blocks[2] as BlockTraceArtifact], chainConfigHash: TEST_CHAIN_CONFIG })).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(ExecutorError)
    expect((err as ExecutorError).failureClass).toBe('unprovable')
    expect((err as ExecutorError).details.phase).toBe('witness')
    expect((err as ExecutorError).message).toContain("parentHash is not the previous block's hash")
  })

  it('an aggregate over an inner proof from a foreign circuit fails', { timeout: 1_800_000 }, async () => {
    // Run alone (-t foreign), it makes its own proof of the pinned range program.
    rangeA ??= await serialHeavy(() => backend.prove({ blocks: blocks.slice(0, 2), chainConfigHash: TEST_CHAIN_CONFIG }))
    // A range proof of the 1-block range program: another circuit, another key hash.
    const foreign = await testBackend({ blocksPerRange: 1, aggregateK: 2 })
    const other = await serialHeavy(() => foreign.prove({ blocks: blocks.slice(2, 3), chainConfigHash: TEST_CHAIN_CONFIG }))
    expect(other.vkHash).not.toBe(rangeA.vkHash)
    // Declared with its own key hash: the circuit's pin fails in witness execution.
    const err = await serialHeavy(() => backend.aggregate([rangeA, other])).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(ExecutorError)
    expect((err as ExecutorError).failureClass).toBe('unprovable')
    expect((err as ExecutorError).message).toContain('not of the pinned range program')
    // Declared with the pinned key hash (a lying host): the recursive verification fails, so
    // the aggregate either cannot be proven or its proof is rejected by the verifier.
    const lying = await serialHeavy(() => backend.aggregate([rangeA, { ...other, vkHash: rangeA.vkHash }])).catch((e: unknown) => e)
    if (lying instanceof Error) {
      expect(lying).toBeInstanceOf(ExecutorError)
    } else {
      expect((await backend.verify(lying as Proof)).ok).toBe(false)
    }
  })
})
