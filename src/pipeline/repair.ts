import type { JobInput, StageResult } from '../core/types.js'
import type { StateStore, StoredJob } from '../state/types.js'

/**
 * Repairing a job whose inputs are bad proofs.
 *
 * Some proofs can only be fully checked inside the next stage's proof: under a development
 * CRS a range proof is verified up to its pairing, which the aggregate over it checks (see
 * docs/proving.md). When an aggregate then fails, its executor finds which inner proofs fail
 * and reports `bad-input` naming their jobs. The orchestrator then, in one transaction:
 *   - marks the aggregate job `failed` (class `bad-input`): it waits there, never proposed;
 *   - withdraws each named job's result (`succeeded` → `retrying`, next attempt, result
 *     cleared), marks the attempt that made it `rejected` and records a `rejected-output`
 *     event naming the worker that made it; the job is dispatched again avoiding that worker.
 * When every input job has succeeded again, the recovery sweep swaps the new results into
 * the aggregate job's inputs and retries it (`repairedInputs`).
 *
 * A worker's `bad-input` claim is believed only as far as it names inputs of the job it was
 * given. A false claim costs a re-proof of good inputs and one attempt of the claiming job;
 * it cannot make anything be proposed (the repaired job is verified again like any other).
 */

/** The job ids of `job`'s inputs that are results of earlier jobs (stage results). */
export function inputJobIds(job: Pick<StoredJob, 'inputs'>): string[] {
  const ids: string[] = []
  for (const input of job.inputs) {
    const id = resultOf(input)?.jobId
    if (id !== undefined) ids.push(id)
  }
  return ids
}

/** Checks a `bad-input` claim against the job's inputs: the names must be some of them. */
export function checkBadInputs(job: Pick<StoredJob, 'inputs'>, named: readonly string[] | undefined): { ok: true; ids: string[] } | { ok: false; reason: string } {
  if (named === undefined || named.length === 0) return { ok: false, reason: 'the report names no input' }
  const mine = new Set(inputJobIds(job))
  const foreign = named.filter((id) => !mine.has(id))
  if (foreign.length > 0) return { ok: false, reason: `the report names jobs that are not inputs of this job (${foreign.slice(0, 3).join(', ')})` }
  return { ok: true, ids: [...new Set(named)] }
}

/** A job whose result was withdrawn, to dispatch again away from `avoid`. */
export interface Withdrawn {
  job: StoredJob
  avoid: string[]
}

/**
 * Withdraws the result of job `id` (inside the caller's transaction `tx`): `succeeded` →
 * `retrying` at the next attempt, result cleared, the attempt that made it `rejected`, a
 * `rejected-output` event. Returns undefined when the job is not `succeeded` (already being
 * proved again, or invalidated by a reorg): nothing to withdraw.
 */
export async function withdrawResult(tx: StateStore, at: number, id: string, why: { foundBy: string; reason: string; reportedBy: string }): Promise<Withdrawn | undefined> {
  const job = await tx.getJob(id)
  if (job?.state !== 'succeeded') return undefined
  const made = (await tx.listAttempts(id)).filter((a) => a.outcome === 'succeeded').sort((a, b) => b.attempt - a.attempt)[0]
  const message = `result rejected after it was accepted: job ${why.foundBy} found its proof bad (${why.reason})`.slice(0, 1000)
  const next = await tx.updateJob(
    id,
    { states: ['succeeded'], attempt: job.attempt },
    {
      state: 'retrying',
      attempt: job.attempt + 1,
      // The re-proof is owed to a bad result, not to the job's own failures: it always gets its attempt.
      maxAttempts: Math.max(job.maxAttempts, job.attempt + 1),
      result: null,
      resultPublished: false,
      failureClass: 'invalid-output',
      lastError: message,
      leaseExpiresAt: null,
      notBefore: null,
    },
  )
  if (!next) return undefined
  if (made) await tx.upsertAttempt({ jobId: id, attempt: made.attempt, outcome: 'rejected', failureClass: 'invalid-output', error: message })
  await tx.recordEvent({
    at,
    kind: 'rejected-output',
    jobId: id,
    message,
    details: { attempt: made?.attempt ?? null, worker: made?.workerId ?? null, foundBy: why.foundBy, reportedBy: why.reportedBy, nextAttempt: next.attempt },
  })
  return { job: next, avoid: made?.workerId ? [made.workerId] : [] }
}

/**
 * The inputs of a job waiting in `failed` (`bad-input`) once every input job has succeeded
 * again, with their current results swapped in; undefined while any is still being proved.
 */
export async function repairedInputs(state: StateStore, job: StoredJob): Promise<JobInput[] | undefined> {
  const out: JobInput[] = []
  for (const input of job.inputs) {
    const r = resultOf(input)
    if (r === undefined) {
      out.push(input)
      continue
    }
    const source = await state.getJob(r.jobId)
    if (source?.state !== 'succeeded' || !source.result) return undefined
    out.push({ id: input.id, data: source.result })
  }
  return out
}

function resultOf(input: JobInput): StageResult | undefined {
  const d = input.data as Partial<StageResult> | null
  return d !== null && typeof d === 'object' && typeof d.jobId === 'string' && typeof d.stage === 'string' ? (d as StageResult) : undefined
}
