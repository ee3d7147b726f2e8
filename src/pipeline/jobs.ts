import { jobMessageId } from '../core/ids.js'
import type { StoredJob } from '../state/types.js'
import type { PipelineContext } from './context.js'
import { jobsSubject, type JobMessage } from './messages.js'

/**
 * Publishes the current attempt of a job to its stage's dispatchers, then records that it
 * did. Safe to repeat: the message id is `<job>#<attempt>`, so a repeat within the bus's
 * dedupe window is dropped, and a dispatcher that gets a stale attempt reports a result the
 * recorder ignores.
 */
export async function dispatchJob(ctx: PipelineContext, job: StoredJob, avoidWorkers: string[] = [], pool?: string): Promise<void> {
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
  await ctx.state.updateJob(job.id, { states: ['pending', 'retrying'], attempt: job.attempt }, { dispatchedAttempt: job.attempt })
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
  await dispatchJob(ctx, next)
  return { ok: true, jobId: id, attempt: next.attempt }
}
