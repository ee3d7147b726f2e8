import type { FailureClass } from '../core/errors.js'
import type { Attempt, Job, JobInput, JobState, StageResult } from '../core/types.js'

/** A collector's buffered input, persisted before the bus message is acked. */
export interface CollectorItem {
  /** The bus message id; (collector, id) is unique, so a redelivered message is stored once. */
  id: string
  /** First and last key covered (for blocks both are the block number; for ranges, first/last). */
  start: number
  end: number
  cost: number
  data: unknown
  receivedAt: number
}

/** A job to create. Creating an existing id does nothing (content-derived ids). */
export interface NewJob {
  id: string
  stage: string
  first: number
  last: number
  lastHash: string
  programId: string
  maxAttempts: number
  inputs: JobInput[]
  cost: number
  capacity: number | null
  overCapacity: boolean
  parentId: string | null
  notBefore?: number | null
}

/** Fields a state transition may change. */
export interface JobPatch {
  state?: JobState
  attempt?: number
  result?: StageResult | null
  failureClass?: FailureClass | null
  lastError?: string | null
  leaseExpiresAt?: number | null
  heartbeatAt?: number | null
  notBefore?: number | null
  /** The attempt whose job message was published on the bus (0 = none yet). */
  dispatchedAttempt?: number
  /** Whether the stage result of a succeeded job was published downstream. */
  resultPublished?: boolean
  /** The attempt budget (an operator's pause withdraws an attempt without charging it). */
  maxAttempts?: number
  /** The job's inputs (an input re-proved after its proof was found bad is swapped in; see src/pipeline/repair.ts). */
  inputs?: JobInput[]
}

/** A job as stored, with the bookkeeping the orchestrator needs for recovery. */
export interface StoredJob extends Job {
  dispatchedAttempt: number
  resultPublished: boolean
}

export interface JobFilter {
  stage?: string
  states?: JobState[]
  /** Only jobs whose `dispatchedAttempt < attempt` (their current attempt was not published yet). */
  undispatched?: boolean
  /** Only succeeded jobs whose result is not yet published. */
  unpublishedResults?: boolean
  /** Only jobs covering this block number. */
  coversBlock?: number
  /** Only jobs whose last block is at or above this number (e.g. every job a reorg there touches). */
  lastAtLeast?: number
  limit?: number
  /** Order by `first` ascending (default) or by `updatedAt` descending. */
  order?: 'first' | 'recent'
  /**
   * Leave the jobs' inputs out (each job comes with `inputs: []`): for views that only count
   * jobs or look at their ranges and states, so they do not read every job's blocks or proofs.
   * @default false
   */
  omitInputs?: boolean
}

/** An operational event worth keeping: dead letters, rejected outputs, stale results, splits. */
export interface PipelineEvent {
  at: number
  kind: 'dead-letter' | 'rejected-output' | 'stale-result' | 'split' | 'retry' | 'lease-expired' | 'cancelled' | 'invalidated' | 'over-capacity' | 'overflow' | 'alert' | 'admin' | 'shadow'
  jobId: string | null
  message: string
  details: Record<string, unknown>
}

/** A block seen by the source/watcher. */
export interface BlockRecord {
  number: number
  hash: string
  parentHash: string
  gasUsed: number
  cost: number
  seenAt: number
}

/** Job counts per stage and state. */
export type JobCounts = Record<string, Partial<Record<JobState, number>>>

/**
 * The state store: the source of truth for what is done. Written by the orchestrator alone.
 * Every method is atomic; `transaction` groups several into one atomic unit.
 */
export interface StateStore {
  /**
   * Runs `fn` in one transaction; everything it did is committed together or not at all. If
   * `fn` throws, nothing is committed and the same error is rethrown. `fn` must use the store
   * it is given (bound to the transaction; a `transaction` call on it joins the same one).
   */
  transaction<T>(fn: (tx: StateStore) => Promise<T>): Promise<T>

