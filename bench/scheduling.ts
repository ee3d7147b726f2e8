/**
 * Scheduling overhead: no-op jobs through proofline's enqueue path (job row in the state store,
 * inputs in the artifact store, job message on the bus: `dispatchJob`) and its dispatcher, in
 * embedded mode (local bus in Postgres) and distributed mode (NATS JetStream + Postgres), against
 * pg-boss at its minimum polling interval and BullMQ on a private redis-server. All in this
 * process, on this machine, in one run.
 *
 * - latency: one job at a time (enqueue, wait until its handler starts, next): enqueue→start p50/p99.
 * - throughput: a burst of jobs enqueued 200 at a time, handlers with the same concurrency
 *   everywhere: jobs/s from the first enqueue to the last start.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Queue, Worker } from 'bullmq'
import { PgBoss } from 'pg-boss'
import { pino } from 'pino'
import { fsArtifacts } from '../src/artifacts/index.js'
import type { Bus } from '../src/bus/types.js'
import { localBus } from '../src/bus/local/index.js'
import { natsBus } from '../src/bus/nats/index.js'
import type { ResolvedConfig } from '../src/config/load.js'
import type { Executor } from '../src/executors/types.js'
import type { PipelineContext } from '../src/pipeline/context.js'
import { createDispatcher } from '../src/pipeline/dispatcher.js'
import { dispatchJob } from '../src/pipeline/jobs.js'
import { sqlStateStore } from '../src/state/sql/sql-state.js'
import type { StoredJob } from '../src/state/types.js'
import { benchSchema, dropSchema, freshDatabase, mean, percentile, privateNats, privateRedis, r3, size, type BenchOptions } from './lib.js'

/** A queue under test: `enqueue(i)` submits no-op job i; the harness is told when job i's handler starts. */
interface QueueUnderTest {
  enqueue(i: number): Promise<void>
  close(): Promise<void>
}
type MakeQueue = (onStart: (i: number) => void, concurrency: number, run: string) => Promise<QueueUnderTest>

export interface SchedulingSystemResult {
  p50_ms: number
  p99_ms: number
  mean_ms: number
  jobs_per_s: number
  latency_jobs: number
  throughput_jobs: number
}

const HASH = `0x${'ab'.repeat(32)}`
const silent = pino({ level: 'silent' })
const quietBus = { warn: () => {} }

/** Measures one system: sequential latency, then burst throughput, each on a fresh queue. */
async function measure(make: MakeQueue, latencyJobs: number, throughputJobs: number, concurrency: number): Promise<SchedulingSystemResult> {
  const started = new Map<number, number>()
  const waiters = new Map<number, () => void>()
  const onStart = (i: number): void => {
    if (!started.has(i)) started.set(i, performance.now())
    waiters.get(i)?.()
  }
  const startedPromise = (i: number): Promise<void> =>
    new Promise<void>((resolve) => {
      if (started.has(i)) resolve()
      else waiters.set(i, resolve)
    })

  // Latency: one job in the system at a time, after a short warm-up (connections, prepared plans).
  const warm = Math.min(20, latencyJobs)
  const lat: number[] = []
  let q = await make(onStart, 1, 'lat')
  try {
    for (let i = 0; i < warm + latencyJobs; i++) {
      const t0 = performance.now()
      const s = startedPromise(i)
      await q.enqueue(i)
      await s
      if (i >= warm) lat.push(started.get(i)! - t0)
    }
  } finally {
    await q.close()
  }

  // Throughput: a burst, then wait for every handler to have started.
  started.clear()
  waiters.clear()
  const base = 1_000_000
  q = await make(onStart, concurrency, 'tput')
  let jobsPerS: number
  try {
    const all = Array.from({ length: throughputJobs }, (_, k) => startedPromise(base + k))
    const t0 = performance.now()
    for (let k = 0; k < throughputJobs; k += 200) {
      await Promise.all(Array.from({ length: Math.min(200, throughputJobs - k) }, (_, j) => q.enqueue(base + k + j)))
    }
    await Promise.all(all)
    const tEnd = Math.max(...[...started.values()])
    jobsPerS = throughputJobs / ((tEnd - t0) / 1000)
  } finally {
    await q.close()
  }
  return { p50_ms: r3(percentile(lat, 50)), p99_ms: r3(percentile(lat, 99)), mean_ms: r3(mean(lat)), jobs_per_s: r3(jobsPerS), latency_jobs: lat.length, throughput_jobs: throughputJobs }
}

