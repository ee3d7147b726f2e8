import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client'
import type { ResolvedConfig } from '../config/load.js'
import type { JobState } from '../core/types.js'
import type { PipelineObserver } from '../pipeline/observer.js'
import { capacityOf, type PipelineSnapshot } from './monitor.js'

/**
 * Prometheus metrics of a running orchestrator (prom-client, one registry per process).
 * Counters and histograms are fed live by the orchestrator's writes (`observer`); gauges are
 * set from the monitor's snapshot just before each scrape (`update`). Names, labels and
 * meanings: docs/operations.md (Metrics).
 */
export interface PipelineMetrics {
  readonly registry: Registry
  readonly observer: PipelineObserver
  /** Sets the gauges from a snapshot (call before `render`). */
  update(snapshot: PipelineSnapshot): void
  /** The text exposition format. */
  render(): Promise<string>
  readonly contentType: string
}

const TERMINAL: ReadonlySet<JobState> = new Set(['succeeded', 'dead', 'split', 'cancelled', 'invalidated'])
const TIME_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600]

/** Options of {@link pipelineMetrics}. */
export interface PipelineMetricsOptions {
  config: ResolvedConfig
  /** Also export the process metrics (CPU, memory, event loop lag) as `proofline_process_*` / `proofline_nodejs_*`. @default true */
  defaultMetrics?: boolean
}

