import type { Logger } from 'pino'
import type { ArtifactStore } from '../artifacts/types.js'
import type { Bus, Delivery } from '../bus/types.js'
import { errorMessage, ExecutorError, type FailureClass } from '../core/errors.js'
import type { JobInput } from '../core/types.js'
import type { Executor } from '../executors/types.js'
import { eventsSubject, jobsSubject, resultsSubject, type EventMessage, type JobMessage, type ResultMessage } from './messages.js'
import { crashPoint } from '../core/crash.js'

export interface DispatcherOptions {
  bus: Bus
  artifacts: ArtifactStore
  stage: string
  executor: Executor
  /** Identifies this dispatcher in attempts, events and `avoidWorkers`. */
  workerId: string
  /** Jobs run at once. @default 1 */
  concurrency?: number
  /** Bus lease of a job; heartbeats extend it. @default 30000 */
  ackWaitMs?: number
  /** Minimum interval between heartbeat events on the bus. @default 5000 */
  heartbeatEventMs?: number
  /** How long to hold back a job that asks to avoid this worker. @default 1000 */
  avoidDelayMs?: number
  log: Logger
}

/** A running dispatcher. */
export interface Dispatcher {
  readonly state: 'idle' | 'running' | 'draining' | 'stopped'
  /** How many jobs are running now. */
  readonly inFlight: number
  start(): void
  /** Stops taking jobs and waits for running ones to finish (or be killed when `signal` aborts). */
  stop(): Promise<void>
}

/**
 * Takes jobs of one stage from the bus, runs the executor, publishes the outcome on
 * `results.<stage>` and acks. It never touches the state store: the orchestrator records
 * what it reports, so the same code runs inside the orchestrator and on a remote worker.
 * Its lease is the bus's ack deadline, extended by heartbeats while the executor runs.
 */
export function createDispatcher(opts: DispatcherOptions): Dispatcher {
  const abort = new AbortController()
  let state: Dispatcher['state'] = 'idle'
  let inFlight = 0
  let loop: Promise<void> | undefined
  const heartbeatEventMs = opts.heartbeatEventMs ?? 5_000
  const log = opts.log.child({ stage: opts.stage, worker: opts.workerId })

  async function handle(delivery: Delivery<JobMessage>): Promise<void> {
    const job = delivery.data
    const jlog = log.child({ job: job.jobId, attempt: job.attempt })
    if (job.avoidWorkers.includes(opts.workerId) && delivery.deliveryCount <= 3) {
      // Another worker may take it; after a few passes we run it anyway rather than starve it.
      await delivery.retryLater(opts.avoidDelayMs ?? 1_000)
      return
    }
    inFlight++
    const started = Date.now()
    const publishEvent = (type: EventMessage['type'], at: number): Promise<unknown> =>
      opts.bus.publish<EventMessage>(eventsSubject(opts.stage), {
        id: `${job.jobId}#${job.attempt}:${type}:${opts.workerId}:${delivery.deliveryCount}:${type === 'heartbeat' ? at : 0}`,
        data: { type, jobId: job.jobId, attempt: job.attempt, workerId: opts.workerId, at },
      })
    try {
      await publishEvent('started', started)
      let lastEvent = started
      const inputs = JSON.parse(Buffer.from(await opts.artifacts.get(job.inputs)).toString('utf8')) as JobInput[]
      let result: ResultMessage
      try {
        crashPoint('dispatcher.before-execute')
        const out = await opts.executor.execute({
          job: {
            id: job.jobId,
            stage: job.stage,
            attempt: job.attempt,
            first: job.first,
            last: job.last,
            lastHash: job.lastHash,
            programId: job.programId,
          },
          inputs,
          signal: abort.signal,
          onHeartbeat: () => {
            crashPoint('dispatcher.mid-execute')
            void delivery.working().catch((err: unknown) => jlog.warn({ err: errorMessage(err) }, 'lease extension failed'))
            const now = Date.now()
            if (now - lastEvent >= heartbeatEventMs) {
              lastEvent = now
              publishEvent('heartbeat', now).catch((err: unknown) => jlog.warn({ err: errorMessage(err) }, 'heartbeat event failed'))
            }
          },
        })
        result = {
          ok: true,
          jobId: job.jobId,
          attempt: job.attempt,
          workerId: opts.workerId,
          durationMs: out.durationMs,
          output: out.output,
          ...(out.proof ? { proof: out.proof } : {}),
          ...(out.stderrTail ? { stderrTail: out.stderrTail } : {}),
        }
      } catch (err) {
        // Shutting down: report nothing; the bus redelivers the job (a plain Error is retryable).
        if (abort.signal.aborted) throw new Error('dispatcher stopping', { cause: err })
        const failureClass: FailureClass = err instanceof ExecutorError ? err.failureClass : 'transient'
        const stderrTail = err instanceof ExecutorError && typeof err.details.stderrTail === 'string' ? err.details.stderrTail : undefined
        jlog.warn({ failureClass, err: errorMessage(err) }, 'attempt failed')
        result = {
          ok: false,
          jobId: job.jobId,
          attempt: job.attempt,
          workerId: opts.workerId,
          durationMs: Date.now() - started,
          failureClass,
          error: errorMessage(err),
          ...(stderrTail ? { stderrTail } : {}),
        }
      }
      await opts.bus.publish<ResultMessage>(resultsSubject(opts.stage), {
        id: `${job.jobId}#${job.attempt}:result:${opts.workerId}:${delivery.deliveryCount}`,
        data: result,
      })
      await delivery.ack()
    } finally {
      inFlight--
    }
  }

  return {
    get state() {
      return state
    },
    get inFlight() {
      return inFlight
    },
    start() {
      if (state !== 'idle') return
      state = 'running'
      loop = opts.bus
        .consume<JobMessage>(jobsSubject(opts.stage), `dispatch-${opts.stage}`, handle, {
          signal: abort.signal,
          concurrency: opts.concurrency ?? 1,
          ackWaitMs: opts.ackWaitMs ?? 30_000,
          // Attempts are counted by the orchestrator; the bus only redelivers after crashes.
          maxDeliver: 1_000,
          retryDelayMs: 1_000,
        })
        .catch((err: unknown) => log.error({ err: errorMessage(err) }, 'dispatcher stopped on error'))
    },
    async stop() {
      if (state === 'stopped') return
      state = 'draining'
      abort.abort()
      await loop
      await opts.executor.close()
      state = 'stopped'
    },
  }
}