/** proofline: `dispatchJob` (state row + inputs artifact + job message) → dispatcher → no-op executor. */
function prooflineQueue(opts: BenchOptions, kind: 'embedded' | 'distributed', natsUrl: string | undefined): MakeQueue {
  return async (onStart, concurrency, run) => {
    const { database, drop } = await freshDatabase(opts.pgUrl, `sched_${kind}_${run}`, 16)
    const state = await sqlStateStore(database)
    const dir = await mkdtemp(join(tmpdir(), 'pl-bench-sched-'))
    const artifacts = fsArtifacts({ dir })
    let bus: Bus
    if (kind === 'embedded') bus = await localBus({ database })
    else bus = await natsBus({ servers: natsUrl!, stream: `BENCH_SCHED_${run.toUpperCase()}_${Date.now()}`, subjectPrefix: `bsched${run}${Date.now()}`, logger: quietBus })
    const executor: Executor = {
      kind: 'noop',
      execute: (req) => {
        onStart(Number(req.job.id.slice(req.job.id.lastIndexOf('-') + 1)))
        return Promise.resolve({ output: {}, durationMs: 0 })
      },
      close: () => Promise.resolve(),
    }
    const stage = 'noop'
    const dispatcher = createDispatcher({ bus, artifacts, stage, executor, workerId: `bench-${run}`, concurrency, log: silent, presenceIntervalMs: 60_000 })
    dispatcher.start()
    const ctx: PipelineContext = {
      // dispatchJob reads the stage's pools from the config; an unknown stage uses the default pool.
      config: { stages: [] } as unknown as ResolvedConfig,
      state,
      bus,
      artifacts,
      log: silent,
      now: Date.now,
      fatal: (err) => {
        throw err
      },
    }
    return {
      async enqueue(i) {
        const id = `job-${run}-${i}`
        const job = { id, stage, first: i, last: i, lastHash: HASH, programId: 'noop', maxAttempts: 3, inputs: [], cost: 1, capacity: null, overCapacity: false, parentId: null }
        await state.createJobs([job])
        const stored: StoredJob = { ...job, state: 'pending', attempt: 1, result: null, failureClass: null, lastError: null, leaseExpiresAt: null, heartbeatAt: null, notBefore: null, createdAt: Date.now(), updatedAt: Date.now(), dispatchedAttempt: 0, resultPublished: false }
        await dispatchJob(ctx, stored)
      },
      async close() {
        await dispatcher.stop()
        await bus.close()
        await state.close()
        await drop()
        await rm(dir, { recursive: true, force: true })
      },
    }
  }
}

/** pg-boss at its minimum polling interval (0.5 s), LISTEN/NOTIFY off (its default per queue). */
function pgBossQueue(opts: BenchOptions): MakeQueue {
  return async (onStart, concurrency, run) => {
    const schema = benchSchema(`pgboss_${run}`)
    const boss = new PgBoss({ connectionString: opts.pgUrl, schema, max: 16, supervise: false, schedule: false })
    boss.on('error', (err: unknown) => opts.log(`pg-boss error: ${String(err)}`))
    await boss.start()
    const name = 'noop'
    await boss.createQueue(name)
    await boss.work<{ i: number }>(name, { pollingIntervalSeconds: 0.5, batchSize: concurrency, burstWhenBatchFull: true }, (jobs) => {
      for (const j of jobs) onStart(j.data.i)
      return Promise.resolve()
    })
    return {
      async enqueue(i) {
        await boss.send(name, { i })
      },
      async close() {
        await boss.stop({ graceful: true, timeout: 5_000 })
        await dropSchema(opts.pgUrl, schema)
      },
    }
  }
}

