import type { FailureClass } from '../core/errors.js'
import type { ExecutorObservation } from '../executors/types.js'
import type { ArtifactRef, StageResult } from '../core/types.js'

/**
 * Subject a stage's jobs are published on: `jobs.<stage>` for the first (primary) pool,
 * `jobs.<stage>.<pool>` for overflow pools.
 */
export const jobsSubject = (stage: string, pool?: string): string => (pool === undefined ? `jobs.${stage}` : `jobs.${stage}.${pool}`)
/** Subject the orchestrator tells a stage's workers about superseded or cancelled attempts and drains on (fan-out). */
export const controlSubject = (stage: string): string => `control.${stage}`
/** Subject every dispatcher reports its presence and state on (see {@link WorkerStatusMessage}). */
export const WORKERS_SUBJECT = 'workers'
/** Subject dispatchers report results on. */
export const resultsSubject = (stage: string): string => `results.${stage}`
/** Subject dispatchers report progress (started, heartbeat) on. */
export const eventsSubject = (stage: string): string => `events.${stage}`
/** Subject the block source publishes on. */
export const BLOCKS_SUBJECT = 'blocks'

/**
 * One attempt of one job, as sent to dispatchers. Inputs travel as an artifact reference:
 * a range of blocks is tens of KB, too large for a bus message.
 */
export interface JobMessage {
  jobId: string
  stage: string
  attempt: number
  first: number
  last: number
  lastHash: string
  programId: string
  inputs: ArtifactRef
  /** Workers that failed earlier attempts; a dispatcher in this list passes the job on when it can. */
  avoidWorkers: string[]
  /** What a worker needs to take the job; one that lacks it passes the job on, never runs it. */
  requirements?: { labels: string[]; cost: number; programId: string }
  /** The pool this attempt was sent to. */
  pool?: string
}

/**
 * Told to every worker of a stage (each worker has its own durable group):
 * - `superseded`: this attempt moved elsewhere (another pool, or withdrawn by a pause); do not start it.
 * - `cancel`: an operator cancelled the job; do not start this attempt, and stop it if it runs.
 * - `drain` / `undrain`: the worker `workerId` stops taking jobs (finishing those it runs) / takes them again.
 */
export type ControlMessage =
  | { type: 'superseded'; jobId: string; attempt: number }
  | { type: 'cancel'; jobId: string; attempt: number }
  | { type: 'drain'; workerId: string; at: number }
  | { type: 'undrain'; workerId: string; at: number }

/**
 * A dispatcher's presence report, published when it starts, when its state changes, and
 * every few seconds; the orchestrator's worker registry (the API and dashboard) is built
 * from these. A worker holds no database credentials, so this is how the orchestrator
 * learns which workers exist, what they run, and whether they drained.
 */
export interface WorkerStatusMessage {
  workerId: string
  stage: string
  pool: string | null
  state: 'running' | 'draining' | 'drained' | 'stopped'
  /** Attempts it runs now. */
  running: { jobId: string; attempt: number; first: number; last: number; startedAt: number }[]
  concurrency: number
  labels: string[]
  at: number
}

/**
 * A dispatcher's report that it started (or is still running) an attempt, or an executor's
 * observation about it (a shadow prover's verdict) for the orchestrator to record.
 */
export type EventMessage =
  | {
      type: 'started' | 'heartbeat'
      jobId: string
      attempt: number
      workerId: string
      at: number
    }
  | {
      type: 'observation'
      jobId: string
      attempt: number
      workerId: string
      at: number
      observation: ExecutorObservation
    }

/** A dispatcher's report of how an attempt ended. Never believed before it is checked. */
export type ResultMessage =
  | {
      ok: true
      jobId: string
      attempt: number
      workerId: string
      durationMs: number
      output: Record<string, unknown>
      proof?: ArtifactRef
      stderrTail?: string
    }
  | {
      ok: false
      jobId: string
      attempt: number
      workerId: string
      durationMs: number
      failureClass: FailureClass
      error: string
      stderrTail?: string
      /** With `bad-input`: the jobs whose results (inputs of this job) were found bad. */
      badInputs?: string[]
    }

/** What a stage publishes downstream: a verified result. */
export type OutputMessage = StageResult
