import type { Hex } from 'viem'
import type { ArtifactStore } from '../../artifacts/types.js'
import type { BuiltinBackend } from '../../backends/builtin/backend.js'
import type { Proof, PublicValues } from '../../backends/types.js'
import { readBlockTrace, outputRootInputs, type BlockTraceArtifact, type OutputRootInputs } from '../../chain/traces.js'
import type { ArtifactRef, JobInput } from '../../core/types.js'
import { ExecutorError, ProoflineError } from '../../core/errors.js'
import type { ExecuteRequest, ExecuteResult, Executor } from '../types.js'

/**
 * The `builtin` executor: proves in this process with the built-in backend (Noir circuits,
 * native bb). A `range` job's inputs are block messages whose trace artifacts it reads; an
 * `aggregate` job's inputs are range results whose proofs it reads. The proof is verified
 * (`backend.verify`) before the result is returned, stored under `proofs/<sha256>`, and the
 * result carries its statement; the orchestrator checks both again (`verify: builtin`, see
 * src/pipeline/verify.ts) before believing it.
 *
 * Output (`result.output`):
 *   program, vkHash            which program made the proof
 *   publicValues               previousOutputRoot, outputRoot, firstBlock, lastBlock, chainConfigHash
 *   publicInputs               the circuit's public inputs (field words)
 *   previousOutputRoot, outputRoot   the roots again, where the proposer checks them
 *   first, last, lastHash      the job's range, echoed
 *   lastOutput, prevOutput     (range) the output-root inputs of the last block and of the
 *                              block before the first, so the orchestrator can tie the output
 *                              roots to the block hashes it saw
 *   verification               how the executor verified the proof (method, strength)
 *   proofBytes                 size of the proof
 */

/** Options of {@link builtinExecutor}. */
export interface BuiltinExecutorOptions {
  /** Which program this stage runs. */
  program: 'range' | 'aggregate'
  /** The backend (one per process, shared with the orchestrator's verifier). */
  backend: () => Promise<BuiltinBackend>
  /** Where trace artifacts are read and proofs written. */
  artifacts: ArtifactStore
  /** The L2 chain configuration hash range proofs commit to (the oracle's CHAIN_CONFIG_HASH). */
  chainConfigHash: Hex
  /** @default 5000 */
  heartbeatMs?: number
}

/** The prefix proofs are stored under. */
export const PROOF_ARTIFACT_PREFIX = 'proofs'

/** A stored proof: the bytes `bb` wrote, with what identifies them. */
export interface StoredProofArtifact {
  format: 'proofline/builtin-proof@1'
  program: string
  vkHash: Hex
  /** 0x-hex. */
  proof: Hex
  publicInputs: Hex[]
}

/** Encodes a proof for the artifact store. */
export function encodeProofArtifact(p: Proof): Uint8Array {
  const doc: StoredProofArtifact = { format: 'proofline/builtin-proof@1', program: p.program, vkHash: p.vkHash, proof: `0x${Buffer.from(p.bytes).toString('hex')}`, publicInputs: p.publicInputs }
  return new TextEncoder().encode(JSON.stringify(doc))
}

/** Decodes a stored proof; `publicValues` comes from the caller (the result's output). */
export function decodeProofArtifact(bytes: Uint8Array, publicValues: PublicValues): Proof {
  const doc = JSON.parse(new TextDecoder().decode(bytes)) as Partial<StoredProofArtifact>
  if (doc.format !== 'proofline/builtin-proof@1' || typeof doc.proof !== 'string' || !Array.isArray(doc.publicInputs) || typeof doc.program !== 'string' || typeof doc.vkHash !== 'string') {
    throw new ExecutorError('invalid-output', 'not a proofline/builtin-proof@1 artifact')
  }
  return { program: doc.program, vkHash: doc.vkHash, bytes: new Uint8Array(Buffer.from(doc.proof.slice(2), 'hex')), publicInputs: doc.publicInputs, publicValues }
}

/** Reads `data.trace` of a block message input. */
function traceRef(input: JobInput, i: number): ArtifactRef {
  const d = input.data as { trace?: ArtifactRef; number?: unknown } | null
  if (d === null || typeof d !== 'object' || d.trace === undefined) {
    throw new ExecutorError('unprovable', `builtin range: input ${i} (block ${String(d?.number)}) has no trace artifact: the source must store traces (an l2 source)`, { index: i })
  }
  return d.trace
}

/** The publicValues and proof ref of a range result input. */
function innerResult(input: JobInput, i: number): { proof: ArtifactRef; publicValues: PublicValues } {
  const d = input.data as { proof?: ArtifactRef; output?: { publicValues?: PublicValues } } | null
  if (d === null || typeof d !== 'object' || d.proof === undefined || d.output?.publicValues === undefined) {
    throw new ExecutorError('unprovable', `builtin aggregate: input ${i} is not a builtin range result (no proof or publicValues)`, { index: i })
  }
  return { proof: d.proof, publicValues: d.output.publicValues }
}

/**
 * An aggregate failed: finds which inner proofs fail on their own (`badInnerProofs`) and, if
 * any do, fails the attempt with `bad-input` naming their jobs, so the orchestrator proves
 * those ranges again (src/pipeline/repair.ts). Returns when every inner proof checks out.
 */
