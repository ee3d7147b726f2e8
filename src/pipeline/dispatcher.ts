import type { Logger } from 'pino'
import type { ArtifactStore } from '../artifacts/types.js'
import type { Bus, Delivery } from '../bus/types.js'
import { errorMessage, ExecutorError, type FailureClass } from '../core/errors.js'
import type { JobInput } from '../core/types.js'
import { DetachReason, type Executor } from '../executors/types.js'
import {
  controlSubject,
  eventsSubject,
  jobsSubject,
  resultsSubject,
  WORKERS_SUBJECT,
  type ControlMessage,
  type EventMessage,
  type JobMessage,
  type ResultMessage,
  type WorkerStatusMessage,
} from './messages.js'
import { crashPoint } from '../core/crash.js'
import { decodeControlMessage, decodeJobMessage, decoded } from './decode.js'

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
  /** How often it reports its presence on `workers` (also on every state change). @default 10000 */
  presenceIntervalMs?: number
  /** Called once a `drain` for this worker completed: it takes no jobs and runs none. */
  onDrained?: () => void
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

/**
 * A dispatcher. `idle` → `start()` → `running`; a `drain` control message → `draining` (no new
 * jobs, running ones finish) → `drained`; `undrain` → `running`; `stop()` → `stopped`.
 */
export interface Dispatcher {
  readonly state: 'idle' | 'running' | 'draining' | 'drained' | 'stopped'
  /** How many jobs are running now. */
  readonly inFlight: number
  start(): void
  /** Stops taking jobs; running executors are killed and their jobs go back to the bus. */
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

  // Attempts the orchestrator moved to another pool, withdrew or cancelled; bounded, most recent kept.
  const superseded = new Set<string>()
  // Attempts running here, so an operator's cancel can stop one.
  const running = new Map<string, { cancel: AbortController; job: JobMessage; startedAt: number }>()
  async function onControl(d: Delivery<ControlMessage>): Promise<void> {
    const c = d.data
    if (c.type === 'superseded' || c.type === 'cancel') {
      const key = `${c.jobId}#${c.attempt}`
      superseded.add(key)
      if (superseded.size > 10_000) superseded.delete(superseded.values().next().value as string)
      if (c.type === 'cancel') {
        const r = running.get(key)
        if (r) {
          log.warn({ job: c.jobId, attempt: c.attempt, first: r.job.first, last: r.job.last }, 'cancelled by an operator: stopping the attempt')
          r.cancel.abort()
        }
      }
    } else if (c.workerId === opts.workerId) {
      if (c.type === 'drain') drain()
      else undrain()
    }
    await d.ack()
  }

  // The job consumer has its own abort: a drain stops taking jobs without killing running ones.
  let intake = new AbortController()
  let draining: Promise<void> | undefined
  function consumeJobs(): void {
    intake = new AbortController()
    loop = opts.bus
      .consume<JobMessage>(jobsSubject(opts.stage, opts.pool), opts.pool === undefined ? `dispatch-${opts.stage}` : `dispatch-${opts.stage}-${opts.pool}`, decoded(decodeJobMessage, log, handle), {
        signal: AbortSignal.any([intake.signal, abort.signal]),
        concurrency: opts.concurrency ?? 1,
        ackWaitMs: opts.ackWaitMs ?? 30_000,
        // Attempts are counted by the orchestrator; the bus only redelivers after crashes.
        maxDeliver: 1_000,
        retryDelayMs: 1_000,
      })
      .catch((err: unknown) => log.error({ err: errorMessage(err) }, 'dispatcher stopped on error'))
  }
  function drain(): void {
    if (state !== 'running') return
    state = 'draining'
    log.info({ inFlight }, 'draining: no new jobs; running ones finish')
    reportPresence()
    intake.abort()
    const l = loop
    draining = (async () => {
      await l
      if (state !== 'draining') return
      state = 'drained'
      log.info('drained')
      reportPresence()
      opts.onDrained?.()
    })()
  }
  function undrain(): void {
    if (state !== 'drained' && state !== 'draining') return
    void (async () => {
      await draining
      if (state !== 'drained') return
      state = 'running'
      log.info('undrained: taking jobs again')
      consumeJobs()
      reportPresence()
    })()
  }

  const presenceSeq = { n: 0 }
  function reportPresence(): void {
    const at = Date.now()
    const msg: WorkerStatusMessage = {
      workerId: opts.workerId,
      stage: opts.stage,
      pool: opts.pool ?? null,
      state: state === 'idle' ? 'running' : state,
      running: [...running.values()].map((r) => ({ jobId: r.job.jobId, attempt: r.job.attempt, first: r.job.first, last: r.job.last, startedAt: r.startedAt })),
      concurrency: opts.concurrency ?? 1,
      labels: opts.capabilities?.labels ?? [],
      at,
    }
    presenceSeq.n++
    opts.bus
      .publish<WorkerStatusMessage>(WORKERS_SUBJECT, { id: `${opts.workerId}:${opts.stage}:${at}:${presenceSeq.n}`, data: msg })
      .catch((err: unknown) => log.debug({ err: errorMessage(err) }, 'presence report failed'))
  }
  let presence: NodeJS.Timeout | undefined

