import type { Logger } from 'pino'
import type { Address } from 'viem'
import type { Bus, Delivery } from '../bus/types.js'
import type { ResolvedConfig } from '../config/load.js'
import { errorMessage, type FailureClass } from '../core/errors.js'
import type { JobState } from '../core/types.js'
import { WORKERS_SUBJECT, type WorkerStatusMessage } from '../pipeline/messages.js'
import type { PipelineObserver } from '../pipeline/observer.js'
import type { Orchestrator } from '../pipeline/orchestrator.js'
import type { ProposalStore } from '../proposer/proposals.js'
import type { JobCounts, PipelineEvent, StateStore, StoredJob } from '../state/types.js'

/** What the monitor needs of a running proposer (see `RunningProposer`). */
export interface ProposerView {
  address: Address
  oracle: Address
  proposals: ProposalStore
  /** The account's L1 balance in wei. */
  balance(): Promise<bigint>
}

/** Options of {@link pipelineMonitor}. */
export interface MonitorOptions {
  config: ResolvedConfig
  /** Read only. */
  state: StateStore
  /** Worker presence reports are consumed from it (group `monitor-workers`). */
  bus: Bus
  orchestrator: () => Orchestrator | undefined
  proposer?: () => ProposerView | undefined
  /** The L2 node's head; absent: the highest block seen stands in (synthetic source). */
  l2Head?: () => Promise<number>
  /** A snapshot is reused for this long, so scrapes and dashboards cannot load the store. @default 1000 */
  maxAgeMs?: number
  /** How often a history sample (throughput, latency, lag) is taken. @default 2000 */
  sampleIntervalMs?: number
  /** History samples kept. @default 300 */
  historySamples?: number
  /** A worker that has not reported for this long is `gone`. @default 35000 */
  workerGoneMs?: number
  log: Logger
}

/** One stage as the dashboard and `/pipeline` show it. */
export interface StageView {
  name: string
  input: string
  output: string
  executor: string
  inProcess: boolean
  paused: boolean
  jobs: Partial<Record<JobState, number>>
  /** Inputs waiting in the collector (not yet in a job). */
  openInputs: number | null
  /** Jobs waiting for a worker: pending or retrying. */
  queued: number
  /** Age of the oldest job waiting for a worker, in ms (null when none waits). */
  oldestPendingAgeMs: number | null
  /** Highest block such that every block from the source's start to it is covered by succeeded jobs. */
  coveredTo: number | null
  /** Blocks behind the L2 head, and how long the first uncovered block has waited (since it was seen). */
  lagBlocks: number | null
  lagSeconds: number | null
  /** Useful cost / paid capacity of the jobs that succeeded since start (null: no capacity known). */
  utilization: number | null
}

/** A worker, from its presence reports and the attempts recorded for it. */
export interface WorkerView {
  workerId: string
  stage: string
  pool: string | null
  state: WorkerStatusMessage['state'] | 'gone'
  running: WorkerStatusMessage['running']
  concurrency: number
  labels: string[]
  lastSeenAt: number
  /** Attempts that ended since this orchestrator started, by outcome. */
  attempts: { succeeded: number; failed: number; rejected: number; stale: number }
  successRate: number | null
}

/** A failed attempt or a failure event, for the dashboard's failure list. */
export interface FailureView {
  at: number
  kind: 'attempt' | PipelineEvent['kind']
  jobId: string | null
  stage: string | null
  attempt: number | null
  worker: string | null
  failureClass: FailureClass | null
  message: string
  stderrTail: string | null
}

