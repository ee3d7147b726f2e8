import type { FailureClass } from '../../core/errors.js'
import type { ExecutorInputDocument } from '../process/protocol.js'

/**
 * The HTTP prover protocol, version 1: how proofline runs a job on a remote prover service
 * (a proving partner's API). Specified for people in `docs/executor-protocol.md` (HTTP) with a
 * JSON schema in `docs/executor-protocol.schema.json` (`#/$defs/http…`).
 *
 * ```
 * POST   {url}/v1/proofs                      submit → { requestId }
 * GET    {url}/v1/proofs/{requestId}          status → { requestId, status, error? }
 * GET    {url}/v1/proofs/{requestId}/result   result → { requestId, jobId, programId, output, proof?, cost? }
 * DELETE {url}/v1/proofs/{requestId}          cancel
 * ```
 */
export const HTTP_PROTOCOL = 'proofline.prover-api/v1'

/** A request id as the service returns it: safe in a URL path segment and in logs. */
export const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/

/** Statuses a request goes through; `succeeded`, `failed` and `cancelled` are final. */
export type RemoteStatus = 'queued' | 'running' | 'succeeded' | 'failed' | 'cancelled'
const STATUSES: ReadonlySet<string> = new Set(['queued', 'running', 'succeeded', 'failed', 'cancelled'])

/** Failure classes a service may report in `error.class`; anything else counts as `transient`. */
const REMOTE_CLASSES: Readonly<Record<string, FailureClass>> = {
  'too-big': 'too-big',
  unprovable: 'unprovable',
  timeout: 'timeout',
  transient: 'transient',
}

/** The submit body: the process protocol's input document, plus the artifacts it references when inlined. */
export interface SubmitBody extends ExecutorInputDocument {
  /** Referenced artifacts (`data.trace`, `data.proof`), by ref key, when the executor inlines them. */
  artifacts?: Record<string, { sha256: string; size: number; base64: string }>
}

/** A checked status response. */
export interface StatusDocument {
  requestId: string
  status: RemoteStatus
  /** Present on `failed`: the class the service assigns and its message. */
  error?: { class: FailureClass; message: string }
  /** The service's hint for the next poll. */
  retryAfterMs?: number
}

/** A checked result response, before the proof is stored. */
export interface ResultDocument {
  requestId: string
  jobId: string
  programId: string
  output: Record<string, unknown>
  proof?: { bytes: Uint8Array; sha256: string }
  cost?: number
}

/** Why a response was not believed. */
export class ProtocolViolation extends Error {
  override readonly name = 'ProtocolViolation'
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v)
}

/** Parses a response body; anything that is not JSON is a `ProtocolViolation`. */
export function parseJsonBody(text: string): unknown {
  try {
    return JSON.parse(text)
  } catch {
    throw new ProtocolViolation(`not JSON: ${JSON.stringify(text.slice(0, 80))}`)
  }
}

/** Maps a service's `error.class` to a failure class (unknown → `transient`). */
export function remoteFailureClass(cls: unknown): FailureClass {
  return typeof cls === 'string' && Object.hasOwn(REMOTE_CLASSES, cls) ? (REMOTE_CLASSES[cls] as FailureClass) : 'transient'
}

/** Checks a parsed submit response: `{ requestId }`. */
export function checkSubmitResponse(doc: unknown): { requestId: string } {
  if (!isPlainObject(doc)) throw new ProtocolViolation('the submit response must be a JSON object')
  const id = doc['requestId']
  if (typeof id !== 'string' || !REQUEST_ID.test(id)) throw new ProtocolViolation(`"requestId" must match ${REQUEST_ID.source}`)
  return { requestId: id }
}

