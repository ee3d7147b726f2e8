import type { Delivery } from '../bus/types.js'
import { crashPoint } from '../core/crash.js'
import { errorMessage, RETRYABLE_FAILURES, type FailureClass } from '../core/errors.js'
import { jobId } from '../core/ids.js'
import type { StageResult } from '../core/types.js'
import type { ResolvedStage } from '../config/load.js'
import type { NewJob, StoredJob } from '../state/types.js'
import { leaderAware, type PipelineContext } from './context.js'
import { dispatchJob } from './jobs.js'
import { checkBadInputs, repairedInputs, withdrawResult, type Withdrawn } from './repair.js'
import { eventsSubject, resultsSubject, type EventMessage, type OutputMessage, type ResultMessage } from './messages.js'
import { verifierFor, type ResultVerifier } from './verify.js'
import { decodeEventMessage, decodeResultMessage, decoded } from './decode.js'

/** The fields of an attempt's row every outcome writes. */
type AttemptBase = { jobId: string; attempt: number; workerId: string | null; endedAt: number; durationMs: number | null; stderrTail: string | null }

/** States in which a job still waits for a result of its current attempt. */
const OPEN: StoredJob['state'][] = ['pending', 'running', 'retrying']

/** Records what dispatchers report for one stage; the orchestrator's only writer of job outcomes. */
export interface Recorder {
  start(): void
  stop(): Promise<void>
  /** Applies the decision for a job left in `failed` (after a crash between the two steps). */
  decideFailed(job: StoredJob): Promise<void>
  /** Fails running jobs whose lease ran out without heartbeats. Returns how many. */
  expireLeases(): Promise<number>
  /** Publishes the result of a succeeded job downstream (idempotent). */
  publishResult(job: StoredJob): Promise<void>
}

/** Backoff for attempt `n` (1-based): doubling from `backoffMs`, capped, with ±20% jitter. */
export function backoffMs(stage: ResolvedStage, attempt: number, rand: () => number = Math.random): number {
  const base = Math.min(stage.retry.maxBackoffMs, stage.retry.backoffMs * 2 ** Math.max(0, attempt - 1))
  return Math.round(base * (0.8 + 0.4 * rand()))
}

/**
 * Consumes `results.<stage>` and `events.<stage>`. A success is believed only after the
 * stage's verifier accepts it; every state change is a compare-and-set on (state, attempt),
 * so a result for a stale attempt is either accepted once (it verifies and the job is not
 * done) or dropped — never applied twice.
 */
