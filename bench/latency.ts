/**
 * Block → proposal latency of the real orchestrator (`proofline run`, NATS + Postgres, synthetic
 * blocks at a steady rate, mock provers with simulated proving time), split from the state store's
 * own timestamps into:
 *
 * - proving: the provers' reported durations (range + aggregate on the block's path);
 * - waiting: for the block's range to fill (block received → range job created) and for the
 *   sibling range of its aggregate (its range's result → the last range result the aggregate needs);
 * - orchestration: everything else (job publish → prover start, prover end → result recorded,
 *   last range result → aggregate job created).
 *
 * "Proposal" is the aggregate proof recorded, ready for the proposer. The block's time is when the
 * orchestrator received it (its `seen_at`).
 *
 * Baseline: the same blocks, ranges and proving times handed on by a loop that polls every 60 s
 * (range proving starts at the first tick after the range closes, the aggregate at the first tick
 * after both ranges are proven, the proposal at the first tick after the aggregate): simulated from
 * the measured times, the loop's phase drawn from the seed.
 */
import { sql } from 'kysely'
import { mulberry32 } from '../src/core/random.js'
import { openPostgres } from '../src/state/sql/database.js'
import { mean, percentile, privateNats, r3, size, type BenchOptions } from './lib.js'
import { preparePipeline, runUntil } from './pipeline.js'

interface JobRow {
  id: string
  stage: string
  first: number
  last: number
  created_at: number
  started_at: number
  ended_at: number
  duration_ms: number
}

export interface LatencyResult {
  blocks: number
  blocks_per_second: number
  proving_ms: { range: { min: number; max: number }; aggregate: { min: number; max: number } }
  proofline: { p50_s: number; p99_s: number; mean_s: number; proving_share: number; waiting_share: number; orchestration_share: number; orchestration_mean_ms: number }
  polling_60s: { p50_s: number; p99_s: number; mean_s: number; proving_share: number; waiting_share: number; polling_share: number }
  /** Orchestration time ÷ block→proposal time, averaged over blocks. */
  orchestration_share: number
  /** Mean per job of each orchestration step (a block pays for one range and one aggregate). */
  orchestration_parts_mean_ms: Record<string, number>
  /** proofline p50 ÷ the 60 s polling loop's p50. */
  p50_ratio_vs_polling: number
}

