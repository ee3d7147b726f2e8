import { jobMessageId } from '../core/ids.js'
import type { StoredJob } from '../state/types.js'
import type { PipelineContext } from './context.js'
import { controlSubject, jobsSubject, type ControlMessage, type JobMessage } from './messages.js'

/**
 * Publishes the current attempt of a job to its stage's dispatchers, then records that it
 * did. Safe to repeat: the message id is `<job>#<attempt>`, so a repeat within the bus's
 * dedupe window is dropped, and a dispatcher that gets a stale attempt reports a result the
 * recorder ignores.
 */
export async function dispatchJob(ctx: PipelineContext, job: StoredJob, avoidWorkers: string[] = [], pool?: string): Promise<void> {
  // A paused stage's jobs stay unpublished (dispatchedAttempt < attempt): the sweep publishes
  // them once the stage is resumed.
  if (ctx.controls?.isPaused(job.stage)) return
  const done = ctx.controls?.begin(job.stage)
  try {
    await publishJob(ctx, job, avoidWorkers, pool)
  } finally {
    done?.()
  }
}

/** Jobs a batch publishes at once (each is published, then marked dispatched). */
export const DISPATCH_CONCURRENCY = 16

/**
 * `dispatchJob` for many jobs (their primary pools): publishes `DISPATCH_CONCURRENCY` at a
 * time, then records every published attempt in one write (`markDispatched`). A restart with
 * thousands of queued jobs, or a collector closing several groups at once, costs a few round
 * trips per batch instead of three per job. The order per job is kept — published before
 * recorded as published — so a crash anywhere leaves each job either recorded or published
 * again by the next sweep (deduplicated by its message id). On a failure, the attempts
 * published so far are still recorded, then the first error is thrown.
 */
export async function dispatchJobs(ctx: PipelineContext, jobs: readonly StoredJob[], opts: DispatchJobsOptions = {}): Promise<void> {
  const todo = jobs.filter((j) => !ctx.controls?.isPaused(j.stage))
  if (todo.length === 0) return
  const ends = [...new Set(todo.map((j) => j.stage))].map((s) => ctx.controls?.begin(s))
  try {
    const sent: { id: string; attempt: number }[] = []
    let next = 0
    let failure: { err: unknown } | undefined
    const worker = async (): Promise<void> => {
      while (failure === undefined && next < todo.length) {
        let job = todo[next++] as StoredJob
        try {
          if (opts.readInputs) {
            // Read with its inputs just before it goes out: only the jobs in flight hold theirs.
            const current = await ctx.state.getJob(job.id)
            if (!current || current.attempt !== job.attempt || current.dispatchedAttempt >= current.attempt || (current.state !== 'pending' && current.state !== 'retrying')) continue
            job = current
          }
          await sendJob(ctx, job, [], undefined)
          sent.push({ id: job.id, attempt: job.attempt })
        } catch (err) {
          failure ??= { err }
        }
      }
    }
    await Promise.all(Array.from({ length: Math.min(DISPATCH_CONCURRENCY, todo.length) }, worker))
    if (sent.length > 0) await ctx.state.markDispatched(sent)
    if (failure !== undefined) throw failure.err
  } finally {
    for (const end of ends) end?.()
  }
}

/** Options of {@link dispatchJobs}. */
export interface DispatchJobsOptions {
  /**
   * The jobs were listed without their inputs (`omitInputs`): read each one again, with its
   * inputs, right before publishing it (skipping it if it changed meanwhile). A batch of queued
   * jobs then never holds every job's inputs at once. @default false
   */
  readInputs?: boolean
}

async function publishJob(ctx: PipelineContext, job: StoredJob, avoidWorkers: string[], pool: string | undefined): Promise<void> {
  await sendJob(ctx, job, avoidWorkers, pool)
  // markDispatched, not updateJob: concurrent dispatches share one write (the store group-commits them).
  await ctx.state.markDispatched([{ id: job.id, attempt: job.attempt }])
}