  // -- collectors -------------------------------------------------------------------------
  /** Stores items; an item id already stored for the collector (consumed or not) is ignored. Returns the ids that were new. */
  addCollectorItems(collector: string, items: CollectorItem[]): Promise<string[]>
  /** Items not yet consumed by a job, ordered by `start` (then id). */
  listOpenCollectorItems(collector: string): Promise<CollectorItem[]>
  /**
   * Marks items consumed by `jobId`. Consuming an item again for the same job does nothing; if
   * any item is unknown or consumed by another job, it throws a StateError and consumes nothing.
   */
  consumeCollectorItems(collector: string, itemIds: string[], jobId: string): Promise<void>
  /** The collector's durable cursor (e.g. the next expected key), or undefined. */
  getCursor(name: string): Promise<string | undefined>
  setCursor(name: string, value: string): Promise<void>

  // -- jobs -------------------------------------------------------------------------------
  /**
   * Creates jobs in state `pending`, attempt 1. Ids that exist are left alone. Returns the ids
   * created, in input order (an id repeated in one call is created once, from its first occurrence).
   */
  createJobs(jobs: NewJob[]): Promise<string[]>
  getJob(id: string): Promise<StoredJob | undefined>
  listJobs(filter?: JobFilter): Promise<StoredJob[]>
  countJobs(): Promise<JobCounts>
  /**
   * Records that these attempts were published on the bus: for each job still `pending` or
   * `retrying` at exactly that attempt, sets `dispatchedAttempt` to it (a compare-and-set per
   * job, as `updateJob` with `{ states: ['pending', 'retrying'], attempt }` would); any other
   * job is left alone. One write for the whole batch. Resolves with the jobs it updated,
   * without their inputs (`inputs: []`).
   */
  markDispatched(jobs: { id: string; attempt: number }[]): Promise<StoredJob[]>
  /**
   * Compare-and-set: applies `patch` only if the job is in one of `expect.states` and (when
   * given) at `expect.attempt`. Returns the updated job, or undefined if the expectation failed.
   * This is how a result for a stale attempt is never applied twice.
   */
  updateJob(id: string, expect: { states: JobState[]; attempt?: number }, patch: JobPatch): Promise<StoredJob | undefined>

  // -- attempts ---------------------------------------------------------------------------
  /**
   * Inserts or updates the attempt row (jobId, attempt). Fields left undefined are kept, `null`
   * clears; a new row without `outcome` is `running`.
   */
  upsertAttempt(attempt: Partial<Attempt> & Pick<Attempt, 'jobId' | 'attempt'>): Promise<void>
  /** A job's attempts in attempt order. */
  listAttempts(jobId: string): Promise<Attempt[]>

  // -- blocks, events, meta ------------------------------------------------------------------
  /** Upserts blocks by number (a different hash replaces the row: a reorg; the same hash keeps it). */
  recordBlocks(blocks: BlockRecord[]): Promise<void>
  /**
   * Highest block number recorded and the count of blocks, or undefined when none. Counting
   * reads every block row: for a loop that only needs the highest block use `latestBlock`.
   */
  blockStats(): Promise<{ count: number; min: number; max: number } | undefined>
  /** Highest block number recorded, or undefined when none; cheap however many blocks are stored (an index lookup). */
  latestBlock(): Promise<number | undefined>
  /** Blocks with `from <= number <= to`, by number ascending, at most `limit` (the lowest ones). */
  listBlocks(range: { from: number; to: number; limit?: number }): Promise<BlockRecord[]>
  recordEvent(event: PipelineEvent): Promise<void>
  /** Events newest first (by `at`), filtered by kind and job, at most `limit`. */
  listEvents(opts?: { kind?: PipelineEvent['kind']; jobId?: string; limit?: number }): Promise<PipelineEvent[]>
  getMeta(key: string): Promise<string | undefined>
  setMeta(key: string, value: string): Promise<void>

  /** Releases connections (and stops an embedded server this store started). */
  close(): Promise<void>
}
