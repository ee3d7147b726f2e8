import type { ArtifactRef, JobInput } from '../core/types.js'

/** What an executor is asked to do: one attempt of one job. */
export interface ExecuteRequest {
  job: {
    id: string
    stage: string
    attempt: number
    first: number
    last: number
    lastHash: string
    programId: string
  }
  inputs: JobInput[]
  /**
   * Aborting kills the work (for a process: its whole process group); the attempt then rejects
   * with a `transient` `ExecutorError` whose `details.aborted` is true.
   */
  signal: AbortSignal
  /** Called periodically while the work runs, so the caller can extend its lease. */
  onHeartbeat?: () => void
  /**
   * Reports something operators should see about this attempt that is not its result (a shadow
   * prover's verdict); the dispatcher publishes it as an event the orchestrator records on the
   * job. May be called after `execute` settled. Must not throw; never changes the result.
   */
  onObservation?: (observation: ExecutorObservation) => void
}

/** Something an executor noticed about an attempt, recorded as an event of the job (see `onObservation`). */
export interface ExecutorObservation {
  /** The event kind it is recorded as. */
  kind: 'shadow'
  /** One line for people. */
  message: string
  /** JSON-safe details (agreement, latencies, costs). */
  details: Record<string, unknown>
}

/** What an executor returns on success. It is validated before it is believed. */
export interface ExecuteResult {
  output: Record<string, unknown>
  proof?: ArtifactRef
  /** Last lines of the executor's stderr, kept with the attempt. */
  stderrTail?: string
  durationMs: number
  /** What the attempt cost, in the operator's unit, when the executor knows it (a remote service's bill). */
  cost?: number
}

/**
 * Does the work of one job attempt. On failure it throws `ExecutorError` whose
 * `failureClass` tells the orchestrator whether to retry, split or dead-letter.
 */
export interface Executor {
  /** `process`, `mock`, `http`, `builtin`, `shadow`, … */
  readonly kind: string
  execute(req: ExecuteRequest): Promise<ExecuteResult>
  /** Stops child processes and releases resources. */
  close(): Promise<void>
}

/**
 * The abort reason of a caller that stops because it is shutting down, not because the attempt
 * is over: the job goes back to the bus and another dispatcher will run the same attempt. An
 * executor whose work lives elsewhere (a remote prover service) leaves that work running on
 * such an abort, so the next dispatcher resumes it instead of paying for it again; on any other
 * abort reason it cancels the work. See `isDetach`.
 */
export class DetachReason extends Error {
  override readonly name = 'DetachReason'
}

/** Whether an abort reason says "detach, the attempt will be resumed" (see `DetachReason`). */
export function isDetach(reason: unknown): boolean {
  return reason instanceof DetachReason
}
