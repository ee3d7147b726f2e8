import type { Hex } from 'viem'
import type { ArtifactStore } from '../artifacts/types.js'
import { aggregatePublicValues } from '../backends/builtin/aggregate-program.js'
import type { BuiltinBackend } from '../backends/builtin/backend.js'
import { rangePublicValues } from '../backends/builtin/range-program.js'
import type { PublicValues } from '../backends/types.js'
import { outputRootV0 } from '../chain/output-root.js'
import type { OutputRootInputs } from '../chain/traces.js'
import { errorMessage } from '../core/errors.js'
import type { ArtifactRef, Job } from '../core/types.js'
import { decodeProofArtifact } from '../executors/builtin/builtin-executor.js'
import type { ResultVerifier, VerifyOutcome } from './verify.js'

/**
 * `verify: builtin`: the orchestrator's own check of a built-in backend result, whoever made it
 * (the in-process executor or a remote worker). A result is believed only when
 *
 * 1. its statement is the job's: first and last block, the configured chain config hash, the
 *    program the stage runs;
 * 2. its output roots are tied to what the orchestrator saw — range: the last block's output
 *    root is recomputed from its inputs whose block hash must be the job's last hash, the
 *    previous output root from inputs whose block hash must be the first block's parent hash;
 *    aggregate: it starts at the first inner range's previous root and ends at the last inner
 *    range's root (the circuit proves the chain in between);
 * 3. the proof's public input words decode to that statement; and
 * 4. the proof verifies (`backend.verify`: for an aggregate the generated UltraHonk verifier
 *    behind the adapter in an in-process EVM; for a range `bb verify`, up to the pairing under a
 *    development CRS — see docs/proving.md).
 */

/** Options of {@link builtinVerifier}. */
export interface BuiltinVerifierOptions {
  program: 'range' | 'aggregate'
  backend: () => Promise<BuiltinBackend>
  artifacts: ArtifactStore
  chainConfigHash: Hex
}

const HEX32 = /^0x[0-9a-fA-F]{64}$/

function isPublicValues(v: unknown): v is PublicValues {
  if (v === null || typeof v !== 'object') return false
  const p = v as Record<string, unknown>
  return (
    typeof p.previousOutputRoot === 'string' && HEX32.test(p.previousOutputRoot) &&
    typeof p.outputRoot === 'string' && HEX32.test(p.outputRoot) &&
    typeof p.chainConfigHash === 'string' && HEX32.test(p.chainConfigHash) &&
    Number.isSafeInteger(p.firstBlock) && Number.isSafeInteger(p.lastBlock)
  )
}

function isOutputInputs(v: unknown): v is OutputRootInputs {
  if (v === null || typeof v !== 'object') return false
  const o = v as Record<string, unknown>
  return [o.stateRoot, o.messagePasserStorageRoot, o.blockHash].every((x) => typeof x === 'string' && HEX32.test(x))
}

const eq = (a: string, b: string): boolean => a.toLowerCase() === b.toLowerCase()

function sameValues(a: PublicValues, b: PublicValues): boolean {
  return eq(a.previousOutputRoot, b.previousOutputRoot) && eq(a.outputRoot, b.outputRoot) && a.firstBlock === b.firstBlock && a.lastBlock === b.lastBlock && eq(a.chainConfigHash, b.chainConfigHash)
}

/** Creates the verifier. */
export function builtinVerifier(opts: BuiltinVerifierOptions): ResultVerifier {
  const fail = (reason: string): VerifyOutcome => ({ ok: false, reason })
  return async (job: Job, output: Record<string, unknown>, proofRef?: ArtifactRef): Promise<VerifyOutcome> => {
    const pv = output.publicValues
    if (!isPublicValues(pv)) return fail('output.publicValues is missing or malformed')
    if (output.program !== opts.program) return fail(`a proof of program ${String(output.program)}, the stage proves ${opts.program}`)
    if (pv.firstBlock !== job.first || pv.lastBlock !== job.last) return fail(`the proof covers ${pv.firstBlock}-${pv.lastBlock}, the job is ${job.first}-${job.last}`)
    if (!eq(pv.chainConfigHash, opts.chainConfigHash)) return fail(`the proof is for chain config ${pv.chainConfigHash}, the pipeline's is ${opts.chainConfigHash}`)
    if (opts.program === 'range') {
      const last = output.lastOutput
      const prev = output.prevOutput
      if (!isOutputInputs(last) || !isOutputInputs(prev)) return fail('output.lastOutput / output.prevOutput are missing or malformed')
      if (!eq(last.blockHash, job.lastHash)) return fail(`the last block's hash is ${last.blockHash}, the job's last block is ${job.lastHash}`)
      const firstParent = (job.inputs[0]?.data as { parentHash?: unknown } | undefined)?.parentHash
      if (typeof firstParent !== 'string' || !eq(prev.blockHash, firstParent)) return fail(`the previous output's block is ${prev.blockHash}, the first block's parent is ${String(firstParent)}`)
      if (!eq(outputRootV0(last), pv.outputRoot)) return fail('the output root is not the last block\'s (from its output-root inputs)')
      if (!eq(outputRootV0(prev), pv.previousOutputRoot)) return fail('the previous output root is not the first block\'s parent\'s')
    } else {
      const inner = job.inputs.map((i) => (i.data as { output?: { publicValues?: unknown } } | undefined)?.output?.publicValues)
      const first = inner[0]
      const lastInner = inner[inner.length - 1]
      if (!isPublicValues(first) || !isPublicValues(lastInner)) return fail('an inner result has no publicValues')
      if (!eq(first.previousOutputRoot, pv.previousOutputRoot)) return fail('the aggregate does not start at its first range\'s previous output root')
      if (!eq(lastInner.outputRoot, pv.outputRoot)) return fail('the aggregate does not end at its last range\'s output root')
    }
    if (proofRef === undefined) return fail('the result has no proof artifact')
    try {
      const backend = await opts.backend()
      const proof = decodeProofArtifact(await opts.artifacts.get(proofRef), pv)
      const words = proof.publicInputs as Hex[]
      let committed: PublicValues
      try {
        committed = opts.program === 'range' ? rangePublicValues(words) : aggregatePublicValues(words)
      } catch (err) {
        return fail(`the proof's public inputs are malformed: ${errorMessage(err)}`)
      }
      if (!sameValues(committed, pv)) return fail('the proof\'s public inputs commit to another statement than output.publicValues')
      const v = await backend.verify(proof)
      if (!v.ok) return fail(`the proof does not verify (${v.method}): ${v.reason}`)
      return { ok: true }
    } catch (err) {
      return fail(`the proof could not be checked: ${errorMessage(err)}`)
    }
  }
}
