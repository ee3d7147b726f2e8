import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Hex } from 'viem'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { fsArtifacts } from '../../artifacts/fs/fs-artifacts.js'
import type { ArtifactStore } from '../../artifacts/types.js'
import type { TestAnvil } from '../../chain/test-anvil.js'
import type { BlockTraceArtifact } from '../../chain/traces.js'
import { ExecutorError } from '../../core/errors.js'
import type { JobInput, StageResult } from '../../core/types.js'
import { builtinExecutor, encodeProofArtifact, PROOF_ARTIFACT_PREFIX } from '../../executors/builtin/builtin-executor.js'
import { generateDevCrs } from '../crs/dev-crs.js'
import { defaultBbPath, runBb } from '../noir/bb.js'
import { executeNoir } from '../noir/execute.js'
import type { Proof } from '../types.js'
import type { BuiltinBackend } from './backend.js'
import { splitWords } from './fields.js'
import { prepareRange, rangePublicValues } from './range-program.js'
import { anvilL2Blocks, serialHeavy, testBackend, TEST_CHAIN_CONFIG } from './test-support.js'

/**
 * Under a development CRS a range proof is verified up to its pairing (bb's pairing uses
 * Ignition's G2); the pairing is checked by the aggregate over it. A range proof made with
 * the right key over ANOTHER CRS (a worker set up wrongly, or a forger) passes every check
 * before the pairing, so it is accepted as a range result — and the aggregate over it then
 * fails. This test makes such a proof and checks that the aggregate's executor finds it and
 * names its job (`bad-input`), so the orchestrator proves that range again
 * (src/pipeline/repair.test.ts covers what the orchestrator does with the report).
 * Heavy: three aggregate proofs, run serially with the other proving tests.
 */

let anvil: TestAnvil
let blocks: BlockTraceArtifact[]
let backend: BuiltinBackend
let dir: string
let artifacts: ArtifactStore

beforeAll(async () => {
  ;({ anvil, blocks } = await anvilL2Blocks(4))
  backend = await testBackend({ blocksPerRange: 2, aggregateK: 2 })
  dir = await mkdtemp(join(tmpdir(), 'pl-bad-inner-'))
  artifacts = fsArtifacts({ dir: join(dir, 'artifacts') })
}, 900_000)

afterAll(async () => {
  await backend.close()
  await anvil.stop()
  await rm(dir, { recursive: true, force: true })
})

/** A range proof of `range` made with the backend's own program and key, but over another CRS. */
async function proveOverAnotherCrs(range: BlockTraceArtifact[]): Promise<Proof> {
  const s = await backend.ready()
  const crsDir = join(dir, 'other-crs')
  await mkdir(crsDir, { recursive: true })
  // 2^18 + 1 points cover the 2-block range circuit (230,912 gates); a fresh random tau.
  await generateDevCrs({ points: 2 ** 18 + 1, g1Path: join(crsDir, 'bn254_g1.dat') })
  const prepared = prepareRange(2, { blocks: range, chainConfigHash: TEST_CHAIN_CONFIG })
  const witness = await executeNoir(await readFile(s.range.programPath, 'utf8'), prepared.inputs)
  const out = join(dir, 'forged')
  await writeFile(join(dir, 'witness.gz'), witness.bytes)
  await runBb(defaultBbPath(), ['prove', '-b', s.range.programPath, '-w', join(dir, 'witness.gz'), '-k', s.range.vkPath, '-o', out, '-c', crsDir, '-t', 'noir-recursive'])
  const publicInputs = splitWords(new Uint8Array(await readFile(join(out, 'public_inputs'))))
  return { program: 'range', vkHash: s.range.vkHash, bytes: new Uint8Array(await readFile(join(out, 'proof'))), publicInputs, publicValues: rangePublicValues(publicInputs) }
}

/** A range job's result as the aggregate stage receives it. */
async function asInput(jobId: string, p: Proof): Promise<JobInput> {
  const proof = await artifacts.put(encodeProofArtifact(p), { prefix: PROOF_ARTIFACT_PREFIX })
  const result: StageResult = { jobId, stage: 'range', first: p.publicValues.firstBlock, last: p.publicValues.lastBlock, lastHash: '0x', proof, output: { publicValues: p.publicValues }, cost: 0 }
  return { id: `${jobId}:result`, data: result }
}

describe('an aggregate over a range proof whose pairing fails (development CRS)', () => {
  it('the bad range passes its own check (deferred), the aggregate fails, and its executor names the bad range job (bad-input)', { timeout: 2_400_000 }, async () => {
    const { good, forged } = await serialHeavy(async () => ({
      good: await backend.prove({ blocks: blocks.slice(0, 2), chainConfigHash: TEST_CHAIN_CONFIG }),
      forged: await proveOverAnotherCrs(blocks.slice(2, 4)),
    }))
    // What the orchestrator checks of a range result cannot tell it apart from a good one.
    expect(forged.publicValues.previousOutputRoot).toBe(good.publicValues.outputRoot)
    expect(await backend.verify(forged)).toMatchObject({ ok: true, strength: 'deferred' })
    expect(await backend.verify(good)).toMatchObject({ ok: true, strength: 'deferred' })

    const exec = builtinExecutor({ program: 'aggregate', backend: () => Promise.resolve(backend), artifacts, chainConfigHash: TEST_CHAIN_CONFIG })
    const inputs = [await asInput('range:1-2:good', good), await asInput('range:3-4:forged', forged)]
    const err = await serialHeavy(() =>
      exec.execute({ job: { id: 'aggregate:1-4', stage: 'aggregate', attempt: 1, first: 1, last: 4, lastHash: '0x' as Hex, programId: 'builtin' }, inputs, signal: new AbortController().signal }),
    ).catch((e: unknown) => e)
    await exec.close()
    expect(err).toBeInstanceOf(ExecutorError)
    const e = err as ExecutorError
    expect(e.failureClass).toBe('bad-input')
    expect(e.details['badInputs']).toEqual(['range:3-4:forged'])
    expect(e.message).toMatch(/inner proof 1 \(blocks 3-4\): an aggregate over it alone does not verify/)
    expect(e.message).not.toMatch(/inner proof 0/)
  })
})
