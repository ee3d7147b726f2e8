import type { Attempt, JobState } from '../core/types.js'
import type { NewJob, StateStore, StoredJob } from '../state/types.js'

/**
 * What the orchestrator's writes tell an observer (metrics, the dashboard): jobs created,
 * jobs that changed state, attempts that ended. Calls are made after the write is committed
 * (after its transaction, for writes inside one), in commit order, and never throw into the
 * pipeline: an observer's error is swallowed.
 */
export interface PipelineObserver {
  /** Jobs created (only those that did not exist). */
  jobsCreated(jobs: NewJob[], at: number): void
  /** A job's row after a write; `previous` is the state it had before, when known. */
  jobChanged(job: StoredJob, previous: JobState | undefined, at: number): void
  /** An attempt row was written (`outcome` given when it ended or started). */
  attemptWritten(attempt: Partial<Attempt> & Pick<Attempt, 'jobId' | 'attempt'>, stage: string | undefined, at: number): void
}

/** One observer that tells each of `observers` in turn (each one's error is swallowed). */
export function combineObservers(...observers: PipelineObserver[]): PipelineObserver {
  const each = (fn: (o: PipelineObserver) => void): void => {
    for (const o of observers) {
      try {
        fn(o)
      } catch {
        // An observer never breaks the pipeline, nor another observer.
      }
    }
  }
  return {
    jobsCreated: (jobs, at) => each((o) => o.jobsCreated(jobs, at)),
    jobChanged: (job, previous, at) => each((o) => o.jobChanged(job, previous, at)),
    attemptWritten: (a, stage, at) => each((o) => o.attemptWritten(a, stage, at)),
  }
}

/** The stage of a job id (`<stage>:<first>-<last>:<digest>`), or undefined when it is not one. */
export function stageOfJobId(id: string): string | undefined {
  const i = id.indexOf(':')
  return i > 0 ? id.slice(0, i) : undefined
}

type Note = () => void

/**
 * Wraps a state store so that every committed job and attempt write is reported to
 * `observer`. The previous state of a job is remembered from the writes seen (a bounded map),
 * so `jobChanged` can say which state a job left; after a restart the first change of a job
 * reports `previous` undefined. Reads pass through unchanged.
 */
export function observedState(inner: StateStore, observer: PipelineObserver, now: () => number = Date.now): StateStore {
  const known = new Map<string, JobState>()
  const remember = (id: string, state: JobState): void => {
    known.delete(id)
    known.set(id, state)
    if (known.size > 50_000) known.delete(known.keys().next().value as string)
  }
  const safely = (fn: Note): void => {
    try {
      fn()
    } catch {
      // An observer never breaks the pipeline.
    }
  }

  function wrap(store: StateStore, buffer: Note[] | undefined): StateStore {
    const emit = (n: Note): void => {
      if (buffer) buffer.push(n)
      else safely(n)
    }
    return {
      ...bind(store),
      async transaction<T>(fn: (tx: StateStore) => Promise<T>): Promise<T> {
        if (buffer) return store.transaction((tx) => fn(wrap(tx, buffer)))
        const notes: Note[] = []
        const out = await store.transaction((tx) => fn(wrap(tx, notes)))
        for (const n of notes) safely(n)
        return out
      },
      async createJobs(jobs) {
        const ids = await store.createJobs(jobs)
        if (ids.length > 0) {
          const created = new Set(ids)
          const fresh = jobs.filter((j) => created.has(j.id))
          const at = now()
          emit(() => {
            for (const j of fresh) remember(j.id, 'pending')
            observer.jobsCreated(fresh, at)
          })
        }
        return ids
      },
      async updateJob(id, expect, patch) {
        const job = await store.updateJob(id, expect, patch)
        if (job) {
          const at = now()
          const guess = expect.states.length === 1 ? expect.states[0] : undefined
          emit(() => {
            const previous = known.get(id) ?? guess
            remember(id, job.state)
            observer.jobChanged(job, previous, at)
          })
        }
        return job
      },
      async markDispatched(jobs) {
        const updated = await store.markDispatched(jobs)
        if (updated.length > 0) {
          const at = now()
          emit(() => {
            for (const job of updated) {
              const previous = known.get(job.id)
              remember(job.id, job.state)
              observer.jobChanged(job, previous, at)
            }
          })
        }
        return updated
      },
      async upsertAttempt(attempt) {
        await store.upsertAttempt(attempt)
        const at = now()
        emit(() => observer.attemptWritten(attempt, stageOfJobId(attempt.jobId), at))
      },
    }
  }
  return wrap(inner, undefined)
}

/** A store that forwards every method to `store` (a spread copy overrides some). */
function bind(s: StateStore): StateStore {
  return {
    transaction: (fn) => s.transaction(fn),
    addCollectorItems: (c, items) => s.addCollectorItems(c, items),
    listOpenCollectorItems: (c) => s.listOpenCollectorItems(c),
    consumeCollectorItems: (c, ids, job) => s.consumeCollectorItems(c, ids, job),
    getCursor: (n) => s.getCursor(n),
    setCursor: (n, v) => s.setCursor(n, v),
    createJobs: (jobs) => s.createJobs(jobs),
    getJob: (id) => s.getJob(id),
    listJobs: (f) => s.listJobs(f),
    countJobs: () => s.countJobs(),
    updateJob: (id, e, p) => s.updateJob(id, e, p),
    markDispatched: (j) => s.markDispatched(j),
    upsertAttempt: (a) => s.upsertAttempt(a),
    listAttempts: (id) => s.listAttempts(id),
    recordBlocks: (b) => s.recordBlocks(b),
    blockStats: () => s.blockStats(),
    latestBlock: () => s.latestBlock(),
    listBlocks: (r) => s.listBlocks(r),
    recordEvent: (e) => s.recordEvent(e),
    listEvents: (o) => s.listEvents(o),
    getMeta: (k) => s.getMeta(k),
    setMeta: (k, v) => s.setMeta(k, v),
    close: () => s.close(),
  }
}
