import { errorMessage } from '../core/errors.js'
import type { Executor } from '../executors/types.js'
import { collectorService, type CollectorService } from './collector-service.js'
import type { PipelineContext } from './context.js'
import { createDispatcher, type Dispatcher } from './dispatcher.js'
import { cancelJob, dispatchJobs, requeueJob, type CancelResult, type RequeueResult } from './jobs.js'
import { stageControls, type StageControls } from './controls.js'
import { observedState, type PipelineObserver } from './observer.js'
import { recorder, type Recorder } from './recorder.js'
import { routeOverflow } from './router.js'
import { syntheticSourceService, type SourceService } from './source-service.js'
import type { ReorgNotice } from '../sources/types.js'
import type { StoredJob } from '../state/types.js'
import { stageCoverage, type StageCoverage } from './summary.js'

export interface OrchestratorOptions {
  /** Executors for stages dispatched inside this process (`dispatch.inProcess`). */
  executors: Map<string, Executor>
  /** Identifies this process's in-process dispatchers. */
  workerId: string
  /** Stop once every stage covers this many blocks from the source's start block. */
  untilBlocks?: number
  /** Give up (summary `ok: false`) when nothing progresses for this long after the source finished. @default 120000 */
  stallTimeoutMs?: number
  /** How often the recovery sweep runs. @default 2000 */
  sweepIntervalMs?: number
  /** Told about every committed job and attempt write (metrics, the dashboard). */
  observer?: PipelineObserver
}

/** Jobs the recovery sweep reads from the state store at a time. */
export const SWEEP_PAGE = 100

/** The final JSON summary of a run. */
export interface RunSummary {
  ok: boolean
  /** Why the run ended. */
  reason: 'complete' | 'stopped' | 'stalled' | 'dead-letters' | 'failed'
  /** The error that stopped a `failed` run. */
  error?: string
  blocks: { target: number | null; start: number; end: number | null; seen: number; lastSeen: number | null }
  stages: StageCoverage[]
  retries: number
  deadLetters: number
  rejectedOutputs: number
  /** Confirmed proposals, when this process runs the proposer. */
  proposals?: number
  /** Reorgs seen by the source, and jobs invalidated by them. */
  reorgs: { rewinds: number; invalidatedJobs: number }
  continuity: { gaps: number; overlaps: number; duplicates: number }
  durationMs: number
}

/** A running orchestrator. */
export interface Orchestrator {
  readonly state: 'starting' | 'running' | 'stopping' | 'stopped'
  /** Resolves with the summary when the run completes (`untilBlocks`) or is stopped. */
  readonly done: Promise<RunSummary>
  /** Stops everything, draining in-flight work, and resolves with the summary. */
  stop(): Promise<RunSummary>
  /** The summary as of now. */
  summary(): Promise<RunSummary>
  /** Collector items waiting, per stage. */
  openItems(): Record<string, number>
  /** Pause/resume stages, drain workers (see src/pipeline/controls.ts). */
  readonly controls: StageControls
  /** Gives a dead or cancelled job another attempt (published unless its stage is paused). */
  requeue(jobId: string): Promise<RequeueResult>
  /** Cancels a job that is not finished. */
  cancel(jobId: string): Promise<CancelResult>
}

/**
 * Wires the source, one collector and one recorder per stage, in-process dispatchers, and
 * the recovery sweep; runs until stopped or until `untilBlocks` are covered by every stage.
 *
 * Recovery, run at start and every `sweepIntervalMs`: jobs whose current attempt was never
 * published are published; jobs left `failed` get their retry/split/dead decision; succeeded
 * results not yet published downstream are published; running jobs past their lease fail as
 * `lease-expired`. Each step is idempotent, so a crash between any two writes is harmless.
 */