async function blameInner(backend: BuiltinBackend, inner: Proof[], req: ExecuteRequest, what: string, signal: AbortSignal): Promise<void> {
  const bad = await backend.badInnerProofs(inner, { signal })
  if (bad.length === 0) return
  const jobs = bad.map((b) => {
    const d = req.inputs[b.index]?.data as { jobId?: unknown; first?: unknown; last?: unknown } | undefined
    return { index: b.index, jobId: typeof d?.jobId === 'string' ? d.jobId : undefined, range: `${String(d?.first)}-${String(d?.last)}`, reason: b.reason }
  })
  const named = jobs.flatMap((j) => (j.jobId === undefined ? [] : [j.jobId]))
  const detail = jobs.map((j) => `inner proof ${j.index} (blocks ${j.range}): ${j.reason}`).join('; ')
  if (named.length === 0) throw new ExecutorError('unprovable', `builtin aggregate: ${what}; ${detail}; the inputs name no job to prove again`, { jobId: req.job.id })
  throw new ExecutorError('bad-input', `builtin aggregate: ${what}; ${detail}`, { jobId: req.job.id, badInputs: named })
}

/** Creates the executor. */
export function builtinExecutor(opts: BuiltinExecutorOptions): Executor {
  const closing = new AbortController()
  const heartbeatMs = opts.heartbeatMs ?? 5000

  async function execute(req: ExecuteRequest): Promise<ExecuteResult> {
    const started = performance.now()
    const signal = AbortSignal.any([req.signal, closing.signal])
    const beat = req.onHeartbeat === undefined ? undefined : setInterval(() => {
      try {
        req.onHeartbeat?.()
      } catch {
        // The caller's lease bookkeeping failing does not stop the proof.
      }
    }, heartbeatMs)
    try {
      const backend = await opts.backend()
      let proof: Proof
      // The aggregate's inner proofs (to find a bad one if the aggregate fails).
      let inner: Proof[] | undefined
      const extra: Record<string, unknown> = {}
      if (opts.program === 'range') {
        const blocks: BlockTraceArtifact[] = []
        for (const [i, input] of req.inputs.entries()) blocks.push(await readBlockTrace(opts.artifacts, traceRef(input, i), { signal }))
        proof = await backend.prove({ blocks, chainConfigHash: opts.chainConfigHash }, { signal })
        const last = blocks[blocks.length - 1] as BlockTraceArtifact
        extra.lastOutput = outputRootInputs(last) satisfies OutputRootInputs
        extra.prevOutput = (blocks[0] as BlockTraceArtifact).parentOutput
      } else {
        inner = []
        for (const [i, input] of req.inputs.entries()) {
          const r = innerResult(input, i)
          inner.push(decodeProofArtifact(await opts.artifacts.get(r.proof, { signal }), r.publicValues))
        }
        try {
          proof = await backend.aggregate(inner, { signal })
        } catch (err) {
          if (err instanceof ExecutorError && err.failureClass === 'unprovable') await blameInner(backend, inner, req, err.message, signal)
          throw err
        }
      }
      // Believed by nobody until verified: here first, then again by the orchestrator.
      const v = await backend.verify(proof, { signal })
      if (!v.ok) {
        // An aggregate over inner proofs that each passed their own check (deferred under a
        // development CRS) may fail because one of them is bad: find it, have it re-proved.
        if (inner !== undefined) await blameInner(backend, inner, req, `the aggregate proof does not verify (${v.reason})`, signal)
        throw new ExecutorError('invalid-output', `builtin ${opts.program}: the proof just made does not verify (${v.method}: ${v.reason})`, { jobId: req.job.id })
      }
      const ref = await opts.artifacts.put(encodeProofArtifact(proof), { prefix: PROOF_ARTIFACT_PREFIX, signal })
      return {
        output: {
          program: proof.program,
          vkHash: proof.vkHash,
          publicValues: proof.publicValues,
          publicInputs: proof.publicInputs,
          // Top level too: the proposer refuses a result whose roots differ from the L2 node's and the oracle's.
          previousOutputRoot: proof.publicValues.previousOutputRoot,
          outputRoot: proof.publicValues.outputRoot,
          first: req.job.first,
          last: req.job.last,
          lastHash: req.job.lastHash,
          ...extra,
          verification: { method: v.method, strength: v.strength, durationMs: v.durationMs },
          proofBytes: proof.bytes.length,
        },
        proof: ref,
        durationMs: Math.round(performance.now() - started),
      }
    } catch (err) {
      if (err instanceof ExecutorError) throw err
      if (signal.aborted) throw new ExecutorError('transient', `builtin ${opts.program}: aborted`, { aborted: true }, err)
      // Setup or store failures: the backend's own errors say whether a retry can help.
      const retryable = err instanceof ProoflineError ? err.retryable : true
      throw new ExecutorError(retryable ? 'transient' : 'unprovable', `builtin ${opts.program}: ${err instanceof Error ? err.message : String(err)}`, {}, err)
    } finally {
      clearInterval(beat)
    }
  }

  return {
    kind: 'builtin',
    execute,
    close() {
      closing.abort()
      return Promise.resolve()
    },
  }
}
