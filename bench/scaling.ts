/**
 * Scaling: simulated provers (the mock executor, latency uniform in [0.5, 1.5] × mean, drawn per
 * job from a seed) behind the real dispatcher and the NATS bus, at 1, 8, 64 and 256 concurrent
 * provers, on the real clock. The coordinator (this process) publishes job messages and consumes
 * results; the provers run in a child process (W dispatchers, each its own NATS connection).
 *
 * Each N gets J = jobsPerWorker × N jobs (so every run lasts about the same time). T1 for J jobs
 * is what one prover would take: the jobs' drawn latencies plus the per-job overhead measured in
 * the N = 1 run. Efficiency = T1 / (N · TN).
 */
import { spawn } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { fsArtifacts } from '../src/artifacts/index.js'
import { natsBus } from '../src/bus/nats/index.js'
import type { BlockMessage } from '../src/core/types.js'
import { mockDraw } from '../src/executors/mock/mock-executor.js'
import { jobsSubject, resultsSubject, type JobMessage, type ResultMessage } from '../src/pipeline/messages.js'
import { processCpuSeconds, privateNats, r3, size, type BenchOptions } from './lib.js'

export interface ScalingPoint {
  workers: number
  dispatchers: number
  jobs: number
  tn_s: number
  t1_s: number
  /** Makespan of the same drawn latencies greedily scheduled on N provers with zero overhead: the tail no scheduler avoids. */
  ideal_tn_s: number
  /** Efficiency of that ideal schedule: the best T1 / (N · TN) these jobs allow. */
  ideal_efficiency: number
  efficiency: number
  /** CPU of the coordinator process (publishing jobs, consuming results), in cores. */
  coordinator_cpu_cores: number
  worker_process_cpu_cores: number
  nats_cpu_cores: number
  failed: number
}

export interface ScalingResult {
  clock: 'real'
  latency: { distribution: string; mean_ms: number; min_ms: number; max_ms: number }
  jobs_per_worker: number
  per_job_overhead_ms_at_1: number
  points: ScalingPoint[]
  efficiency_1: number
  efficiency_8: number
  efficiency_64: number
  efficiency_256: number
  notes: string[]
}

const WORKER = fileURLToPath(new URL('./scaling-worker.ts', import.meta.url))


function blocks(seed: number, first: number, n: number): { kind: 'block'; key: number; data: BlockMessage }[] {
  const out: { kind: 'block'; key: number; data: BlockMessage }[] = []
  let parent = `0x${'00'.repeat(32)}`
  for (let k = 0; k < n; k++) {
    const hash = `0x${(seed * 1_000_003 + first + k).toString(16).padStart(64, '0')}`
    out.push({ kind: 'block', key: first + k, data: { number: first + k, hash: hash as `0x${string}`, parentHash: parent as `0x${string}`, timestamp: 0, gasUsed: 1, cost: 1, txCount: 1 } })
    parent = hash
  }
  return out
}