/** Puts the job's inputs in the artifact store and publishes its current attempt (not yet recorded as published). */
async function sendJob(ctx: PipelineContext, job: StoredJob, avoidWorkers: string[], pool: string | undefined): Promise<void> {
  const stage = ctx.config.stages.find((s) => s.name === job.stage)
  const primary = stage?.dispatch.pools[0]?.name
  const inputs = await ctx.artifacts.put(Buffer.from(JSON.stringify(job.inputs)), { prefix: 'inputs' })
  const message: JobMessage = {
    jobId: job.id,
    stage: job.stage,
    attempt: job.attempt,
    first: job.first,
    last: job.last,
    lastHash: job.lastHash,
    programId: job.programId,
    inputs,
    avoidWorkers,
    requirements: { labels: stage?.dispatch.requireLabels ?? [], cost: job.cost, programId: job.programId },
    pool: pool ?? primary ?? 'default',
  }
  await ctx.bus.publish<JobMessage>(jobsSubject(job.stage, pool === undefined || pool === primary ? undefined : pool), {
    id: jobMessageId(job.id, job.attempt),
    data: message,
    ...(job.notBefore !== null && job.notBefore > ctx.now() ? { notBefore: job.notBefore } : {}),
  })
}

/** The outcome of an operator's requeue. */
export type RequeueResult = { ok: true; jobId: string; attempt: number } | { ok: false; jobId: string; error: string }

/**
 * Gives a dead or cancelled job one more attempt (and room for its retries): the operator
 * fixed the cause. Other states are refused: a running job is not restarted behind its back.
 */
export async function requeueJob(ctx: PipelineContext, id: string): Promise<RequeueResult> {
  const job = await ctx.state.getJob(id)
  if (!job) return { ok: false, jobId: id, error: `no job ${id}` }
  if (job.state !== 'dead' && job.state !== 'cancelled') {
    return { ok: false, jobId: id, error: `job is ${job.state}; only dead or cancelled jobs can be requeued` }
  }
  const next = await ctx.state.updateJob(
    id,
    { states: ['dead', 'cancelled'], attempt: job.attempt },
    { state: 'retrying', attempt: job.attempt + 1, notBefore: null, failureClass: null },
  )
  if (!next) return { ok: false, jobId: id, error: 'job changed while requeueing; try again' }
  await ctx.state.recordEvent({ at: ctx.now(), kind: 'retry', jobId: id, message: `requeued by an operator as attempt ${next.attempt}`, details: {} })
  ctx.log.warn({ job: id, stage: job.stage, first: job.first, last: job.last, attempt: next.attempt, was: job.state }, 'job requeued by an operator')
  await dispatchJob(ctx, next)
  return { ok: true, jobId: id, attempt: next.attempt }
}

/** The outcome of an operator's cancel. */
export type CancelResult = { ok: true; jobId: string; was: StoredJob['state']; attempt: number } | { ok: false; jobId: string; error: string }

/** States an operator may cancel a job from: it is not finished. */
const CANCELLABLE: StoredJob['state'][] = ['pending', 'retrying', 'running', 'failed']

/**
 * Cancels a job that is not finished (pending, retrying, running, failed): compare-and-set to
 * `cancelled`, a `cancelled` event, and a `cancel` control message on the stage's control
 * subject, so a worker that has the attempt queued skips it and one that runs it stops it (its
 * late report is recorded as stale). The blocks it covered stay unproven — later stages wait
 * for them — until the job is requeued (`requeueJob`).
 */
export async function cancelJob(ctx: PipelineContext, id: string, reason = 'cancelled by an operator'): Promise<CancelResult> {
  const job = await ctx.state.getJob(id)
  if (!job) return { ok: false, jobId: id, error: `no job ${id}` }
  if (!CANCELLABLE.includes(job.state)) return { ok: false, jobId: id, error: `job is ${job.state}; only pending, retrying, running or failed jobs can be cancelled` }
  const done = await ctx.state.transaction(async (tx) => {
    const u = await tx.updateJob(id, { states: [job.state], attempt: job.attempt }, { state: 'cancelled', leaseExpiresAt: null, lastError: reason })
    if (u) await tx.recordEvent({ at: ctx.now(), kind: 'cancelled', jobId: id, message: reason, details: { was: job.state, attempt: job.attempt, first: job.first, last: job.last } })
    return u
  })
  if (!done) return { ok: false, jobId: id, error: 'job changed while cancelling; try again' }
  await ctx.bus.publish<ControlMessage>(controlSubject(job.stage), { id: `cancel:${id}#${job.attempt}`, data: { type: 'cancel', jobId: id, attempt: job.attempt } })
  ctx.log.warn({ job: id, stage: job.stage, first: job.first, last: job.last, attempt: job.attempt, was: job.state }, 'job cancelled by an operator')
  return { ok: true, jobId: id, was: job.state, attempt: job.attempt }
}