/** The pipeline at a glance: what `/pipeline`, `/metrics` and the dashboard are built from. */
export interface PipelineSnapshot {
  at: number
  name: string
  orchestrator: Orchestrator['state'] | 'starting'
  stages: StageView[]
  blocks: {
    start: number
    /** L2 head (or highest seen, without an L2 node). */
    head: number | null
    seen: number | null
    seenCount: number
    /** Highest L2 block proposed to L1 (null: no proposer or none yet). */
    proposed: number | null
  }
  /** Lag of the pipeline's end (proposals, or the last stage without a proposer). */
  lag: { blocks: number | null; seconds: number | null; to: string }
  proposer: {
    address: Address
    oracle: Address
    balanceWei: string | null
    feesWei: string
    confirmed: number
    inFlight: number
    refused: number
    rejected: number
    lastProposal: { l2Block: number; first: number; txHash: string; proposedAt: number } | null
  } | null
  workers: WorkerView[]
  failures: { byClass: Partial<Record<FailureClass, number>>; recent: FailureView[] }
}

/** One history sample. */
export interface HistorySample {
  at: number
  head: number | null
  seen: number | null
  proposed: number | null
  coveredTo: Record<string, number | null>
  /** Blocks per second newly covered, per stage, since the previous sample. */
  throughput: Record<string, number>
  /** Mean latency (job created → succeeded) of jobs that succeeded since the previous sample, per stage, ms. */
  latencyMs: Record<string, number | null>
  lagBlocks: number | null
  lagSeconds: number | null
  /** Failed attempts since the previous sample. */
  failures: number
}

/** The block timeline: per lane (seen, each stage, proposed), what covers the window's blocks. */
export interface Timeline {
  from: number
  to: number
  head: number | null
  lanes: { name: string; items: { first: number; last: number; state: string; id: string | null; at: number | null }[] }[]
  /** The first stage's ranges in the window, with how far each got. */
  ranges: {
    first: number
    last: number
    jobId: string
    /** Per stage: the state of the job that covers this range (the one covering its first block). */
    stages: Record<string, { jobId: string; state: JobState } | null>
    proposed: boolean
    /** Stages succeeded in order from the first (plus 1 once proposed). */
    progress: number
    seenAt: number | null
  }[]
}

/** The monitor of a running pipeline. */
export interface PipelineMonitor {
  /** Feeds live counts (successes, latencies, failures, per-worker outcomes) from the orchestrator's writes. */
  readonly observer: PipelineObserver
  /** Starts sampling and consuming worker reports. */
  start(): void
  stop(): Promise<void>
  /** The snapshot, at most `maxAgeMs` old. */
  snapshot(): Promise<PipelineSnapshot>
  history(): HistorySample[]
  workers(): WorkerView[]
  timeline(blocks?: number): Promise<Timeline>
}

const FAILED_OUTCOMES = new Set(['failed', 'rejected'])

