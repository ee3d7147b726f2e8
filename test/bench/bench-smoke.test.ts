import { execFile } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { parseArgs } from '../../bench/run.js'
import { capacityAware, fixedN } from '../../bench/utilization.js'
import { pick } from '../../bench/table.js'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))

/** The keys the benchmark issue requires in the JSON document. */
const REQUIRED = [
  'scheduling.p50_ratio_vs_pgboss',
  'scheduling.throughput_ratio_vs_pgboss',
  'scheduling.p50_ratio_vs_bullmq',
  'scheduling.throughput_ratio_vs_bullmq',
  'bus.fraction_of_raw',
  'utilization.capacity_fill',
  'utilization.ratio_vs_fixed',
  'utilization.overflows',
  'scaling.efficiency_64',
  'scaling.efficiency_256',
  'latency.orchestration_share',
  'memory.rss_mb_1m_blocks',
]

describe('bench harness (npm run bench)', () => {
  it('behavior: a --quick run prints one JSON document with every required number (shape only, never timings)', async () => {
    // Runs the real harness with tiny sizes: private nats-server and redis-server, Postgres, the CLI
    // that `npm test` built.
    const out = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      execFile(process.execPath, ['--import', 'tsx', 'bench/run.ts', '--json', '--quick', '--no-build'], { cwd: ROOT, maxBuffer: 64 << 20, timeout: 280_000 }, (err, stdout, stderr) => {
        resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : null, stdout, stderr })
      })
    })
    expect(out.code, out.stderr.slice(-3000)).toBe(0)
    const doc = JSON.parse(out.stdout) as Record<string, unknown>
    for (const key of REQUIRED) expect(typeof pick(doc, key), key).toBe('number')
    expect(pick(doc, 'meta.quick')).toBe(true)
    expect(pick(doc, 'scaling.clock')).toBe('real')
    const prover = pick(doc, 'prover') as { available: boolean; reason?: string }
    expect(typeof prover.available).toBe('boolean')
    if (!prover.available) expect(prover.reason).toEqual(expect.any(String))
    // The human table goes to stderr with --json.
    expect(out.stderr).toContain('scheduling.p50_ratio_vs_pgboss')
  }, 300_000)

  it('behavior: capacity-aware ranges never exceed the capacity, fixed ranges report their overflows', () => {
    const gas = [10, 90, 50, 50, 30, 120, 5, 5, 95]
    const c = capacityAware(gas, 100, 256)
    expect(c.overflows).toBe(1) // the single 120-gas block is larger than the prover
    // [10,90] [50,50] [30] [120] [5,5]; the trailing [95] closes only by timeout at the end and is not counted
    expect(c.proofs).toBe(5)
    expect(c.closed_by).toEqual({ capacity: 4, 'over-capacity': 1 })
    const f = fixedN(gas, 100, 2)
    expect(f.proofs).toBe(4)
    expect(f.overflows).toBe(1) // [10,90] [50,50] [30,120] [5,5]: only [30,120] exceeds 100
  })

  it('behavior: unknown arguments and sections are refused', () => {
    expect(() => parseArgs(['--nope'])).toThrow(/unknown argument/)
    expect(() => parseArgs(['--only', 'scheduling,warp'])).toThrow(/unknown section warp/)
    expect(parseArgs(['--json', '--quick', '--only', 'utilization'])).toMatchObject({ json: true, quick: true, only: ['utilization'] })
  })
})
