import type { ResolvedStage } from '../config/load.js'
import type { PipelineContext } from './context.js'
import { dispatchJob } from './jobs.js'
import { controlSubject, type ControlMessage } from './messages.js'

/**
 * Priority pools with overflow. Every job first goes to the stage's first pool (the own
 * cluster). A job still waiting — published, not started — for longer than the next pool's
 * `overflowAfterMs` moves there: its attempt number is bumped (compare-and-set, so a job a
 * worker started meanwhile stays where it is), the next attempt is published on that pool's
 * subject, and every worker is told that the old attempt is superseded so it is not started.
 * A job can move again, pool by pool, each time measured from when it entered the previous one.
 *
 * The one window left: a worker of the earlier pool that starts the old attempt at the very
 * moment it moves may run it alongside the overflow pool; the first verified result wins and
 * the other is recorded as stale. Moves count as attempts.
 *
 * Returns the number of jobs moved.
 */
export async function routeOverflow(ctx: PipelineContext, stage: ResolvedStage): Promise<number> {
  const pools = stage.dispatch.pools
  if (pools.length < 2) return 0
  const now = ctx.now()
  let moved = 0
  for (const job of await ctx.state.listJobs({ stage: stage.name, states: ['pending', 'retrying'] })) {
    if (job.dispatchedAttempt < job.attempt) continue // not published yet: the sweep does that
    const queuedSince = Math.max(job.updatedAt, job.notBefore ?? 0)
    const moves = await ctx.state.listEvents({ jobId: job.id, kind: 'overflow' })
    const here = moves.find((e) => e.details.attempt === job.attempt)
    const index = here ? pools.findIndex((p) => p.name === here.details.pool) : 0
    const next = pools[index + 1]
    if (!next || next.overflowAfterMs === undefined || now - queuedSince < next.overflowAfterMs) continue
    const bumped = await ctx.state.transaction(async (tx) => {
      const u = await tx.updateJob(job.id, { states: ['pending', 'retrying'], attempt: job.attempt }, { attempt: job.attempt + 1, notBefore: null })
      if (u) {
        await tx.recordEvent({
          at: now,
          kind: 'overflow',
          jobId: job.id,
          message: `waited ${now - queuedSince} ms in pool ${pools[index]?.name ?? '?'}; moved to ${next.name}`,
          details: { attempt: u.attempt, pool: next.name, from: pools[index]?.name ?? null, ageMs: now - queuedSince },
        })
      }
      return u
    })
    if (!bumped) continue
    await ctx.bus.publish<ControlMessage>(controlSubject(stage.name), {
      id: `superseded:${job.id}#${job.attempt}`,
      data: { type: 'superseded', jobId: job.id, attempt: job.attempt },
    })
    await dispatchJob(ctx, bumped, [], next.name)
    ctx.log.info({ stage: stage.name, job: job.id, first: job.first, last: job.last, pool: next.name, ageMs: now - queuedSince }, 'job overflowed to the next pool')
    moved++
  }
  return moved
}