/** Creates the monitor. Reads only; the one writer of the state store stays the orchestrator. */
export function pipelineMonitor(opts: MonitorOptions): PipelineMonitor {
  const { config, state } = opts
  const maxAgeMs = opts.maxAgeMs ?? 1_000
  const sampleIntervalMs = opts.sampleIntervalMs ?? 2_000
  const historySamples = opts.historySamples ?? 300
  const workerGoneMs = opts.workerGoneMs ?? 35_000
  const log = opts.log.child({ part: 'monitor' })
  const start = config.source.startBlock
  const stageNames = config.stages.map((s) => s.name)

  // -- live counts from the orchestrator's writes ------------------------------------------
  const succeededSince = new Map<string, { n: number; latencyMs: number }>()
  const utilization = new Map<string, { used: number; paid: number }>()
  const failuresByClass: Partial<Record<FailureClass, number>> = {}
  let failuresSince = 0
  const recentFailures: FailureView[] = []
  const workerAttempts = new Map<string, WorkerView['attempts']>()
  const observer: PipelineObserver = {
    jobsCreated() {},
    jobChanged(job, previous, at) {
      if (job.state === 'succeeded' && previous !== 'succeeded') {
        const s = succeededSince.get(job.stage) ?? { n: 0, latencyMs: 0 }
        s.n++
        s.latencyMs += Math.max(0, at - job.createdAt)
        succeededSince.set(job.stage, s)
        const basis = capacityOf(config, job)
        if (basis) {
          const u = utilization.get(job.stage) ?? { used: 0, paid: 0 }
          u.used += basis.used
          u.paid += basis.paid
          utilization.set(job.stage, u)
        }
      }
    },
    attemptWritten(a, stage, at) {
      if (a.outcome === undefined || a.outcome === 'running') return
      if (a.workerId) {
        const w = workerAttempts.get(a.workerId) ?? { succeeded: 0, failed: 0, rejected: 0, stale: 0 }
        w[a.outcome]++
        workerAttempts.set(a.workerId, w)
      }
      if (FAILED_OUTCOMES.has(a.outcome)) {
        failuresSince++
        const cls = a.failureClass ?? 'transient'
        failuresByClass[cls] = (failuresByClass[cls] ?? 0) + 1
        recentFailures.unshift({
          at,
          kind: 'attempt',
          jobId: a.jobId,
          stage: stage ?? null,
          attempt: a.attempt,
          worker: a.workerId ?? null,
          failureClass: a.failureClass ?? null,
          message: a.error ?? a.outcome,
          stderrTail: a.stderrTail ?? null,
        })
        if (recentFailures.length > 50) recentFailures.pop()
      }
    },
  }

  // -- workers ---------------------------------------------------------------------------------
  const workers = new Map<string, WorkerStatusMessage>()
  function workerViews(now = Date.now()): WorkerView[] {
    const out: WorkerView[] = []
    for (const [key, w] of workers) {
      const gone = now - w.at > workerGoneMs
      if (gone && now - w.at > 10 * 60_000) {
        workers.delete(key)
        continue
      }
      const attempts = workerAttempts.get(w.workerId) ?? { succeeded: 0, failed: 0, rejected: 0, stale: 0 }
      const ended = attempts.succeeded + attempts.failed + attempts.rejected
      out.push({
        workerId: w.workerId,
        stage: w.stage,
        pool: w.pool,
        state: gone && w.state !== 'stopped' ? 'gone' : w.state,
        running: w.state === 'stopped' || gone ? [] : w.running,
        concurrency: w.concurrency,
        labels: w.labels,
        lastSeenAt: w.at,
        attempts,
        successRate: ended > 0 ? attempts.succeeded / ended : null,
      })
    }
    return out.sort((a, b) => a.stage.localeCompare(b.stage) || a.workerId.localeCompare(b.workerId))
  }
  async function onWorker(d: Delivery<WorkerStatusMessage>): Promise<void> {
    const w = d.data
    const key = `${w.workerId}|${w.stage}`
    const prev = workers.get(key)
    if (!prev || prev.at <= w.at) workers.set(key, w)
    await d.ack()
  }

  // -- coverage, walked forward incrementally -----------------------------------------------------
  const coverage = new Map<string, { to: number; anchor: string | null; ready: boolean }>()
  async function coveredTo(stage: string): Promise<number | null> {
    let c = coverage.get(stage)
    if (c?.ready && c.anchor !== null) {
      const anchor = await state.getJob(c.anchor)
      if (anchor?.state !== 'succeeded') c = undefined // reorged or changed: start over
    }
    if (!c?.ready) {
      c = { to: start - 1, anchor: null, ready: true }
      for (const j of await state.listJobs({ stage, states: ['succeeded'], omitInputs: true })) {
        if (j.first > c.to + 1) break
        if (j.last > c.to) {
          c.to = j.last
          c.anchor = j.id
        }
      }
      coverage.set(stage, c)
    }
    for (;;) {
      const next = await state.listJobs({ stage, states: ['succeeded'], coversBlock: c.to + 1, omitInputs: true })
      const best = next.reduce<StoredJob | undefined>((b, j) => (b === undefined || j.last > b.last ? j : b), undefined)
      if (!best) break
      c.to = best.last
      c.anchor = best.id
    }
    return c.to >= start ? c.to : null
  }

  async function seenAt(block: number): Promise<number | null> {
    const [b] = await state.listBlocks({ from: block, to: block })
    return b?.seenAt ?? null
  }

  // -- snapshot ----------------------------------------------------------------------------------
  let cached: { at: number; value: Promise<PipelineSnapshot> } | undefined
  let headCache: { at: number; value: number | null } | undefined
  async function head(seen: number | null): Promise<number | null> {
    if (!opts.l2Head) return seen
    if (headCache && Date.now() - headCache.at < maxAgeMs) return headCache.value
    let value: number | null = headCache?.value ?? null
    try {
      value = await opts.l2Head()
    } catch (err) {
      log.debug({ err: errorMessage(err) }, 'L2 head unavailable')
    }
    headCache = { at: Date.now(), value }
    return value
  }

  async function build(): Promise<PipelineSnapshot> {
    const now = Date.now()
    const orch = opts.orchestrator()
    const counts: JobCounts = await state.countJobs()
    const stats = await state.blockStats()
    const seen = stats?.max ?? null
    const l2 = await head(seen)
    const openItems = orch?.openItems() ?? {}
    const stages: StageView[] = []
    for (const s of config.stages) {
      const jobs = counts[s.name] ?? {}
      // Only their ages are needed: without inputs (a queued range job carries its blocks).
      const waiting = await state.listJobs({ stage: s.name, states: ['pending', 'retrying'], limit: 200, omitInputs: true })
      const oldest = waiting.reduce<number | null>((m, j) => {
        const since = j.state === 'pending' ? j.createdAt : Math.max(j.updatedAt, j.notBefore ?? 0)
        return m === null || since < m ? since : m
      }, null)
      const to = await coveredTo(s.name)
      const firstUncovered = (to ?? start - 1) + 1
      const waitingSince = seen !== null && firstUncovered <= seen ? await seenAt(firstUncovered) : null
      const u = utilization.get(s.name)
      stages.push({
        name: s.name,
        input: s.input,
        output: s.output,
        executor: s.executor.type,
        inProcess: s.dispatch.inProcess,
        paused: orch?.controls.isPaused(s.name) ?? false,
        jobs,
        openInputs: openItems[s.name] ?? null,
        queued: (jobs.pending ?? 0) + (jobs.retrying ?? 0),
        oldestPendingAgeMs: oldest === null ? null : Math.max(0, now - oldest),
        coveredTo: to,
        lagBlocks: l2 === null ? null : Math.max(0, l2 - (to ?? start - 1)),
        lagSeconds: waitingSince === null ? 0 : Math.max(0, (now - waitingSince) / 1000),
        utilization: u && u.paid > 0 ? u.used / u.paid : null,
      })
    }
    const pv = opts.proposer?.()
    let proposer: PipelineSnapshot['proposer'] = null
    let proposed: number | null = null
    if (pv) {
      const confirmed = await pv.proposals.list()
      const refusals = await pv.proposals.listRefusals({ limit: 1000 })
      const inFlight = await pv.proposals.listInFlight()
      let balance: bigint | null = null
      try {
        balance = await pv.balance()
      } catch (err) {
        log.debug({ err: errorMessage(err) }, 'proposer balance unavailable')
      }
      const last = confirmed[confirmed.length - 1]
      proposed = last?.l2Block ?? null
      proposer = {
        address: pv.address,
        oracle: pv.oracle,
        balanceWei: balance === null ? null : balance.toString(),
        feesWei: confirmed.reduce((sum, p) => sum + p.gasUsed * p.effectiveGasPrice, 0n).toString(),
        confirmed: confirmed.length,
        inFlight: inFlight.length,
        refused: refusals.filter((r) => r.kind === 'refused').length,
        rejected: refusals.filter((r) => r.kind === 'rejected').length,
        lastProposal: last ? { l2Block: last.l2Block, first: last.first, txHash: last.txHash, proposedAt: last.proposedAt } : null,
      }
    }
    const lastStage = stages[stages.length - 1]
    const endTo = pv ? proposed : (lastStage?.coveredTo ?? null)
    const endFirst = (endTo ?? start - 1) + 1
    const endWaiting = seen !== null && endFirst <= seen ? await seenAt(endFirst) : null
    const events = await state.listEvents({ limit: 40 })
    const recent: FailureView[] = [...recentFailures]
    for (const e of events) {
      if (e.kind !== 'dead-letter' && e.kind !== 'rejected-output' && e.kind !== 'lease-expired' && e.kind !== 'cancelled' && e.kind !== 'invalidated' && e.kind !== 'alert') continue
      recent.push({
        at: e.at,
        kind: e.kind,
        jobId: e.jobId,
        stage: e.jobId?.split(':')[0] ?? null,
        attempt: typeof e.details.attempt === 'number' ? e.details.attempt : null,
        worker: typeof e.details.worker === 'string' ? e.details.worker : null,
        failureClass: typeof e.details.failureClass === 'string' ? (e.details.failureClass as FailureClass) : null,
        message: e.message,
        stderrTail: null,
      })
    }
    recent.sort((a, b) => b.at - a.at)
    return {
      at: now,
      name: config.name,
      orchestrator: orch?.state ?? 'starting',
      stages,
      blocks: { start, head: l2, seen, seenCount: stats?.count ?? 0, proposed },
      lag: {
        blocks: l2 === null ? null : Math.max(0, l2 - (endTo ?? start - 1)),
        seconds: endWaiting === null ? 0 : Math.max(0, (now - endWaiting) / 1000),
        to: pv ? 'proposed' : (lastStage?.name ?? ''),
      },
      proposer,
      workers: workerViews(now),
      failures: { byClass: { ...failuresByClass }, recent: recent.slice(0, 30) },
    }
  }

  function snapshot(): Promise<PipelineSnapshot> {
    if (cached && Date.now() - cached.at < maxAgeMs) return cached.value
    const value = build()
    cached = { at: Date.now(), value }
    value.catch(() => {
      if (cached?.value === value) cached = undefined
    })
    return value
  }

  // -- history ---------------------------------------------------------------------------------
  const samples: HistorySample[] = []
  async function sample(): Promise<void> {
    const s = await snapshot()
    const prev = samples[samples.length - 1]
    const dt = prev ? Math.max(0.001, (s.at - prev.at) / 1000) : null
    const covered: Record<string, number | null> = {}
    const throughput: Record<string, number> = {}
    const latencyMs: Record<string, number | null> = {}
    for (const st of s.stages) {
      covered[st.name] = st.coveredTo
      const before = prev?.coveredTo[st.name] ?? null
      throughput[st.name] = dt === null || st.coveredTo === null ? 0 : Math.max(0, (st.coveredTo - (before ?? start - 1)) / dt)
      const done = succeededSince.get(st.name)
      latencyMs[st.name] = done && done.n > 0 ? done.latencyMs / done.n : null
    }
    succeededSince.clear()
    samples.push({ at: s.at, head: s.blocks.head, seen: s.blocks.seen, proposed: s.blocks.proposed, coveredTo: covered, throughput, latencyMs, lagBlocks: s.lag.blocks, lagSeconds: s.lag.seconds, failures: failuresSince })
    failuresSince = 0
    if (samples.length > historySamples) samples.splice(0, samples.length - historySamples)
  }

  // -- timeline ----------------------------------------------------------------------------------
  async function timeline(blocks = 64): Promise<Timeline> {
    const s = await snapshot()
    const to = Math.max(s.blocks.seen ?? start - 1, start)
    const from = Math.max(start, to - Math.max(1, Math.min(1000, blocks)) + 1)
    const lanes: Timeline['lanes'] = []
    const seenBlocks = await state.listBlocks({ from, to })
    lanes.push({ name: 'seen', items: seenBlocks.map((b) => ({ first: b.number, last: b.number, state: 'seen', id: null, at: b.seenAt })) })
    const byStage = new Map<string, StoredJob[]>()
    for (const name of stageNames) {
      const jobs = (await state.listJobs({ stage: name, order: 'recent', limit: 300, omitInputs: true })).filter((j) => j.last >= from && j.first <= to && j.state !== 'invalidated' && j.state !== 'split')
      jobs.sort((a, b) => a.first - b.first)
      byStage.set(name, jobs)
      lanes.push({ name, items: jobs.map((j) => ({ first: j.first, last: j.last, state: j.state, id: j.id, at: j.updatedAt })) })
    }
    const pv = opts.proposer?.()
    const proposals = pv ? (await pv.proposals.list({ limit: 200 })).filter((p) => p.l2Block >= from && p.first <= to) : []
    if (pv) lanes.push({ name: 'proposed', items: proposals.map((p) => ({ first: p.first, last: p.l2Block, state: 'proposed', id: p.txHash, at: p.proposedAt })) })
    const seenMap = new Map(seenBlocks.map((b) => [b.number, b.seenAt]))
    const firstStage = stageNames[0] as string
    const ranges: Timeline['ranges'] = (byStage.get(firstStage) ?? [])
      .map((j) => {
        const stages: Timeline['ranges'][number]['stages'] = {}
        let progress = 0
        let chain = true
        for (const name of stageNames) {
          const cover = name === firstStage ? j : (byStage.get(name) ?? []).find((k) => k.first <= j.first && k.last >= j.last)
          stages[name] = cover ? { jobId: cover.id, state: cover.state } : null
          if (chain && cover?.state === 'succeeded') progress++
          else chain = false
        }
        const proposed = proposals.some((p) => p.first <= j.first && p.l2Block >= j.last)
        if (chain && proposed) progress++
        return { first: j.first, last: j.last, jobId: j.id, stages, proposed, progress, seenAt: seenMap.get(j.first) ?? null }
      })
    return { from, to, head: s.blocks.head, lanes, ranges }
  }

  const abort = new AbortController()
  let consumer: Promise<void> | undefined
  let timer: NodeJS.Timeout | undefined
  let sampling = false
  return {
    observer,
    start() {
      consumer = opts.bus
        .consume<WorkerStatusMessage>(WORKERS_SUBJECT, 'monitor-workers', onWorker, { signal: abort.signal, concurrency: 16 })
        .catch((err: unknown) => log.error({ err: errorMessage(err) }, 'worker reports consumer stopped'))
      const tick = (): void => {
        if (sampling) return
        sampling = true
        sample()
          .catch((err: unknown) => log.warn({ err: errorMessage(err) }, 'history sample failed'))
          .finally(() => (sampling = false))
      }
      tick()
      timer = setInterval(tick, sampleIntervalMs)
    },
    async stop() {
      if (timer) clearInterval(timer)
      abort.abort()
      await consumer
    },
    snapshot,
    history: () => [...samples],
    workers: () => workerViews(),
    timeline,
  }
}

/**
 * How full a job was: summed input cost over the capacity it was packed against (sequential
 * collector with `capacity`), or inputs over `maxCount` (a prover sized for N inputs pays for N).
 * Undefined when the stage has neither.
 */
export function capacityOf(config: ResolvedConfig, job: Pick<StoredJob, 'stage' | 'cost' | 'capacity' | 'inputs'>): { used: number; paid: number; basis: 'cost' | 'inputs' } | undefined {
  if (job.capacity !== null && job.capacity > 0) return { used: Math.min(job.cost, job.capacity), paid: job.capacity, basis: 'cost' }
  const stage = config.stages.find((s) => s.name === job.stage)
  if (stage?.collector.strategy === 'sequential' && stage.collector.maxCount !== undefined) {
    return { used: Math.min(job.inputs.length, stage.collector.maxCount), paid: stage.collector.maxCount, basis: 'inputs' }
  }
  return undefined
}