async function runPoint(opts: BenchOptions, natsUrl: string, natsPid: number, workers: number, jobs: number, minMs: number, maxMs: number, dir: string): Promise<{ tnS: number; idealS: number; drawnS: number; coordCpu: number; workerCpu: number; natsCpu: number; failed: number; dispatchers: number }> {
  const run = `s${workers}x${Date.now().toString(36)}`
  const stream = `BENCH_SCALE_${run.toUpperCase()}`
  const prefix = `bscale${run}`
  const W = Math.min(workers, 16)
  const seed = opts.seed
  const child = spawn(process.execPath, ['--import', 'tsx', WORKER, natsUrl, stream, prefix, dir, String(workers), String(W), String(minMs), String(maxMs), String(seed)], { stdio: ['ignore', 'pipe', 'inherit'] })
  try {
    await new Promise<void>((resolve, reject) => {
      let out = ''
      child.stdout.on('data', (b: Buffer) => {
        out += b.toString()
        if (out.includes('ready')) resolve()
      })
      child.once('exit', (code) => reject(new Error(`scaling worker exited with ${code} before it was ready`)))
    })
    const bus = await natsBus({ servers: natsUrl, stream, subjectPrefix: prefix, name: 'bench-coordinator', logger: { warn: () => {} } })
    const artifacts = fsArtifacts({ dir })
    const inputs = await artifacts.put(Buffer.from(JSON.stringify(blocks(seed, 1, 2))), { prefix: 'inputs' })
    let done = 0
    let failed = 0
    let resolveAll!: () => void
    const all = new Promise<void>((r) => (resolveAll = r))
    const stop = new AbortController()
    const consuming = bus.consume<ResultMessage>(resultsSubject('range'), 'coordinator', (d) => {
      if (!d.data.ok) failed++
      if (++done === jobs) resolveAll()
      return Promise.resolve()
    }, { signal: stop.signal, concurrency: 64 })
    let drawn = 0
    const latencies: number[] = []
    const cpu0 = process.cpuUsage()
    const wcpu0 = await processCpuSeconds(child.pid!)
    const ncpu0 = await processCpuSeconds(natsPid)
    const t0 = performance.now()
    for (let i = 0; i < jobs; i += 200) {
      await Promise.all(
        Array.from({ length: Math.min(200, jobs - i) }, (_, k) => {
          const jobId = `${run}-${i + k}`
          const ms = Math.round(minMs + mockDraw(seed, jobId, 1, 'latency') * (maxMs - minMs))
          drawn += ms
          latencies.push(ms)
          const msg: JobMessage = { jobId, stage: 'range', attempt: 1, first: 1, last: 2, lastHash: blocks(seed, 1, 2)[1]!.data.hash, programId: 'mock-v1', inputs, avoidWorkers: [] }
          return bus.publish<JobMessage>(jobsSubject('range'), { id: `${jobId}#1`, data: msg })
        }),
      )
    }
    await all
    const tn = (performance.now() - t0) / 1000
    const cpu = process.cpuUsage(cpu0)
    const wcpu = (await processCpuSeconds(child.pid!)) - wcpu0
    const ncpu = (await processCpuSeconds(natsPid)) - ncpu0
    stop.abort()
    await consuming
    await bus.close()
    // Greedy list scheduling in publish order onto the earliest free prover, no overhead.
    const free = new Array<number>(workers).fill(0)
    for (const ms of latencies) {
      let k = 0
      for (let j = 1; j < free.length; j++) if (free[j]! < free[k]!) k = j
      free[k] = free[k]! + ms
    }
    const idealS = Math.max(...free) / 1000
    return { tnS: tn, idealS, drawnS: drawn / 1000, coordCpu: (cpu.user + cpu.system) / 1e6 / tn, workerCpu: wcpu / tn, natsCpu: ncpu / tn, failed, dispatchers: W }
  } finally {
    const exited = new Promise<void>((r) => (child.exitCode !== null ? r() : child.once('exit', () => r())))
    child.kill('SIGTERM')
    const t = setTimeout(() => child.kill('SIGKILL'), 10_000)
    await exited
    clearTimeout(t)
  }
}

export async function scalingBench(opts: BenchOptions): Promise<ScalingResult> {
  const meanMs = size(opts, 'scaling.mean_ms', 1_000, 40)
  const jobsPerWorker = size(opts, 'scaling.jobs_per_worker', 16, 2)
  const minMs = meanMs / 2
  const maxMs = (meanMs * 3) / 2
  const nats = await privateNats()
  const dir = await mkdtemp(join(tmpdir(), 'pl-bench-scale-'))
  try {
    const points: ScalingPoint[] = []
    let overheadS = 0
    for (const workers of [1, 8, 64, 256]) {
      const jobs = jobsPerWorker * workers
      opts.log(`scaling: ${workers} provers, ${jobs} jobs ...`)
      const p = await runPoint(opts, nats.url, nats.pid, workers, jobs, minMs, maxMs, dir)
      if (workers === 1) overheadS = Math.max(0, (p.tnS - p.drawnS) / jobs)
      const t1 = p.drawnS + jobs * overheadS
      points.push({
        workers,
        dispatchers: p.dispatchers,
        jobs,
        tn_s: r3(p.tnS),
        t1_s: r3(t1),
        ideal_tn_s: r3(p.idealS),
        ideal_efficiency: r3(p.drawnS / (workers * p.idealS)),
        efficiency: r3(t1 / (workers * p.tnS)),
        coordinator_cpu_cores: r3(p.coordCpu),
        worker_process_cpu_cores: r3(p.workerCpu),
        nats_cpu_cores: r3(p.natsCpu),
        failed: p.failed,
      })
    }
    const eff = (n: number): number => points.find((p) => p.workers === n)?.efficiency ?? Number.NaN
    return {
      clock: 'real',
      latency: { distribution: 'uniform', mean_ms: meanMs, min_ms: minMs, max_ms: maxMs },
      jobs_per_worker: jobsPerWorker,
      per_job_overhead_ms_at_1: r3(overheadS * 1000),
      points,
      efficiency_1: eff(1),
      efficiency_8: eff(8),
      efficiency_64: eff(64),
      efficiency_256: eff(256),
      notes: [
        'real clock throughout; no virtual clock is used',
        'J = jobs_per_worker × N jobs per point; T1(J) = the jobs\' drawn latencies + J × the per-job overhead measured at N = 1',
        'provers: one child process holding min(N, 16) dispatchers (own NATS connection each), concurrency N / dispatchers; the coordinator publishes job messages directly (no state store) and consumes results',
        'this machine has 2 cores shared by the coordinator, the provers\' process and nats-server',
      ],
    }
  } finally {
    await rm(dir, { recursive: true, force: true })
    await nats.stop()
  }
}