/** Checks a parsed status response for `requestId`. */
export function checkStatusResponse(doc: unknown, requestId: string): StatusDocument {
  if (!isPlainObject(doc)) throw new ProtocolViolation('the status response must be a JSON object')
  if (doc['requestId'] !== requestId) throw new ProtocolViolation(`status is for request ${JSON.stringify(doc['requestId'])}, asked for ${requestId}`)
  const status = doc['status']
  if (typeof status !== 'string' || !STATUSES.has(status)) throw new ProtocolViolation(`"status" must be one of ${[...STATUSES].join(', ')}`)
  const out: StatusDocument = { requestId, status: status as RemoteStatus }
  const err = doc['error']
  if (status === 'failed') {
    const e = isPlainObject(err) ? err : {}
    out.error = { class: remoteFailureClass(e['class']), message: typeof e['message'] === 'string' ? e['message'].slice(0, 500) : 'no message' }
  }
  const hint = doc['retryAfterMs']
  if (typeof hint === 'number' && Number.isFinite(hint) && hint >= 0) out.retryAfterMs = hint
  return out
}

const SHA256_HEX = /^[0-9a-f]{64}$/
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/

/**
 * Checks a parsed result response: it must be for `requestId`, for the job that was asked and
 * its program, with an object `output`; a proof must be well-formed base64 with a sha256 (the
 * caller checks that they match). Nothing here is believed beyond shape and identity — the
 * stage's verifier checks the statement.
 */
export function checkResultResponse(doc: unknown, expect: { requestId: string; jobId: string; programId: string }, maxProofBytes: number): ResultDocument {
  if (!isPlainObject(doc)) throw new ProtocolViolation('the result must be a JSON object')
  if (doc['requestId'] !== expect.requestId) throw new ProtocolViolation(`result is for request ${JSON.stringify(doc['requestId'])}, asked for ${expect.requestId}`)
  if (doc['jobId'] !== expect.jobId) throw new ProtocolViolation(`result is for job ${JSON.stringify(doc['jobId'])}, not ${expect.jobId}`)
  if (doc['programId'] !== expect.programId) throw new ProtocolViolation(`result is for program ${JSON.stringify(doc['programId'])}, not ${expect.programId}`)
  const output = doc['output']
  if (!isPlainObject(output)) throw new ProtocolViolation('"output" must be a JSON object')
  const out: ResultDocument = { requestId: expect.requestId, jobId: expect.jobId, programId: expect.programId, output }
  const proof = doc['proof']
  if (proof !== undefined && proof !== null) {
    if (!isPlainObject(proof)) throw new ProtocolViolation('"proof" must be an object { base64, sha256 }')
    const { base64, sha256 } = proof
    if (typeof sha256 !== 'string' || !SHA256_HEX.test(sha256)) throw new ProtocolViolation('"proof.sha256" must be 64 lowercase hex characters')
    if (typeof base64 !== 'string' || base64.length % 4 !== 0 || !BASE64.test(base64)) throw new ProtocolViolation('"proof.base64" must be standard padded base64')
    if ((base64.length / 4) * 3 > maxProofBytes + 2) throw new ProtocolViolation(`the proof is larger than ${maxProofBytes} bytes`)
    out.proof = { bytes: new Uint8Array(Buffer.from(base64, 'base64')), sha256 }
  }
  const cost = doc['cost']
  if (cost !== undefined && cost !== null) {
    if (typeof cost !== 'number' || !Number.isFinite(cost) || cost < 0) throw new ProtocolViolation('"cost" must be a non-negative number')
    out.cost = cost
  }
  return out
}

/** The `error` of a non-2xx response, when it has one: `{ error: { class?, message } }`. */
export function parseErrorBody(text: string): { class?: string; message?: string } {
  try {
    const doc: unknown = JSON.parse(text)
    if (isPlainObject(doc) && isPlainObject(doc['error'])) {
      const e = doc['error']
      return {
        ...(typeof e['class'] === 'string' ? { class: e['class'] } : {}),
        ...(typeof e['message'] === 'string' ? { message: e['message'].slice(0, 500) } : {}),
      }
    }
  } catch {
    // Not JSON: the status code says enough.
  }
  return {}
}
