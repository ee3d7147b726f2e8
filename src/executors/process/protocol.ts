import { ExecutorError } from '../../core/errors.js'
import type { ArtifactRef, JobInput } from '../../core/types.js'
import type { ExecuteRequest } from '../types.js'

/**
 * The process protocol, version 1: how proofline runs any prover binary. Specified for
 * people in `docs/executor-protocol.md` and for machines in `docs/executor-protocol.schema.json`.
 */
export const EXECUTOR_PROTOCOL = 'proofline.executor/v1'

/** Exit code of success: the output document holds the result. */
export const EXIT_SUCCESS = 0
/** Exit code meaning "this job is too big for me: split it" (failure class `too-big`). */
export const EXIT_TOO_BIG = 10
/** Exit code meaning "this input can never be proven: dead-letter and alert" (failure class `unprovable`). */
export const EXIT_UNPROVABLE = 11

/** Env var naming the orchestrator/worker instance that owns a prover process; `reapOrphans` looks for it. */
export const OWNER_ENV = 'PROOFLINE_OWNER'
/** Env var naming one attempt; every process of the attempt is killed when it ends, even ones that left its process group. */
export const ATTEMPT_ENV = 'PROOFLINE_ATTEMPT'

/** The document a prover reads (`IN.json` or stdin). */
export interface ExecutorInputDocument {
  protocol: typeof EXECUTOR_PROTOCOL
  job: ExecuteRequest['job']
  inputs: JobInput[]
}

/** The document a prover writes on success (`OUT.json` or stdout). */
export interface ExecutorOutputDocument {
  /** Executor-specific result fields (public values, commitments). */
  output: Record<string, unknown>
  /** The proof, when the prover stored it in the artifact store itself. */
  proof?: ArtifactRef
}

/** Builds the input document of one attempt. */
export function inputDocument(req: Pick<ExecuteRequest, 'job' | 'inputs'>): ExecutorInputDocument {
  const { id, stage, attempt, first, last, lastHash, programId } = req.job
  return {
    protocol: EXECUTOR_PROTOCOL,
    job: { id, stage, attempt, first, last, lastHash, programId },
    inputs: req.inputs.map((i) => ({ id: i.id, data: i.data })),
  }
}

/** Serialises an input document; bigints become decimal strings, as in `canonicalJson`. */
export function serializeInputDocument(doc: ExecutorInputDocument): string {
  return JSON.stringify(doc, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v))
}

const SHA256_HEX = /^[0-9a-f]{64}$/

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v)
}

/**
 * Parses and checks an output document. Anything that is not a JSON object with an object
 * `output` (and, if present, a well-formed `proof` ref) throws `ExecutorError('invalid-output')`.
 * Unknown top-level fields are ignored (reserved for later protocol versions).
 */
export function parseOutputDocument(text: string, details: Record<string, unknown> = {}): ExecutorOutputDocument {
  const invalid = (why: string, cause?: unknown): ExecutorError =>
    new ExecutorError('invalid-output', `prover output is invalid: ${why}`, { ...details, reason: why }, cause)
  if (text.trim() === '') throw invalid('empty output')
  let doc: unknown
  try {
    doc = JSON.parse(text)
  } catch (err) {
    throw invalid('not JSON', err)
  }
  if (!isPlainObject(doc)) throw invalid('the document must be a JSON object')
  if (!isPlainObject(doc['output'])) throw invalid('"output" must be a JSON object')
  const result: ExecutorOutputDocument = { output: doc['output'] }
  const proof = doc['proof']
  if (proof !== undefined) {
    if (!isPlainObject(proof)) throw invalid('"proof" must be an object { key, sha256, size }')
    const { key, sha256, size } = proof
    if (typeof key !== 'string' || key.length === 0) throw invalid('"proof.key" must be a non-empty string')
    if (typeof sha256 !== 'string' || !SHA256_HEX.test(sha256)) throw invalid('"proof.sha256" must be 64 lowercase hex characters')
    if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) throw invalid('"proof.size" must be a non-negative integer')
    result.proof = { key, sha256, size }
  }
  return result
}
