/**
 * Memory: RSS of the orchestrator process (`node bin/proofline.js run`, measured from
 * /proc/<pid>/status of that child) in distributed mode — NATS JetStream and Postgres in their
 * own processes — while its state store tracks 1M blocks (block rows and consumed collector items)
 * and 10k range jobs are queued (pending, published on the bus by the orchestrator itself, no
 * prover taking them). The history is written with SQL before the orchestrator starts, as if it
 * had run before; the orchestrator then resumes the synthetic source at block 1M+1 (20 blocks/s)
 * and its start-up sweep publishes the 10k jobs.
 *
 * Reported: RSS sampled every second once every job is published (median and max of the window),
 * and the peak RSS (VmHWM) including the start-up sweep.
 */
import { readFile } from 'node:fs/promises'
import { sql } from 'kysely'
import { openPostgres } from '../src/state/sql/database.js'
import { sqlStateStore } from '../src/state/sql/sql-state.js'
import { benchSchema, percentile, privateNats, processRssMb, r3, size, sleep, type BenchOptions } from './lib.js'
import { preparePipeline, startRun } from './pipeline.js'

export interface MemoryResult {
  blocks_tracked: number
  queued_jobs: number
  blocks_per_job: number
  /** Median RSS (MB) of the orchestrator over the window after its start-up sweep published every job. */
  rss_mb_1m_blocks: number
  rss_mb_max_in_window: number
  /** Peak RSS (VmHWM) since the process started, start-up sweep included. */
  peak_rss_mb: number
  /** The same process over a nearly empty store: what loading the code costs before any state. */
  rss_mb_empty_store: number
  window_s: number
  sweep_s: number
  /** V8's own view at the end of the window (the orchestrator's /metrics): heap in use (live and not yet collected garbage) and heap reserved. */
  heap_used_mb: number | null
  heap_total_mb: number | null
  /**
   * The same run with node's old space capped (`--max-old-space-size`, an operator setting,
   * not a default): how much of the RSS is V8 keeping garbage headroom rather than state.
   */
  heap_capped: { max_old_space_mb: number; rss_mb_1m_blocks: number; rss_mb_max_in_window: number; peak_rss_mb: number; sweep_s: number; heap_used_mb: number | null; heap_total_mb: number | null } | null
  mode: string
}

/** Heap figures from the orchestrator's Prometheus metrics (its API writes its URL to <dataDir>/api.json). */
async function heapMetrics(dataDir: string): Promise<{ used: number | null; total: number | null }> {
  try {
    const api = JSON.parse(await readFile(`${dataDir}/api.json`, 'utf8')) as { url: string }
    const text = await (await fetch(`${api.url}/metrics`)).text()
    const value = (name: string): number | null => {
      const m = new RegExp(`^proofline_nodejs_${name} (\\S+)$`, 'm').exec(text)
      return m ? r3(Number(m[1]) / 1e6) : null
    }
    return { used: value('heap_size_used_bytes'), total: value('heap_size_total_bytes') }
  } catch {
    return { used: null, total: null }
  }
}

export async function seed(pgUrl: string, schema: string, blocks: number, perJob: number): Promise<void> {
  const database = await openPostgres(pgUrl, schema, 2)
  try {
    // Creates the state tables (migrations), as the orchestrator would.
    const store = await sqlStateStore(database)
    await store.close()
    const now = Date.now()
    const jobs = Math.floor(blocks / perJob)
    const db = database.db
    const hash = (n: string): ReturnType<typeof sql.raw> => sql.raw(`'0x' || md5((${n})::text) || md5(((${n}) + 7)::text)`)
    const blockJson = (n: string): ReturnType<typeof sql.raw> =>
      sql.raw(`jsonb_build_object('number', ${n}, 'hash', '0x' || md5((${n})::text) || md5(((${n}) + 7)::text), 'parentHash', '0x' || md5((${n} - 1)::text) || md5(((${n}) + 6)::text), 'timestamp', 1700000000 + ${n} * 2, 'gasUsed', 2000000 + (${n} % 97) * 40000, 'cost', 2000000 + (${n} % 97) * 40000, 'txCount', 33)`)
    await sql`insert into state_blocks (number, hash, parent_hash, gas_used, cost, seen_at)
      select n, ${hash('n')}, ${hash('n - 1')}, 2000000 + (n % 97) * 40000, 2000000 + (n % 97) * 40000, ${now}::bigint - (${blocks} - n) * 2000
      from generate_series(1, ${blocks}) n`.execute(db)
    await sql`insert into state_collector_items (collector, id, start_key, end_key, cost, data, received_at, job_id, consumed_at)
      select 'range', 'block:' || n || ':' || ${hash('n')}, n, n, 2000000 + (n % 97) * 40000, ${blockJson('n')}, ${now}::bigint - (${blocks} - n) * 2000,
             'range-' || ((n - 1) / ${perJob}), ${now}::bigint
      from generate_series(1, ${jobs * perJob}) n`.execute(db)
    await sql`insert into state_jobs (id, stage, first, last, last_hash, program_id, state, attempt, max_attempts, inputs, cost, capacity,
                                      over_capacity, dispatched_attempt, result_published, created_at, updated_at)
      select 'range-' || k, 'range', k * ${perJob} + 1, (k + 1) * ${perJob}, ${hash(`(k + 1) * ${perJob}`)}, 'mock-v1', 'pending', 1, 10,
             (select jsonb_agg(jsonb_build_object('id', 'block:' || n || ':' || ${hash('n')}, 'data', ${blockJson('n')}) order by n)
                from generate_series(k * ${perJob} + 1, (k + 1) * ${perJob}) n),
             ${perJob} * 4000000, 400000000, false, 0, false, ${now}::bigint, ${now}::bigint
      from generate_series(0, ${jobs - 1}) k`.execute(db)
    await sql`insert into state_cursors (name, value, updated_at) values ('collector.range', ${String(jobs * perJob + 1)}, ${now}::bigint)`.execute(db)
    await sql`insert into state_meta (key, value, updated_at) values ('source.next', ${String(blocks + 1)}, ${now}::bigint)`.execute(db)
    await sql`analyze`.execute(db)
  } finally {
    await database.close()
  }
}

