import type { Logger } from 'pino'
import type { ArtifactStore } from '../artifacts/types.js'
import type { Bus, Delivery } from '../bus/types.js'
import { errorMessage, ExecutorError, type FailureClass } from '../core/errors.js'
import type { JobInput } from '../core/types.js'
import { DetachReason, type Executor } from '../executors/types.js'
import { controlSubject, eventsSubject, jobsSubject, resultsSubject, type ControlMessage, type EventMessage, type JobMessage, type ResultMessage } from './messages.js'
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
  /** The pool this dispatcher serves; absent = the stage's first (primary) pool. */
  pool?: string
  /** What this worker can do; a job whose requirements it lacks is passed on, never run. */
  capabilities?: WorkerCapabilities
  /** How long a job this worker cannot take is held back before it is offered again. @default 250 */
  passDelayMs?: number
  log: Logger
}

/** A worker's capabilities, matched against each job's requirements. */
export interface WorkerCapabilities {
  /** Labels this worker has (e.g. `gpu`); a job requiring a label it lacks is not taken. */
  labels: string[]
  /** Largest job cost it takes. @default unlimited */
  maxCost?: number
  /** Program ids it can prove. @default any */
  programs?: string[]
}

/** Why a worker cannot take a job, or null when it can. */
export function capabilityMismatch(caps: WorkerCapabilities | undefined, req: JobMessage['requirements']): string | null {
  if (!caps || !req) return null
  const missing = req.labels.filter((l) => !caps.labels.includes(l))
  if (missing.length > 0) return `missing labels ${missing.join(', ')}`
  if (caps.maxCost !== undefined && req.cost > caps.maxCost) return `cost ${req.cost} exceeds max ${caps.maxCost}`
  if (caps.programs !== undefined && !caps.programs.includes(req.programId)) return `program ${req.programId} not supported`
  return null
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
  let control: Promise<void> | undefined
  const heartbeatEventMs = opts.heartbeatEventMs ?? 5_000
  const log = opts.log.child({ stage: opts.stage, worker: opts.workerId })

  // Attempts the orchestrator moved to another pool; bounded, most recent kept.
  const superseded = new Set<string>()
  async function onControl(d: Delivery<ControlMessage>): Promise<void> {
    if (d.data.type === 'superseded') {
      superseded.add(`${d.data.jobId}#${d.data.attempt}`)
      if (superseded.size > 10_000) superseded.delete(superseded.values().next().value as string)
    }
    await d.ack()
  }

  async function handle(delivery: Delivery<JobMessage>): Promise<void> {
    const job = delivery.data
    const jlog = log.child({ job: job.jobId, attempt: job.attempt })
    if (superseded.has(`${job.jobId}#${job.attempt}`)) {
      jlog.debug('attempt moved to another pool; skipped')
      await delivery.ack()
      return
    }
    const mismatch = capabilityMismatch(opts.capabilities, job.requirements)
    if (mismatch !== null) {
      // Never run a job this worker cannot do; another worker of the group will get it.
      jlog.debug({ mismatch }, 'job passed on')
      await delivery.retryLater(opts.passDelayMs ?? 250)
      return
    }
    if (job.avoidWorkers.includes(opts.workerId) && delivery.deliveryCount <= 3) {
      // Another worker may take it; after a few passes we run it anyway rather than starve it.
      await delivery.retryLater(opts.avoidDelayMs ?? 1_000)
      return
    }
    inFlight++
    const started = Date.now()
    const publishEvent = (type: 'started' | 'heartbeat', at: number): Promise<unknown> =>
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
          onObservation: (observation) => {
            // Fire and forget: an observation (a shadow's verdict) may come after the result, and never holds it up.
            const at = Date.now()
            opts.bus
              .publish<EventMessage>(eventsSubject(opts.stage), {
                id: `${job.jobId}#${job.attempt}:observation:${observation.kind}:${opts.workerId}:${delivery.deliveryCount}:${at}`,
                data: { type: 'observation', jobId: job.jobId, attempt: job.attempt, workerId: opts.workerId, at, observation },
              })
              .catch((err: unknown) => jlog.warn({ err: errorMessage(err), kind: observation.kind }, 'observation not published'))
          },
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
      control = opts.bus
        .consume<ControlMessage>(controlSubject(opts.stage), `control-${opts.stage}-${opts.workerId.replace(/[^A-Za-z0-9_-]/g, '-')}`, onControl, { signal: abort.signal, concurrency: 1 })
        .catch((err: unknown) => log.error({ err: errorMessage(err) }, 'control consumer stopped'))
      loop = opts.bus
        .consume<JobMessage>(jobsSubject(opts.stage, opts.pool), opts.pool === undefined ? `dispatch-${opts.stage}` : `dispatch-${opts.stage}-${opts.pool}`, handle, {
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
      // Detach, not cancel: in-flight jobs go back to the bus, and remote work may be resumed.
      abort.abort(new DetachReason('dispatcher stopping: in-flight jobs go back to the bus'))
      await loop
      await control
      await opts.executor.close()
      state = 'stopped'
    },
  }
}