/** Creates the registry and its metrics. */
export function pipelineMetrics(opts: PipelineMetricsOptions): PipelineMetrics {
  const registry = new Registry()
  if (opts.defaultMetrics ?? true) collectDefaultMetrics({ register: registry, prefix: 'proofline_' })
  const r = [registry]

  // -- fed by the orchestrator's writes ------------------------------------------------------
  const created = new Counter({ name: 'proofline_jobs_created_total', help: 'Jobs created (collector groups and split children)', labelNames: ['stage'], registers: r })
  const transitions = new Counter({ name: 'proofline_job_transitions_total', help: 'Job state changes; from is "unknown" for the first change seen after a restart', labelNames: ['stage', 'from', 'to'], registers: r })
  const inState = new Histogram({ name: 'proofline_job_state_duration_seconds', help: 'Time a job spent in a state, observed when it leaves the state', labelNames: ['stage', 'state'], buckets: TIME_BUCKETS, registers: r })
  const failures = new Counter({ name: 'proofline_attempt_failures_total', help: 'Attempts that failed, by failure class (a job entering failed)', labelNames: ['stage', 'failure_class'], registers: r })
  const retries = new Counter({ name: 'proofline_retries_total', help: 'Retries scheduled (failed -> retrying), by the failure class that caused them', labelNames: ['stage', 'failure_class'], registers: r })
  const dead = new Counter({ name: 'proofline_dead_letters_total', help: 'Jobs dead-lettered, by failure class', labelNames: ['stage', 'failure_class'], registers: r })
  const attempts = new Counter({ name: 'proofline_attempts_total', help: 'Attempts that ended, by worker and outcome (succeeded, failed, rejected, stale)', labelNames: ['stage', 'worker', 'outcome'], registers: r })
  const attemptSeconds = new Histogram({ name: 'proofline_attempt_duration_seconds', help: 'Executor run time of ended attempts', labelNames: ['stage', 'outcome'], buckets: TIME_BUCKETS, registers: r })
  const latency = new Histogram({ name: 'proofline_job_latency_seconds', help: 'Job created -> succeeded', labelNames: ['stage'], buckets: TIME_BUCKETS, registers: r })
  const used = new Counter({ name: 'proofline_prover_capacity_used_total', help: 'Useful prover capacity of succeeded jobs (basis cost: input cost; basis inputs: input count)', labelNames: ['stage', 'basis'], registers: r })
  const paid = new Counter({ name: 'proofline_prover_capacity_paid_total', help: 'Prover capacity paid for by succeeded jobs (capacity, or maxCount inputs)', labelNames: ['stage', 'basis'], registers: r })
  const fill = new Histogram({ name: 'proofline_job_fill_ratio', help: 'Useful / paid capacity of each succeeded job', labelNames: ['stage'], buckets: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1], registers: r })
  const usedBy = new Map<string, { used: number; paid: number }>()
  const byWorker = new Map<string, { ok: number; all: number }>()

  // When each job entered its current state (jobs seen by this process), for the state histogram.
  const since = new Map<string, { state: JobState; at: number }>()
  const observer: PipelineObserver = {
    jobsCreated(jobs, at) {
      for (const j of jobs) {
        created.inc({ stage: j.stage })
        since.set(j.id, { state: 'pending', at })
      }
      while (since.size > 100_000) since.delete(since.keys().next().value as string)
    },
    jobChanged(job, previous, at) {
      const entry = since.get(job.id)
      const from = entry?.state ?? previous
      if (from === job.state) return // not a state change (a heartbeat, a publication mark)
      transitions.inc({ stage: job.stage, from: from ?? 'unknown', to: job.state })
      const enteredAt = entry?.at ?? (from === 'pending' ? job.createdAt : undefined)
      if (from !== undefined && enteredAt !== undefined) inState.observe({ stage: job.stage, state: from }, Math.max(0, at - enteredAt) / 1000)
      if (TERMINAL.has(job.state)) since.delete(job.id)
      else since.set(job.id, { state: job.state, at })
      const cls = job.failureClass ?? 'transient'
      if (job.state === 'failed') failures.inc({ stage: job.stage, failure_class: cls })
      if (job.state === 'retrying' && from === 'failed') retries.inc({ stage: job.stage, failure_class: cls })
      if (job.state === 'dead') dead.inc({ stage: job.stage, failure_class: cls })
      if (job.state === 'succeeded') {
        latency.observe({ stage: job.stage }, Math.max(0, at - job.createdAt) / 1000)
        const c = capacityOf(opts.config, job)
        if (c) {
          used.inc({ stage: job.stage, basis: c.basis }, c.used)
          paid.inc({ stage: job.stage, basis: c.basis }, c.paid)
          fill.observe({ stage: job.stage }, c.paid > 0 ? c.used / c.paid : 0)
          const u = usedBy.get(job.stage) ?? { used: 0, paid: 0 }
          u.used += c.used
          u.paid += c.paid
          usedBy.set(job.stage, u)
        }
      }
    },
    attemptWritten(a, stage, _at) {
      if (a.outcome === undefined || a.outcome === 'running') return
      const worker = a.workerId ?? 'none'
      attempts.inc({ stage: stage ?? 'unknown', worker, outcome: a.outcome })
      if (a.durationMs !== undefined && a.durationMs !== null) attemptSeconds.observe({ stage: stage ?? 'unknown', outcome: a.outcome }, a.durationMs / 1000)
      if (a.outcome !== 'stale' && a.workerId) {
        const w = byWorker.get(a.workerId) ?? { ok: 0, all: 0 }
        w.all++
        if (a.outcome === 'succeeded') w.ok++
        byWorker.set(a.workerId, w)
      }
    },
  }

  // -- set from the snapshot before each scrape -------------------------------------------------
  const g = (name: string, help: string, labelNames: string[] = []): Gauge => new Gauge({ name, help, labelNames, registers: r })
  const jobs = g('proofline_jobs', 'Jobs by stage and state (from the state store)', ['stage', 'state'])
  const queued = g('proofline_stage_queued_jobs', 'Jobs waiting for a worker (pending or retrying)', ['stage'])
  const oldest = g('proofline_oldest_pending_job_age_seconds', 'Age of the oldest job waiting for a worker (0 when none waits)', ['stage'])
  const openInputs = g('proofline_collector_open_inputs', 'Inputs buffered in the collector, not yet in a job', ['stage'])
  const paused = g('proofline_stage_paused', '1 while an operator has the stage paused', ['stage'])
  const covered = g('proofline_stage_covered_block', 'Highest block such that every block from the start to it is covered by the stage\'s succeeded jobs', ['stage'])
  const stageLagBlocks = g('proofline_stage_lag_blocks', 'L2 head minus the stage\'s covered block', ['stage'])
  const stageLagSeconds = g('proofline_stage_lag_seconds', 'How long the first block the stage has not covered has waited since it was seen', ['stage'])
  const utilization = g('proofline_prover_utilization_ratio', 'Useful / paid prover capacity of the jobs succeeded since start (1 - padding waste)', ['stage'])
  const head = g('proofline_l2_head_block', 'L2 head (the L2 node\'s, or the highest block seen without one)')
  const seen = g('proofline_l2_seen_block', 'Highest L2 block the pipeline has seen')
  const proposed = g('proofline_l2_proposed_block', 'Highest L2 block proposed to L1 (confirmed)')
  const lagBlocks = g('proofline_lag_blocks', 'L2 head minus the highest proposed block (or the last stage\'s covered block without a proposer)')
  const lagSeconds = g('proofline_lag_seconds', 'How long the first block not yet proposed (or covered by the last stage) has waited since it was seen')
  const balance = g('proofline_proposer_balance_wei', 'The proposer account\'s L1 balance')
  const fees = g('proofline_proposer_fees_spent_wei', 'L1 fees (gasUsed x effectiveGasPrice) of every confirmed proposal recorded')
  const proposals = g('proofline_proposals', 'Proposals by status: confirmed, in_flight, refused (by the proposer\'s checks), rejected (by the oracle)', ['status'])
  const workers = g('proofline_workers', 'Workers by state (from their presence reports)', ['state'])
  const workerRunning = g('proofline_worker_running_jobs', 'Attempts a worker runs now', ['worker', 'stage'])
  const workerSuccess = g('proofline_worker_success_ratio', 'Succeeded / ended attempts of a worker since this orchestrator started', ['worker'])
  const running = g('proofline_orchestrator_running', '1 while the orchestrator is running')

  function update(s: PipelineSnapshot): void {
    jobs.reset()
    for (const st of s.stages) {
      for (const [state, n] of Object.entries(st.jobs)) jobs.set({ stage: st.name, state }, n)
      queued.set({ stage: st.name }, st.queued)
      oldest.set({ stage: st.name }, (st.oldestPendingAgeMs ?? 0) / 1000)
      if (st.openInputs !== null) openInputs.set({ stage: st.name }, st.openInputs)
      paused.set({ stage: st.name }, st.paused ? 1 : 0)
      covered.set({ stage: st.name }, st.coveredTo ?? s.blocks.start - 1)
      if (st.lagBlocks !== null) stageLagBlocks.set({ stage: st.name }, st.lagBlocks)
      if (st.lagSeconds !== null) stageLagSeconds.set({ stage: st.name }, st.lagSeconds)
      const u = usedBy.get(st.name)
      if (u && u.paid > 0) utilization.set({ stage: st.name }, u.used / u.paid)
    }
    if (s.blocks.head !== null) head.set(s.blocks.head)
    if (s.blocks.seen !== null) seen.set(s.blocks.seen)
    if (s.blocks.proposed !== null) proposed.set(s.blocks.proposed)
    if (s.lag.blocks !== null) lagBlocks.set(s.lag.blocks)
    if (s.lag.seconds !== null) lagSeconds.set(s.lag.seconds)
    if (s.proposer) {
      if (s.proposer.balanceWei !== null) balance.set(Number(s.proposer.balanceWei))
      fees.set(Number(s.proposer.feesWei))
      proposals.set({ status: 'confirmed' }, s.proposer.confirmed)
      proposals.set({ status: 'in_flight' }, s.proposer.inFlight)
      proposals.set({ status: 'refused' }, s.proposer.refused)
      proposals.set({ status: 'rejected' }, s.proposer.rejected)
    }
    workers.reset()
    workerRunning.reset()
    const byState: Record<string, number> = { running: 0, draining: 0, drained: 0, stopped: 0, gone: 0 }
    for (const w of s.workers) {
      byState[w.state] = (byState[w.state] ?? 0) + 1
      workerRunning.set({ worker: w.workerId, stage: w.stage }, w.running.length)
    }
    for (const [state, n] of Object.entries(byState)) workers.set({ state }, n)
    for (const [worker, w] of byWorker) if (w.all > 0) workerSuccess.set({ worker }, w.ok / w.all)
    running.set(s.orchestrator === 'running' ? 1 : 0)
  }

  return { registry, observer, update, render: () => registry.metrics(), contentType: registry.contentType }
}