export async function startOrchestrator(baseCtx: PipelineContext, opts: OrchestratorOptions): Promise<Orchestrator> {
  const cfg = baseCtx.config
  const log = baseCtx.log.child({ part: 'orchestrator' })
  // A loop that cannot go on stops the whole run (non-zero exit); a supervisor restarts it
  // and recovery resumes the work.
  const ctx: PipelineContext = {
    ...baseCtx,
    ...(opts.observer ? { state: observedState(baseCtx.state, opts.observer, baseCtx.now) } : {}),
    fatal: (err, where) => {
      log.fatal({ err: errorMessage(err), where }, 'fatal error: stopping')
      fatalError ??= `${where}: ${errorMessage(err)}`
      void stop('failed')
    },
  }
  const controls = stageControls(ctx)
  ctx.controls = controls
  await controls.load()
  let fatalError: string | undefined
  const started = Date.now()
  let state: Orchestrator['state'] = 'starting'
  const recorders = new Map<string, Recorder>()
  const collectors = new Map<string, CollectorService>()
  const dispatchers: Dispatcher[] = []
  for (const stage of cfg.stages) {
    recorders.set(stage.name, recorder(ctx, stage))
    collectors.set(stage.name, collectorService(ctx, stage))
    if (stage.dispatch.inProcess) {
      const executor = opts.executors.get(stage.name)
      if (!executor) throw new Error(`no executor wired for in-process stage ${stage.name}`)
      dispatchers.push(
        createDispatcher({
          bus: ctx.bus,
          artifacts: ctx.artifacts,
          stage: stage.name,
          executor,
          workerId: `${opts.workerId}/${stage.name}`,
          concurrency: stage.dispatch.concurrency,
          ackWaitMs: stage.dispatch.ackWaitMs,
          log: ctx.log,
        }),
      )
    }
  }
  const sourceOpts = { ...(opts.untilBlocks !== undefined ? { untilBlocks: opts.untilBlocks } : {}), onReorg: (n: ReorgNotice) => invalidateFrom(n) }
  // The L2 watcher's modules (viem) are loaded only for an L2 source.
  const source: SourceService =
    cfg.source.type === 'synthetic' ? syntheticSourceService(ctx, cfg.source, sourceOpts) : (await import('./watcher-source.js')).watcherSourceService(ctx, cfg.source, sourceOpts)

  /**
   * A reorg replaced every block from `fromBlock` on: stage by stage, in pipeline order, every
   * job that covers one of them is invalidated (whatever its state, including succeeded and
   * dead) and the stage's collector drops orphaned inputs, re-opens the still-valid inputs of
   * its invalidated jobs and moves its cursor back, so the range is re-proved from the new
   * blocks. Each stage does both in its collector's serial section (no group closes over
   * orphaned inputs in between); a later stage's job built from an earlier stage's result that
   * was just invalidated reaches the block too, so it is invalidated in its turn. In-flight
   * results of invalidated jobs are dropped by the recorder and by the next stage's collector.
   */
  async function invalidateFrom(notice: ReorgNotice): Promise<void> {
    const invalidated: StoredJob[] = []
    for (const stage of cfg.stages) invalidated.push(...(await (collectors.get(stage.name) as CollectorService).rewind(notice)))
    const rewinds = Number((await ctx.state.getMeta('reorg.rewinds')) ?? 0) + 1
    await ctx.state.setMeta('reorg.rewinds', String(rewinds))
    log.warn({ fromBlock: notice.fromBlock, depth: notice.depth, invalidated: invalidated.length }, 'reorg handled')
  }

  let sourceFinished = false
  void source.finished.then(() => (sourceFinished = true))
  for (const r of recorders.values()) r.start()
  for (const d of dispatchers) d.start()
  for (const c of collectors.values()) await c.start()
  await sweep()
  source.start()
  state = 'running'

  async function sweep(): Promise<void> {
    for (const stage of cfg.stages) {
      const rec = recorders.get(stage.name) as Recorder
      // Page through jobs never published: after a restart with thousands queued, loading every
      // job (with its inputs) at once would hold them all in memory. Pages go up by last block
      // (pending jobs of a stage do not overlap); anything a page boundary skipped is taken by
      // the next sweep, which starts again from the bottom.
      for (let from = 0; ; ) {
        // Listed without inputs; each job's inputs are read only when it is published.
        const page = await ctx.state.listJobs({ stage: stage.name, states: ['pending', 'retrying'], undispatched: true, lastAtLeast: from, limit: SWEEP_PAGE, omitInputs: true })
        await dispatchJobs(ctx, page, { readInputs: true })
        if (page.length < SWEEP_PAGE) break
        from = Math.max(...page.map((j) => j.last)) + 1
      }
      for (const job of await ctx.state.listJobs({ stage: stage.name, states: ['failed'] })) await rec.decideFailed(job)
      for (const job of await ctx.state.listJobs({ stage: stage.name, unpublishedResults: true })) await rec.publishResult(job)
      const expired = await rec.expireLeases()
      if (expired > 0) log.warn({ stage: stage.name, expired }, 'leases expired')
    }
  }

  // Overflow routing runs on its own, faster clock: a queue-age threshold of seconds matters.
  const routed = cfg.stages.filter((s) => s.dispatch.pools.length > 1)
  const routeEveryMs = Math.max(100, Math.min(1_000, ...routed.map((s) => Math.min(...s.dispatch.pools.slice(1).map((p) => (p.overflowAfterMs ?? 2_000) / 4)))))
  let routing = false
  const router =
    routed.length === 0
      ? undefined
      : setInterval(() => {
          if (routing || state !== 'running') return
          routing = true
          void (async () => {
            for (const stage of routed) await routeOverflow(ctx, stage)
          })()
            .catch((err: unknown) => log.error({ err: errorMessage(err) }, 'overflow routing failed'))
            .finally(() => (routing = false))
        }, routeEveryMs)

  async function summary(reason: RunSummary['reason'] = 'stopped'): Promise<RunSummary> {
    const stats = await ctx.state.blockStats()
    const start = cfg.source.startBlock
    const end = opts.untilBlocks !== undefined ? source.endBlock : (stats?.max ?? null)
    const stages: StageCoverage[] = []
    for (const stage of cfg.stages) {
      // Ranges and states are enough for coverage: the jobs' inputs (their blocks) are left in the store.
      const jobs = await ctx.state.listJobs({ stage: stage.name, omitInputs: true })
      stages.push(stageCoverage(stage.name, jobs, start, end ?? start - 1))
    }
    const rejected = (await ctx.state.listEvents({ kind: 'rejected-output', limit: 100_000 })).length
    const complete = opts.untilBlocks !== undefined && stages.every((s) => s.blocksCovered === opts.untilBlocks && s.gaps.length === 0)
    const continuity = {
      // A finished run must have no gap at all; a running one only no holes below its progress.
      gaps: stages.reduce((n, s) => n + (opts.untilBlocks !== undefined && reason !== 'stopped' ? s.gaps.length : s.internalGaps), 0),
      overlaps: stages.reduce((n, s) => n + s.overlaps.length, 0),
      duplicates: stages.reduce((n, s) => n + s.duplicates, 0),
    }
    const deadLetters = stages.reduce((n, s) => n + s.deadLetters, 0)
    return {
      ok:
        deadLetters === 0 &&
        continuity.gaps === 0 &&
        continuity.overlaps === 0 &&
        continuity.duplicates === 0 &&
        reason !== 'failed' &&
        (reason === 'stopped' || complete),
      reason,
      ...(fatalError !== undefined ? { error: fatalError } : {}),
      blocks: { target: opts.untilBlocks ?? null, start, end, seen: stats?.count ?? 0, lastSeen: stats?.max ?? null },
      stages,
      retries: stages.reduce((n, s) => n + s.retries, 0),
      deadLetters,
      rejectedOutputs: rejected,
      reorgs: {
        rewinds: Number((await ctx.state.getMeta('reorg.rewinds')) ?? 0),
        invalidatedJobs: (await ctx.state.listEvents({ kind: 'invalidated', limit: 100_000 })).length,
      },
      continuity,
      durationMs: Date.now() - started,
    }
  }

  let resolveDone: (s: RunSummary) => void = () => {}
  const done = new Promise<RunSummary>((r) => (resolveDone = r))
  let stopping: Promise<RunSummary> | undefined
  let lastProgress = { at: Date.now(), key: '' }
  let lastSweep = Date.now()
  const sweepIntervalMs = opts.sweepIntervalMs ?? 2_000
  const stallTimeoutMs = opts.stallTimeoutMs ?? 120_000

  const timer = setInterval(() => {
    void tick().catch((err: unknown) => log.error({ err: errorMessage(err) }, 'orchestrator tick failed'))
  }, 500)
  let ticking = false
  async function tick(): Promise<void> {
    if (ticking || state !== 'running') return
    ticking = true
    try {
      if (Date.now() - lastSweep >= sweepIntervalMs) {
        lastSweep = Date.now()
        await sweep()
      }
      if (opts.untilBlocks === undefined) return
      const counts = await ctx.state.countJobs()
      const key = JSON.stringify(counts)
      if (key !== lastProgress.key) lastProgress = { at: Date.now(), key }
      const open = Object.values(counts).reduce((n, byState) => n + (byState.pending ?? 0) + (byState.running ?? 0) + (byState.retrying ?? 0) + (byState.failed ?? 0), 0)
      const deadLetters = Object.values(counts).reduce((n, byState) => n + (byState.dead ?? 0), 0)
      // The coverage check reads every job's range: only worth it once the source has published
      // its last block and no job is still open (a run cannot be complete before).
      if (sourceFinished && open === 0) {
        const s = await summary('complete')
        if (s.stages.every((st) => st.blocksCovered === opts.untilBlocks && st.gaps.length === 0)) {
          log.info('every stage covers the target range')
          void stop('complete')
          return
        }
      }
      if (deadLetters > 0 && open === 0) {
        log.error({ deadLetters }, 'run cannot complete: dead-lettered jobs')
        void stop('dead-letters')
      } else if (Date.now() - lastProgress.at > stallTimeoutMs) {
        log.error({ stallTimeoutMs }, 'run stalled: no job changed state')
        void stop('stalled')
      }
    } finally {
      ticking = false
    }
  }

  function stop(reason: RunSummary['reason'] = 'stopped'): Promise<RunSummary> {
    stopping ??= (async () => {
      state = 'stopping'
      clearInterval(timer)
      if (router) clearInterval(router)
      await source.stop()
      for (const c of collectors.values()) await c.stop()
      await Promise.all(dispatchers.map((d) => d.stop()))
      for (const r of recorders.values()) await r.stop()
      const s = await summary(reason)
      state = 'stopped'
      resolveDone(s)
      return s
    })()
    return stopping
  }

  return {
    get state() {
      return state
    },
    done,
    stop: () => stop('stopped'),
    summary: () => summary('stopped'),
    openItems: () => Object.fromEntries([...collectors].map(([k, c]) => [k, c.openItems()])),
    controls,
    requeue: (id) => requeueJob(ctx, id),
    cancel: (id) => cancelJob(ctx, id),
  }
}