async function undispatched(pgUrl: string, schema: string): Promise<number> {
  const database = await openPostgres(pgUrl, schema, 1)
  try {
    const r = await sql<{ n: string }>`select count(*) as n from state_jobs where dispatched_attempt < attempt`.execute(database.db)
    return Number(r.rows[0]?.n ?? -1)
  } finally {
    await database.close()
  }
}

/** One orchestrator run over a seeded store: RSS samples after its start-up sweep published every job. */
async function measure(opts: BenchOptions, natsUrl: string, blocks: number, perJob: number, windowS: number, nodeArgs: string[] = []): Promise<{ median: number; max: number; peak: number; sweepS: number; heapUsed: number | null; heapTotal: number | null }> {
  const schema = benchSchema('memory')
  const p = await preparePipeline(
    {
      pgUrl: opts.pgUrl,
      natsUrl,
      blocksPerSecond: 20,
      seed: opts.seed,
      schema,
      range: { latencyMs: { min: 0, max: 0 }, concurrency: 1, inProcess: false, timeoutMs: 5_000 },
      aggregate: { latencyMs: { min: 0, max: 0 }, concurrency: 1, inProcess: false, timeoutMs: 5_000 },
    },
    'memory',
  )
  try {
    opts.log(`memory: writing ${blocks} blocks and ${Math.floor(blocks / perJob)} queued jobs into the state store ...`)
    await seed(opts.pgUrl, schema, blocks, perJob)
    opts.log(`memory: starting the orchestrator${nodeArgs.length > 0 ? ` (node ${nodeArgs.join(' ')})` : ''} ...`)
    const run = startRun(p, nodeArgs)
    const pid = run.child.pid!
    try {
      const t0 = Date.now()
      const deadline = t0 + (opts.quick ? 120_000 : 600_000)
      for (;;) {
        if (run.child.exitCode !== null) throw new Error(`orchestrator exited with ${run.child.exitCode}: ${run.stderr().slice(-2000)}`)
        if ((await undispatched(opts.pgUrl, schema)) === 0) break
        if (Date.now() > deadline) throw new Error('the orchestrator did not publish the queued jobs in time')
        await sleep(1_000)
      }
      const sweepS = (Date.now() - t0) / 1000
      opts.log(`memory: every job published after ${sweepS.toFixed(1)} s; sampling RSS for ${windowS} s ...`)
      const samples: number[] = []
      for (let i = 0; i < windowS; i++) {
        await sleep(1_000)
        if (run.child.exitCode !== null) throw new Error(`orchestrator exited with ${run.child.exitCode}: ${run.stderr().slice(-2000)}`)
        samples.push((await processRssMb(pid)).rss)
      }
      const peak = (await processRssMb(pid)).peak
      const heap = await heapMetrics(`${p.dir}/data`)
      return { median: percentile(samples, 50), max: Math.max(...samples), peak, sweepS, heapUsed: heap.used, heapTotal: heap.total }
    } finally {
      await run.stop()
    }
  } finally {
    await p.cleanup()
  }
}

export async function memoryBench(opts: BenchOptions): Promise<MemoryResult> {
  const blocks = size(opts, 'memory.blocks', 1_000_000, 20_000)
  const perJob = 100
  const windowS = size(opts, 'memory.window_s', 20, 5)
  const nats = await privateNats()
  try {
    opts.log('memory: floor — the same orchestrator over a nearly empty store (100 blocks, 1 job) ...')
    const floor = await measure(opts, nats.url, 100, perJob, Math.min(windowS, 10))
    const m = await measure(opts, nats.url, blocks, perJob, windowS)
    const capMb = size(opts, 'memory.heap_cap_mb', 96, 96)
    const capped = capMb > 0 ? await measure(opts, nats.url, blocks, perJob, windowS, [`--max-old-space-size=${capMb}`]) : undefined
    return {
      blocks_tracked: blocks,
      queued_jobs: Math.floor(blocks / perJob),
      blocks_per_job: perJob,
      rss_mb_1m_blocks: r3(m.median),
      rss_mb_max_in_window: r3(m.max),
      peak_rss_mb: r3(m.peak),
      rss_mb_empty_store: r3(floor.median),
      window_s: windowS,
      sweep_s: r3(m.sweepS),
      heap_used_mb: m.heapUsed,
      heap_total_mb: m.heapTotal,
      heap_capped: capped
        ? { max_old_space_mb: capMb, rss_mb_1m_blocks: r3(capped.median), rss_mb_max_in_window: r3(capped.max), peak_rss_mb: r3(capped.peak), sweep_s: r3(capped.sweepS), heap_used_mb: capped.heapUsed, heap_total_mb: capped.heapTotal }
        : null,
      mode: 'distributed: orchestrator child process (node bin/proofline.js run), nats-server and Postgres in their own processes, no in-process provers',
    }
  } finally {
    await nats.stop()
  }
}