/** BullMQ on a private redis-server. */
function bullQueue(redisPort: number): MakeQueue {
  return async (onStart, concurrency, run) => {
    const connection = { host: '127.0.0.1', port: redisPort, maxRetriesPerRequest: null }
    const name = `noop-${run}-${Date.now()}`
    const queue = new Queue(name, { connection })
    const worker = new Worker<{ i: number }>(name, (job) => {
      onStart(job.data.i)
      return Promise.resolve()
    }, { connection, concurrency })
    await worker.waitUntilReady()
    return {
      async enqueue(i) {
        await queue.add('noop', { i }, { removeOnComplete: true })
      },
      async close() {
        await worker.close()
        await queue.obliterate({ force: true })
        await queue.close()
      },
    }
  }
}

export interface SchedulingResult {
  concurrency: number
  systems: Record<'proofline_embedded' | 'proofline_distributed' | 'pgboss' | 'bullmq', SchedulingSystemResult>
  /** proofline (distributed: NATS + Postgres) p50 ÷ pg-boss p50: ≤ 1 means proofline starts jobs sooner. */
  p50_ratio_vs_pgboss: number
  /** proofline (distributed) jobs/s ÷ pg-boss jobs/s: ≥ 1 means proofline moves more jobs. */
  throughput_ratio_vs_pgboss: number
  p50_ratio_vs_bullmq: number
  throughput_ratio_vs_bullmq: number
  embedded_p50_ratio_vs_pgboss: number
  embedded_throughput_ratio_vs_pgboss: number
  notes: string[]
}

export async function schedulingBench(opts: BenchOptions): Promise<SchedulingResult> {
  const latencyJobs = size(opts, 'scheduling.latency_jobs', 100, 10)
  const throughputJobs = size(opts, 'scheduling.throughput_jobs', 2000, 100)
  const concurrency = size(opts, 'scheduling.concurrency', 16, 16)
  const nats = await privateNats()
  const redis = await privateRedis(opts.log)
  try {
    opts.log(`scheduling: proofline embedded (local bus) ...`)
    const embedded = await measure(prooflineQueue(opts, 'embedded', undefined), latencyJobs, throughputJobs, concurrency)
    opts.log(`scheduling: proofline distributed (NATS + Postgres) ...`)
    const distributed = await measure(prooflineQueue(opts, 'distributed', nats.url), latencyJobs, throughputJobs, concurrency)
    opts.log(`scheduling: pg-boss ...`)
    const pgboss = await measure(pgBossQueue(opts), latencyJobs, throughputJobs, concurrency)
    opts.log(`scheduling: BullMQ ...`)
    const bullmq = await measure(bullQueue(redis.port), latencyJobs, throughputJobs, concurrency)
    return {
      concurrency,
      systems: { proofline_embedded: embedded, proofline_distributed: distributed, pgboss, bullmq },
      p50_ratio_vs_pgboss: r3(distributed.p50_ms / pgboss.p50_ms),
      throughput_ratio_vs_pgboss: r3(distributed.jobs_per_s / pgboss.jobs_per_s),
      p50_ratio_vs_bullmq: r3(distributed.p50_ms / bullmq.p50_ms),
      throughput_ratio_vs_bullmq: r3(distributed.jobs_per_s / bullmq.jobs_per_s),
      embedded_p50_ratio_vs_pgboss: r3(embedded.p50_ms / pgboss.p50_ms),
      embedded_throughput_ratio_vs_pgboss: r3(embedded.jobs_per_s / pgboss.jobs_per_s),
      notes: [
        'proofline enqueue = the orchestrator path: job row insert (state store), inputs artifact put (fs), job message publish, dispatchedAttempt write (markDispatched: concurrent ones share one UPDATE); start = the executor is called (after the dispatcher\'s started event is acknowledged and the inputs are read, both at once)',
        'pg-boss: pollingIntervalSeconds 0.5 (its minimum), batchSize = concurrency with burstWhenBatchFull, queue notify off',
        'BullMQ: Worker concurrency = concurrency, private redis-server (--save "")',
      ],
    }
  } finally {
    await redis.stop()
    await nats.stop()
  }
}