export async function latencyBench(opts: BenchOptions): Promise<LatencyResult> {
  const blocks = size(opts, 'latency.blocks', 3_000, 300)
  const rate = size(opts, 'latency.rate', 50, 300)
  const range = opts.quick ? { min: 50, max: 100 } : { min: 2_000, max: 4_000 }
  const aggregate = opts.quick ? { min: 20, max: 50 } : { min: 1_000, max: 2_000 }
  const nats = await privateNats()
  try {
    const p = await preparePipeline(
      {
        pgUrl: opts.pgUrl,
        natsUrl: nats.url,
        blocksPerSecond: rate,
        seed: opts.seed,
        range: { latencyMs: range, concurrency: 8, inProcess: true, timeoutMs: 2_000 },
        aggregate: { latencyMs: aggregate, concurrency: 4, inProcess: true, timeoutMs: 5_000 },
      },
      'latency',
    )
    try {
      opts.log(`latency: proofline run, ${blocks} blocks at ${rate}/s ...`)
      await runUntil(p, blocks, opts.quick ? 120_000 : 600_000)
      const database = await openPostgres(opts.pgUrl, p.schema, 2)
      let seen: Map<number, number>
      let jobs: JobRow[]
      try {
        const b = await sql<{ number: string; seen_at: string }>`select number, seen_at from state_blocks`.execute(database.db)
        seen = new Map(b.rows.map((r) => [Number(r.number), Number(r.seen_at)]))
        const j = await sql<Record<keyof JobRow, string>>`
          select j.id, j.stage, j.first, j.last, j.created_at, a.started_at, a.ended_at, a.duration_ms
          from state_jobs j join state_attempts a on a.job_id = j.id and a.outcome = 'succeeded'
          where j.state = 'succeeded'`.execute(database.db)
        jobs = j.rows.map((r) => ({ id: r.id, stage: r.stage, first: Number(r.first), last: Number(r.last), created_at: Number(r.created_at), started_at: Number(r.started_at), ended_at: Number(r.ended_at), duration_ms: Number(r.duration_ms) }))
      } finally {
        await database.close()
      }
      const ranges = jobs.filter((j) => j.stage === 'range').sort((a, b) => a.first - b.first)
      const aggs = jobs.filter((j) => j.stage === 'aggregate').sort((a, b) => a.first - b.first)
      const rand = mulberry32(opts.seed)
      const phase = rand() * 60_000
      const tick = (t: number): number => Math.ceil((t - phase) / 60_000) * 60_000 + phase
      const totals: number[] = []
      const base: number[] = []
      let sumProving = 0, sumWaiting = 0, sumOrch = 0, sumTotal = 0
      let bProving = 0, bWaiting = 0, bPolling = 0, bTotal = 0
      let orchN = 0
      // Where orchestration time goes, per job (means, ms).
      const parts = { range_publish_to_start: [] as number[], range_end_to_recorded: [] as number[], aggregate_created_after_last_range: [] as number[], aggregate_publish_to_start: [] as number[], aggregate_end_to_recorded: [] as number[] }
      for (const r of ranges) {
        parts.range_publish_to_start.push(r.started_at - r.created_at)
        parts.range_end_to_recorded.push(r.ended_at - r.started_at - r.duration_ms)
      }
      for (const a of aggs) {
        const rs = ranges.filter((r) => r.first >= a.first && r.last <= a.last)
        if (rs.length === 0) continue
        const ready = Math.max(...rs.map((r) => r.ended_at))
        parts.aggregate_created_after_last_range.push(a.created_at - ready)
        parts.aggregate_publish_to_start.push(a.started_at - a.created_at)
        parts.aggregate_end_to_recorded.push(a.ended_at - a.started_at - a.duration_ms)
        // Baseline: each range starts proving at the first tick after it closed.
        const bRangeDone = rs.map((r) => tick(r.created_at) + r.duration_ms)
        const bAggStart = tick(Math.max(...bRangeDone))
        const bPropose = tick(bAggStart + a.duration_ms)
        rs.forEach((r, k) => {
          for (let n = r.first; n <= r.last; n++) {
            const t = seen.get(n)
            if (t === undefined) continue
            const total = a.ended_at - t
            const proving = r.duration_ms + a.duration_ms
            const waiting = (r.created_at - t) + (ready - r.ended_at)
            const orch = total - proving - waiting
            totals.push(total)
            sumTotal += total
            sumProving += proving
            sumWaiting += waiting
            sumOrch += orch
            orchN++
            const bt = bPropose - t
            base.push(bt)
            bTotal += bt
            bProving += proving
            bWaiting += (r.created_at - t) + (Math.max(...bRangeDone) - bRangeDone[k]!)
            bPolling += bt - proving - ((r.created_at - t) + (Math.max(...bRangeDone) - bRangeDone[k]!))
          }
        })
      }
      const p50 = percentile(totals, 50)
      const b50 = percentile(base, 50)
      return {
        blocks: orchN,
        blocks_per_second: rate,
        proving_ms: { range, aggregate },
        proofline: {
          p50_s: r3(p50 / 1000),
          p99_s: r3(percentile(totals, 99) / 1000),
          mean_s: r3(mean(totals) / 1000),
          proving_share: r3(sumProving / sumTotal),
          waiting_share: r3(sumWaiting / sumTotal),
          orchestration_share: r3(sumOrch / sumTotal),
          orchestration_mean_ms: r3(sumOrch / orchN),
        },
        polling_60s: {
          p50_s: r3(b50 / 1000),
          p99_s: r3(percentile(base, 99) / 1000),
          mean_s: r3(mean(base) / 1000),
          proving_share: r3(bProving / bTotal),
          waiting_share: r3(bWaiting / bTotal),
          polling_share: r3(bPolling / bTotal),
        },
        orchestration_share: r3(sumOrch / sumTotal),
        orchestration_parts_mean_ms: Object.fromEntries(Object.entries(parts).map(([k, v]) => [k, r3(mean(v))])),
        p50_ratio_vs_polling: r3(p50 / b50),
      }
    } finally {
      await p.cleanup()
    }
  } finally {
    await nats.stop()
  }
}