export function recorder(ctx: PipelineContext, stage: ResolvedStage): Recorder {
  const log = ctx.log.child({ stage: stage.name, part: 'recorder' })
  const verify = verifierFor(stage.verify, () => {
    const prover = ctx.config.prover
    if (prover === undefined) throw new TypeError(`stage ${stage.name}: verify: builtin needs the prover section`)
    // The proving backend's modules are loaded on the first result to verify, not by every
    // orchestrator: a pipeline with mock or external provers never needs them (tens of MB).
    let loaded: Promise<ResultVerifier> | undefined
    const load = async (): Promise<ResultVerifier> => {
      const [{ builtinVerifier }, { sharedBuiltinBackend }] = await Promise.all([import('./verify-builtin.js'), import('../backends/builtin/shared.js')])
      return builtinVerifier({
        // The stage that reads blocks proves ranges; a later stage aggregates their proofs.
        program: stage.input === 'blocks' ? 'range' : 'aggregate',
        backend: () => sharedBuiltinBackend(prover, { artifacts: ctx.artifacts }),
        artifacts: ctx.artifacts,
        chainConfigHash: prover.chainConfigHash as `0x${string}`,
      })
    }
    return async (job, output, proof) => {
      loaded ??= load().catch((err: unknown) => {
        loaded = undefined
        throw err
      })
      return (await loaded)(job, output, proof)
    }
  })
  const abort = new AbortController()
  const loops: Promise<void>[] = []

  async function onEvent(d: Delivery<EventMessage>): Promise<void> {
    const e = d.data
    const now = ctx.now()
    if (e.type === 'observation') {
      // Recorded, never acted on: a shadow's verdict does not touch the job or its result.
      const o = e.observation
      if (o.kind !== 'shadow') {
        log.warn({ job: e.jobId, kind: String(o.kind) }, 'observation of an unknown kind dropped')
        return
      }
      const details = { ...o.details, attempt: e.attempt, worker: e.workerId }
      await ctx.state.recordEvent({ at: e.at, kind: 'shadow', jobId: e.jobId, message: String(o.message).slice(0, 500), details })
      if (o.details['agreement'] === 'disagree') log.warn({ job: e.jobId, attempt: e.attempt, mismatches: o.details['mismatches'] }, 'shadow prover disagrees with the primary (recorded; the primary result stands)')
      return
    }
    if (e.type === 'started') {
      const job = await ctx.state.updateJob(e.jobId, { states: OPEN, attempt: e.attempt }, { state: 'running', heartbeatAt: now, leaseExpiresAt: now + stage.leaseMs })
      if (job) await ctx.state.upsertAttempt({ jobId: e.jobId, attempt: e.attempt, workerId: e.workerId, startedAt: e.at, outcome: 'running' })
    } else {
      await ctx.state.updateJob(e.jobId, { states: ['running'], attempt: e.attempt }, { heartbeatAt: now, leaseExpiresAt: now + stage.leaseMs })
    }
  }

  async function onResult(d: Delivery<ResultMessage>): Promise<void> {
    const r = d.data
    const job = await ctx.state.getJob(r.jobId)
    const jlog = log.child({ job: r.jobId, attempt: r.attempt, worker: r.workerId, ...(job ? { first: job.first, last: job.last } : {}) })
    if (!job) {
      jlog.warn('result for an unknown job dropped')
      return
    }
    const now = ctx.now()
    const attemptBase = { jobId: r.jobId, attempt: r.attempt, workerId: r.workerId, endedAt: now, durationMs: r.durationMs, stderrTail: r.stderrTail ?? null }
    if (!r.ok) {
      if (job.attempt !== r.attempt || !OPEN.includes(job.state)) {
        await ctx.state.upsertAttempt({ ...attemptBase, outcome: 'stale', failureClass: r.failureClass, error: r.error })
        return
      }
      if (r.failureClass === 'bad-input') {
        const claim = checkBadInputs(job, r.badInputs)
        if (!claim.ok) {
          await ctx.state.recordEvent({ at: now, kind: 'rejected-output', jobId: job.id, message: `bad-input report rejected: ${claim.reason}`, details: { attempt: r.attempt, worker: r.workerId } })
          await fail(job, 'invalid-output', `bad-input report rejected (${claim.reason}): ${r.error}`, attemptBase, r.workerId)
          return
        }
        await failOnBadInputs(job, claim.ids, r.error, attemptBase, r.workerId)
        return
      }
      await fail(job, r.failureClass, r.error, attemptBase, r.workerId)
      return
    }
    // A success claim: check it before believing it.
    const verdict = await verify(job, r.output, r.proof)
    if (!verdict.ok) {
      jlog.warn({ reason: verdict.reason }, 'executor output rejected')
      await ctx.state.recordEvent({ at: now, kind: 'rejected-output', jobId: job.id, message: verdict.reason, details: { attempt: r.attempt, worker: r.workerId } })
      if (job.attempt === r.attempt && OPEN.includes(job.state)) {
        await fail(job, 'invalid-output', `output rejected: ${verdict.reason}`, attemptBase, r.workerId)
      } else {
        await ctx.state.upsertAttempt({ ...attemptBase, outcome: 'rejected', failureClass: 'invalid-output', error: verdict.reason })
      }
      return
    }
    if (!OPEN.includes(job.state) && job.state !== 'failed') {
      // Done already (or cancelled/invalidated/split): a duplicate or late result.
      await recordLate(job, r.attempt, r.workerId)
      return
    }
    const result: StageResult = {
      jobId: job.id,
      stage: job.stage,
      first: job.first,
      last: job.last,
      lastHash: job.lastHash,
      output: r.output,
      cost: job.cost,
      ...(r.proof ? { proof: r.proof } : {}),
    }
    const stale = job.attempt !== r.attempt
    const updated = await ctx.state.transaction(async (tx) => {
      // CAS on the job's current attempt: a verified result of an older attempt may finish
      // the job, but only once.
      const u = await tx.updateJob(job.id, { states: [...OPEN, 'failed'], attempt: job.attempt }, { state: 'succeeded', result, failureClass: null, leaseExpiresAt: null })
      crashPoint('recorder.mid-success-tx')
      if (!u) return u
      await tx.upsertAttempt({ ...attemptBase, outcome: 'succeeded' })
      // Other attempts still marked running (a worker that died, a superseded attempt) are
      // over now: their results, if any ever come, will be stale.
      const rows = await tx.listAttempts(job.id)
      for (const a of rows) {
        if (a.outcome === 'running' && a.attempt !== r.attempt) await tx.upsertAttempt({ jobId: job.id, attempt: a.attempt, outcome: 'stale', endedAt: now })
      }
      // Every attempt is accounted for, including one published but never started.
      for (let n = 1; n <= job.attempt; n++) {
        if (n !== r.attempt && !rows.some((a) => a.attempt === n)) {
          await tx.upsertAttempt({ jobId: job.id, attempt: n, outcome: 'stale', endedAt: now, error: 'never started: the job finished first' })
        }
      }
      if (stale) {
        await tx.recordEvent({ at: now, kind: 'stale-result', jobId: job.id, message: `verified result of attempt ${r.attempt} accepted while attempt ${job.attempt} was current`, details: {} })
      }
      return u
    })
    if (!updated) {
      // Lost the race to another report of this job: it is done, this one is late.
      const now2 = await ctx.state.getJob(job.id)
      if (now2) await recordLate(now2, r.attempt, r.workerId)
      return
    }
    crashPoint('recorder.after-success-tx')
    jlog.info({ durationMs: r.durationMs }, 'job succeeded')
    await publishResult(updated)
  }

  /**
   * A report for a job that is already finished. The attempt that finished it keeps its
   * record; a late report of another attempt is recorded on that attempt as `stale`, and a
   * second report of the attempt that finished it (a redelivery) only as an event.
   */
  async function recordLate(job: StoredJob, attempt: number, workerId: string): Promise<void> {
    const rows = await ctx.state.listAttempts(job.id)
    if (rows.some((a) => a.attempt === attempt && a.outcome === 'succeeded')) {
      await ctx.state.recordEvent({ at: ctx.now(), kind: 'stale-result', jobId: job.id, message: `duplicate report of attempt ${attempt} from ${workerId} dropped`, details: { worker: workerId } })
      return
    }
    await ctx.state.upsertAttempt({ jobId: job.id, attempt, workerId, endedAt: ctx.now(), outcome: 'stale' })
  }

  async function publishResult(job: StoredJob): Promise<void> {
    if (!job.result || job.resultPublished) return
    await ctx.bus.publish<OutputMessage>(stage.output, { id: `${job.id}:result`, data: job.result })
    await ctx.state.updateJob(job.id, { states: ['succeeded'] }, { resultPublished: true })
  }

  async function fail(
    job: StoredJob,
    failureClass: FailureClass,
    error: string,
    attemptBase: AttemptBase,
    workerId: string | null,
  ): Promise<void> {
    const failed = await ctx.state.transaction(async (tx) => {
      const u = await tx.updateJob(job.id, { states: OPEN, attempt: job.attempt }, { state: 'failed', failureClass, lastError: error, leaseExpiresAt: null })
      if (u) await tx.upsertAttempt({ ...attemptBase, outcome: 'failed', failureClass, error, workerId })
      return u
    })
    crashPoint('recorder.after-failed-tx')
    if (failed) await decideFailed(failed, workerId)
  }

  /**
   * The attempt found some of the job's inputs bad (src/pipeline/repair.ts): in one
   * transaction the job waits in `failed` and each named input job has its result withdrawn,
   * then those are proved again away from the workers that made them.
   */
  async function failOnBadInputs(
    job: StoredJob,
    badIds: string[],
    error: string,
    attemptBase: AttemptBase,
    workerId: string,
  ): Promise<void> {
    const now = ctx.now()
    const out = await ctx.state.transaction(async (tx) => {
      const u = await tx.updateJob(job.id, { states: OPEN, attempt: job.attempt }, { state: 'failed', failureClass: 'bad-input', lastError: error, leaseExpiresAt: null })
      if (!u) return undefined
      await tx.upsertAttempt({ ...attemptBase, outcome: 'failed', failureClass: 'bad-input', error, workerId })
      const withdrawn: Withdrawn[] = []
      for (const id of badIds) {
        const w = await withdrawResult(tx, now, id, { foundBy: job.id, reason: error, reportedBy: workerId })
        if (w) withdrawn.push(w)
      }
      return { job: u, withdrawn }
    })
    if (!out) return
    log.warn({ job: job.id, first: job.first, last: job.last, badInputs: badIds, reproving: out.withdrawn.map((w) => w.job.id) }, 'inputs found bad: proving them again; the job waits for them')
    for (const w of out.withdrawn) await dispatchJob(ctx, w.job, w.avoid)
    await decideFailed(out.job, workerId)
  }

  /** failed → retrying (next attempt) | split | dead; `bad-input`: waits until its inputs are proved again. */
  async function decideFailed(job: StoredJob, failedWorker: string | null = null): Promise<void> {
    const cls = job.failureClass ?? 'transient'
    const now = ctx.now()
    const jlog = log.child({ job: job.id, attempt: job.attempt, first: job.first, last: job.last })
    if (cls === 'bad-input') {
      const inputs = await repairedInputs(ctx.state, job)
      // Still waiting for an input job (the recovery sweep looks again).
      if (inputs === undefined) return
      if (job.attempt < job.maxAttempts) {
        const next = await ctx.state.updateJob(job.id, { states: ['failed'], attempt: job.attempt }, { state: 'retrying', attempt: job.attempt + 1, inputs, notBefore: null })
        if (!next) return
        await ctx.state.recordEvent({ at: now, kind: 'retry', jobId: job.id, message: `inputs proved again after attempt ${job.attempt} found them bad: retrying`, details: { nextAttempt: next.attempt } })
        jlog.warn({ nextAttempt: next.attempt }, 'bad inputs proved again: retrying')
        await dispatchJob(ctx, next, failedWorker ? [failedWorker] : [])
        return
      }
    }
    if (RETRYABLE_FAILURES.has(cls) && job.attempt < job.maxAttempts) {
      const notBefore = now + backoffMs(stage, job.attempt)
      const next = await ctx.state.updateJob(job.id, { states: ['failed'], attempt: job.attempt }, { state: 'retrying', attempt: job.attempt + 1, notBefore })
      if (!next) return
      await ctx.state.recordEvent({ at: now, kind: 'retry', jobId: job.id, message: `attempt ${job.attempt} failed (${cls}): ${job.lastError ?? ''}`.slice(0, 500), details: { nextAttempt: next.attempt, notBefore } })
      jlog.warn({ failureClass: cls, error: job.lastError, nextAttempt: next.attempt, notBefore }, 'attempt failed: retrying')
      const avoid = failedWorker && job.attempt <= stage.retry.avoidFailedWorkerAttempts ? [failedWorker] : []
      await dispatchJob(ctx, next, avoid)
      return
    }
    if (cls === 'too-big' && job.inputs.length > 1) {
      await split(job)
      return
    }
    const reason =
      cls === 'too-big'
        ? 'too big and cannot be split further (a single input)'
        : RETRYABLE_FAILURES.has(cls) || cls === 'bad-input'
          ? `retries exhausted after ${job.attempt} attempts (${cls})`
          : `unprovable: ${job.lastError ?? ''}`
    const dead = await ctx.state.transaction(async (tx) => {
      const u = await tx.updateJob(job.id, { states: ['failed'], attempt: job.attempt }, { state: 'dead' })
      if (u) {
        await tx.recordEvent({ at: now, kind: 'dead-letter', jobId: job.id, message: reason, details: { failureClass: cls, first: job.first, last: job.last, lastError: job.lastError } })
      }
      return u
    })
    if (dead) {
      // Loud on purpose: a dead job blocks every later proposal until an operator acts.
      jlog.error({ alert: true, failureClass: cls, reason }, 'ALERT: job dead-lettered; later proposals are blocked until it is requeued or fixed')
    }
  }

  async function split(job: StoredJob): Promise<void> {
    const mid = Math.ceil(job.inputs.length / 2)
    const halves = [job.inputs.slice(0, mid), job.inputs.slice(mid)]
    const children: NewJob[] = halves.map((inputs) => {
      const firstData = inputs[0]?.data as { number?: number; first?: number }
      const lastData = inputs[inputs.length - 1]?.data as { number?: number; last?: number; hash?: string; lastHash?: string }
      const first = Number(firstData.number ?? firstData.first)
      const last = Number(lastData.number ?? lastData.last)
      const lastHash = String(lastData.hash ?? lastData.lastHash ?? '')
      const cost = inputs.reduce((sum, i) => sum + Number((i.data as { cost?: number }).cost ?? 0), 0)
      return {
        id: jobId({ stage: job.stage, first, last, lastHash, programId: job.programId }),
        stage: job.stage,
        first,
        last,
        lastHash,
        programId: job.programId,
        maxAttempts: job.maxAttempts,
        inputs,
        cost,
        capacity: job.capacity,
        overCapacity: false,
        parentId: job.id,
      }
    })
    const ok = await ctx.state.transaction(async (tx) => {
      const u = await tx.updateJob(job.id, { states: ['failed'], attempt: job.attempt }, { state: 'split' })
      if (!u) return false
      await tx.createJobs(children)
      await tx.recordEvent({ at: ctx.now(), kind: 'split', jobId: job.id, message: `split into ${children.map((c) => `${c.first}-${c.last}`).join(', ')}`, details: { children: children.map((c) => c.id) } })
      return true
    })
    if (!ok) return
    log.warn({ job: job.id, first: job.first, last: job.last, children: children.map((c) => c.id) }, 'job too big: split')
    for (const c of children) {
      const stored = await ctx.state.getJob(c.id)
      if (stored && stored.dispatchedAttempt < stored.attempt) await dispatchJob(ctx, stored)
    }
  }

  async function expireLeases(): Promise<number> {
    const now = ctx.now()
    const running = await ctx.state.listJobs({ stage: stage.name, states: ['running'] })
    let n = 0
    for (const job of running) {
      if (job.leaseExpiresAt === null || job.leaseExpiresAt > now) continue
      n++
      await fail(job, 'lease-expired', `no heartbeat for ${stage.leaseMs} ms`, { jobId: job.id, attempt: job.attempt, workerId: null, endedAt: now, durationMs: null, stderrTail: null }, null)
    }
    return n
  }

  return {
    start() {
      const opts = { signal: abort.signal, concurrency: 1, ackWaitMs: 60_000 }
      const onErr = (err: unknown): void => ctx.fatal(err, `recorder ${stage.name}`)
      // Invalid messages are dead-lettered before they reach a handler (decode.ts).
      loops.push(ctx.bus.consume<EventMessage>(eventsSubject(stage.name), `record-${stage.name}`, leaderAware(ctx, `recorder ${stage.name}`, decoded(decodeEventMessage, log, onEvent)), opts).catch(onErr))
      loops.push(ctx.bus.consume<ResultMessage>(resultsSubject(stage.name), `record-${stage.name}`, leaderAware(ctx, `recorder ${stage.name}`, decoded(decodeResultMessage, log, onResult)), opts).catch(onErr))
    },
    async stop() {
      abort.abort()
      await Promise.all(loops)
    },
    decideFailed: (job) => decideFailed(job),
    expireLeases,
    publishResult,
  }
}
