import type { PipelineContext } from './context.js'
import { dispatchJob } from './jobs.js'
import { controlSubject, type ControlMessage } from './messages.js'

/** Meta key of the paused stages (a JSON array of names), so a pause survives restarts. */
const PAUSED_KEY = 'control.paused'

/** The outcome of a pause or resume. */
export interface StageControlResult {
  ok: boolean
  stage: string
  paused: boolean
  /** Pause: attempts published but not started, taken back. Resume: jobs published again. */
  jobs: number
  error?: string
}

/** The outcome of a drain or undrain request. */
export interface DrainResult {
  ok: true
  workerId: string
  /** The control subjects the request went out on (one per stage). */
  subjects: string[]
}

/**
 * Operator controls of a running pipeline.
 *
 * **Pause / resume a stage.** Workers have no database, and remote ones only see the bus, so a
 * pause is done where jobs are published: the orchestrator.
 * 1. While a stage is paused, `dispatchJob` publishes none of its jobs; they stay in the
 *    state store with `dispatchedAttempt < attempt` (new jobs, retries, requeues alike).
 * 2. Attempts already published but not started are taken back: each such job gets its next
 *    attempt number (and one more in its attempt budget, so a pause costs no retry), and every
 *    worker of the stage is told on `control.<stage>` that the old attempt is superseded, so it
 *    is skipped when delivered. A worker started later never sees the old attempt run: its
 *    result, if it ever came, would be for a superseded attempt.
 * 3. Jobs already running finish (a pause stops *taking* jobs; cancel a job to stop it).
 * 4. Resume publishes every unpublished job of the stage at once (the recovery sweep would
 *    within `sweepIntervalMs` anyway).
 * The paused set is kept in the state store (meta `control.paused`), so a restarted
 * orchestrator stays paused. In-process dispatchers and remote workers are treated alike:
 * both only ever get jobs through the bus.
 *
 * The window left: a worker that takes an old attempt at the very moment it is withdrawn runs
 * it; its verified result is accepted once like any stale attempt's (docs/operations.md).
 *
 * **Drain a worker.** A `drain` control message on every stage's control subject; the
 * dispatcher with that worker id stops taking jobs, finishes the ones it runs, and reports
 * `drained` on `workers` (a `proofline worker` process then exits 0). `undrain` takes it back.
 */
export interface StageControls {
  /** Reads the paused set from the state store (call before the pipeline starts). */
  load(): Promise<void>
  isPaused(stage: string): boolean
  /** Marks a publication of one of `stage`'s jobs in progress (see `dispatchJob`); call the result when done. */
  begin(stage: string): () => void
  paused(): string[]
  pause(stage: string): Promise<StageControlResult>
  resume(stage: string): Promise<StageControlResult>
  drain(workerId: string): Promise<DrainResult>
  undrain(workerId: string): Promise<DrainResult>
}

