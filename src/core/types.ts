import type { Hex } from 'viem'
import type { FailureClass } from './errors.js'

export type { Hex } from 'viem'

/**
 * A block as the pipeline sees it. Block numbers are safe integers (`number`), not
 * `bigint`: they are collector keys, JSON message fields and SQL columns, and no L2 will
 * reach 2^53 blocks. Wei amounts and gas prices stay `bigint` in chain code.
 */
export interface BlockRef {
  number: number
  hash: Hex
  parentHash: Hex
}

/** An inclusive range of block numbers, `first <= last`. */
export interface Range {
  first: number
  last: number
}

/** A content-addressed artifact: where it is and what its bytes hash to. */
export interface ArtifactRef {
  key: string
  /** sha256 of the bytes, lowercase hex, no `0x`. */
  sha256: string
  size: number
}

/** An OP Stack output root (bytes32). */
export type OutputRoot = Hex

/** The message the block source / watcher publishes on `blocks`. */
export interface BlockMessage {
  number: number
  hash: Hex
  parentHash: Hex
  timestamp: number
  gasUsed: number
  /** Estimated proving cost in the stage's cost unit (gas-based model by default). */
  cost: number
  txCount: number
  /** Trace/witness artifact, when the source stores one. */
  trace?: ArtifactRef
}

/**
 * Job states. `pending → running → succeeded`; `running → failed → retrying → running …`;
 * `failed → dead` when the failure is unprovable or retries are exhausted; `failed → split`
 * when the executor said the range is too big (children jobs cover it); `cancelled` by an
 * operator; `invalidated` when its blocks were reorged out. Terminal: succeeded, dead,
 * split, cancelled, invalidated.
 */
export type JobState = 'pending' | 'running' | 'succeeded' | 'failed' | 'retrying' | 'dead' | 'split' | 'cancelled' | 'invalidated'

/** States a job never leaves. */
export const TERMINAL_STATES: ReadonlySet<JobState> = new Set(['succeeded', 'dead', 'split', 'cancelled', 'invalidated'])

/** One input of a job: a message that the collector put into it. */
export interface JobInput {
  /** The bus message id it came from. */
  id: string
  /** Its payload (a BlockMessage for the range stage, a StageResult for later stages). */
  data: unknown
}

/** A job as stored in the state store. */
export interface Job {
  id: string
  stage: string
  first: number
  last: number
  lastHash: string
  programId: string
  state: JobState
  /** The current attempt number, starting at 1. A result for another attempt is stale. */
  attempt: number
  maxAttempts: number
  inputs: JobInput[]
  /** Summed cost of the inputs and the capacity it was packed against (for utilisation). */
  cost: number
  capacity: number | null
  /** Set by the collector when one input alone exceeds capacity. */
  overCapacity: boolean
  /** The parent job when this job came from splitting a too-big range. */
  parentId: string | null
  result: StageResult | null
  failureClass: FailureClass | null
  lastError: string | null
  leaseExpiresAt: number | null
  heartbeatAt: number | null
  /** Earliest time the current attempt may start (retry backoff). */
  notBefore: number | null
  createdAt: number
  updatedAt: number
}

/** One attempt of a job, kept for history: who ran it, how it ended, and the stderr tail. */
export interface Attempt {
  jobId: string
  attempt: number
  workerId: string | null
  startedAt: number | null
  endedAt: number | null
  outcome: 'running' | 'succeeded' | 'failed' | 'stale' | 'rejected'
  failureClass: FailureClass | null
  error: string | null
  stderrTail: string | null
  durationMs: number | null
}

/** What a stage publishes for a succeeded job, and what the next stage's collector consumes. */
export interface StageResult {
  jobId: string
  stage: string
  first: number
  last: number
  lastHash: string
  /** The proof (or mock proof) artifact, when the executor stored one. */
  proof?: ArtifactRef
  /** Executor-specific result fields (public values, commitments), validated before being believed. */
  output: Record<string, unknown>
  cost: number
}