  async function handle(delivery: Delivery<JobMessage>): Promise<void> {
    const job = delivery.data
    const jlog = log.child({ job: job.jobId, attempt: job.attempt, first: job.first, last: job.last })
    if (superseded.has(`${job.jobId}#${job.attempt}`)) {
      jlog.debug('attempt superseded (moved, withdrawn or cancelled); skipped')
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
    if (state === 'draining' || state === 'drained') {
      // Claimed just as a drain began: back to the group for another worker.
      await delivery.retryLater(100)
      return
    }
    if (job.avoidWorkers.includes(opts.workerId) && delivery.deliveryCount <= 3) {
      // Another worker may take it; after a few passes we run it anyway rather than starve it.
      await delivery.retryLater(opts.avoidDelayMs ?? 1_000)
      return
    }
    inFlight++
    const started = Date.now()
    const key = `${job.jobId}#${job.attempt}`
    // Aborted by an operator's cancel, or by stop() (then the job goes back to the bus).
    const cancel = new AbortController()
    // The stop's reason (a DetachReason) reaches the executor: remote work is left to be resumed.
    const onStop = (): void => cancel.abort(abort.signal.reason)
    abort.signal.addEventListener('abort', onStop, { once: true })
    running.set(key, { cancel, job, startedAt: started })
    const publishEvent = (type: 'started' | 'heartbeat', at: number): Promise<unknown> =>
      opts.bus.publish<EventMessage>(eventsSubject(opts.stage), {
        id: `${job.jobId}#${job.attempt}:${type}:${opts.workerId}:${delivery.deliveryCount}:${type === 'heartbeat' ? at : 0}`,
        data: { type, jobId: job.jobId, attempt: job.attempt, workerId: opts.workerId, at },
      })
    try {
      // The inputs are read while the started event waits for its acknowledgement; both are done before the executor runs.
      const [, raw] = await Promise.all([publishEvent('started', started), opts.artifacts.get(job.inputs)])
      let lastEvent = started
      const inputs = JSON.parse(Buffer.from(raw).toString('utf8')) as JobInput[]
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
          signal: cancel.signal,
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
        const cancelled = cancel.signal.aborted
        const failureClass: FailureClass = !cancelled && err instanceof ExecutorError ? err.failureClass : 'transient'
        const stderrTail = err instanceof ExecutorError && typeof err.details.stderrTail === 'string' ? err.details.stderrTail : undefined
        const badInputs = failureClass === 'bad-input' && err instanceof ExecutorError ? badInputIds(err.details.badInputs) : undefined
        jlog.warn({ failureClass, err: errorMessage(err) }, 'attempt failed')
        result = {
          ok: false,
          jobId: job.jobId,
          attempt: job.attempt,
          workerId: opts.workerId,
          durationMs: Date.now() - started,
          failureClass,
          error: cancelled ? `cancelled by an operator (${errorMessage(err)})` : errorMessage(err),
          ...(stderrTail ? { stderrTail } : {}),
          ...(badInputs ? { badInputs } : {}),
        }
      }
      await opts.bus.publish<ResultMessage>(resultsSubject(opts.stage), {
        id: `${job.jobId}#${job.attempt}:result:${opts.workerId}:${delivery.deliveryCount}`,
        data: result,
      })
      await delivery.ack()
      jlog.info({ ok: result.ok, durationMs: result.durationMs }, result.ok ? 'attempt finished' : 'attempt failed: reported')
    } finally {
      inFlight--
      running.delete(key)
      abort.signal.removeEventListener('abort', onStop)
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
        .consume<ControlMessage>(controlSubject(opts.stage), `control-${opts.stage}-${opts.workerId.replace(/[^A-Za-z0-9_-]/g, '-')}`, decoded(decodeControlMessage, log, onControl), { signal: abort.signal, concurrency: 1 })
        .catch((err: unknown) => log.error({ err: errorMessage(err) }, 'control consumer stopped'))
      consumeJobs()
      reportPresence()
      presence = setInterval(reportPresence, opts.presenceIntervalMs ?? 10_000)
      presence.unref()
    },
    async stop() {
      if (state === 'stopped') return
      state = 'draining'
      if (presence) clearInterval(presence)
      // Detach, not cancel: in-flight jobs go back to the bus, and remote work may be resumed.
      abort.abort(new DetachReason('dispatcher stopping: in-flight jobs go back to the bus'))
      await loop
      await control
      await draining
      await opts.executor.close()
      state = 'stopped'
      reportPresence()
    },
  }
}

/** The job ids an executor's `bad-input` error names (`details.badInputs`), if well formed. */
function badInputIds(v: unknown): string[] | undefined {
  if (!Array.isArray(v) || v.length === 0 || v.length > 64) return undefined
  return v.every((x): x is string => typeof x === 'string' && x.length > 0 && x.length <= 1024) ? v : undefined
}