/** Creates the controls of the pipeline in `ctx` (stages from `ctx.config`). */
export function stageControls(ctx: PipelineContext): StageControls {
  const paused = new Set<string>()
  // Publications in progress per stage: a pause waits for them, so none slips past its withdrawal.
  const publishing = new Map<string, number>()
  const idle = new Map<string, (() => void)[]>()
  function begin(stage: string): () => void {
    publishing.set(stage, (publishing.get(stage) ?? 0) + 1)
    let ended = false
    return () => {
      if (ended) return
      ended = true
      const n = (publishing.get(stage) ?? 1) - 1
      publishing.set(stage, n)
      if (n === 0) for (const w of idle.get(stage)?.splice(0) ?? []) w()
    }
  }
  function settled(stage: string): Promise<void> {
    if ((publishing.get(stage) ?? 0) === 0) return Promise.resolve()
    return new Promise((r) => {
      const waiting = idle.get(stage) ?? []
      waiting.push(r)
      idle.set(stage, waiting)
    })
  }
  const log = ctx.log.child({ part: 'controls' })
  const stages = ctx.config.stages.map((s) => s.name)
  const known = (stage: string): string | undefined => (stages.includes(stage) ? undefined : `no stage named "${stage}" (stages: ${stages.join(', ')})`)

  async function save(): Promise<void> {
    await ctx.state.setMeta(PAUSED_KEY, JSON.stringify([...paused].sort()))
  }

  async function withdraw(stage: string): Promise<number> {
    let n = 0
    for (const job of await ctx.state.listJobs({ stage, states: ['pending', 'retrying'] })) {
      if (job.dispatchedAttempt < job.attempt) continue // never published: nothing to take back
      const bumped = await ctx.state.transaction(async (tx) => {
        const u = await tx.updateJob(job.id, { states: ['pending', 'retrying'], attempt: job.attempt }, { attempt: job.attempt + 1, maxAttempts: job.maxAttempts + 1 })
        if (u) {
          await tx.recordEvent({
            at: ctx.now(),
            kind: 'admin',
            jobId: job.id,
            message: `stage ${stage} paused: attempt ${job.attempt} withdrawn before it started; attempt ${u.attempt} is published on resume`,
            details: { action: 'withdraw', attempt: job.attempt, first: job.first, last: job.last },
          })
        }
        return u
      })
      if (!bumped) continue // started (or finished) meanwhile: it runs to its end
      await ctx.bus.publish<ControlMessage>(controlSubject(stage), { id: `superseded:${job.id}#${job.attempt}`, data: { type: 'superseded', jobId: job.id, attempt: job.attempt } })
      n++
    }
    return n
  }

  async function sendDrain(type: 'drain' | 'undrain', workerId: string): Promise<DrainResult> {
    const at = ctx.now()
    const subjects = stages.map(controlSubject)
    for (const subject of subjects) await ctx.bus.publish<ControlMessage>(subject, { id: `${type}:${workerId}:${at}`, data: { type, workerId, at } })
    await ctx.state.recordEvent({ at, kind: 'admin', jobId: null, message: `${type} requested for worker ${workerId}`, details: { action: type, workerId } })
    log.warn({ workerId, action: type }, `${type} requested by an operator`)
    return { ok: true, workerId, subjects }
  }

  return {
    async load() {
      const raw = await ctx.state.getMeta(PAUSED_KEY)
      paused.clear()
      for (const s of raw ? (JSON.parse(raw) as string[]) : []) if (stages.includes(s)) paused.add(s)
      if (paused.size > 0) log.warn({ paused: [...paused] }, 'stages paused by an operator (resume with `proofline resume STAGE`)')
    },
    isPaused: (stage) => paused.has(stage),
    begin,
    paused: () => [...paused].sort(),
    async pause(stage) {
      const bad = known(stage)
      if (bad) return { ok: false, stage, paused: false, jobs: 0, error: bad }
      paused.add(stage)
      await save()
      await settled(stage)
      const jobs = await withdraw(stage)
      await ctx.state.recordEvent({ at: ctx.now(), kind: 'admin', jobId: null, message: `stage ${stage} paused (${jobs} queued attempts withdrawn)`, details: { action: 'pause', stage, withdrawn: jobs } })
      log.warn({ stage, withdrawn: jobs }, 'stage paused by an operator: its jobs are not published until resumed')
      return { ok: true, stage, paused: true, jobs }
    },
    async resume(stage) {
      const bad = known(stage)
      if (bad) return { ok: false, stage, paused: paused.has(stage), jobs: 0, error: bad }
      paused.delete(stage)
      await save()
      let jobs = 0
      for (const job of await ctx.state.listJobs({ stage, states: ['pending', 'retrying'], undispatched: true })) {
        if (ctx.controls?.isPaused(stage)) break // paused again meanwhile
        await dispatchJob(ctx, job)
        jobs++
      }
      await ctx.state.recordEvent({ at: ctx.now(), kind: 'admin', jobId: null, message: `stage ${stage} resumed (${jobs} jobs published)`, details: { action: 'resume', stage, published: jobs } })
      log.warn({ stage, published: jobs }, 'stage resumed by an operator')
      return { ok: true, stage, paused: false, jobs }
    },
    drain: (workerId) => sendDrain('drain', workerId),
    undrain: (workerId) => sendDrain('undrain', workerId),
  }
}
