import { chmod, mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ROOT } from './cli.js'

export interface TestPipelineOptions {
  blocksPerSecond?: number
  failRate?: number
  hostileRate?: number
  latencyMs?: string
  tooBigAbove?: number
  capacity?: number
  heartbeatMs?: number
  extraRangeArgs?: string[]
  /** Replaces the range stage's prover command. */
  rangeCommand?: string[]
}

/**
 * Writes a two-stage (range → aggregate) pipeline file in a fresh temp folder whose
 * executors are `examples/mock-prover.mjs` child processes. Returns the file and folder.
 */
export async function writeTestPipeline(opts: TestPipelineOptions = {}): Promise<{ file: string; dir: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'pl-e2e-'))
  // The embedded Postgres runs as the unprivileged `postgres` user when tests run as root.
  await chmod(dir, 0o755)
  const prover = (seed: number): string =>
    JSON.stringify([
      'node',
      `${ROOT}examples/mock-prover.mjs`,
      '--fail-rate', String(opts.failRate ?? 0.1),
      '--hostile-rate', String(opts.hostileRate ?? 0.03),
      '--latency-ms', opts.latencyMs ?? '10:40',
      '--seed', String(seed),
      ...(opts.tooBigAbove !== undefined ? ['--too-big-above', String(opts.tooBigAbove)] : []),
      ...(seed === 1 ? (opts.extraRangeArgs ?? []) : []),
    ])
  const text = `
version: 1
name: e2e
dataDir: ${dir}/data
source:
  type: synthetic
  startBlock: 1
  blocksPerSecond: ${opts.blocksPerSecond ?? 0}
  seed: 11
stages:
  - name: range
    input: blocks
    collector: { strategy: sequential, capacity: ${opts.capacity ?? 400_000_000}, maxCount: 256, timeoutMs: 1000 }
    executor: { type: process, command: ${opts.rangeCommand ? JSON.stringify(opts.rangeCommand) : prover(1)}, timeoutMs: 20000, heartbeatMs: ${opts.heartbeatMs ?? 1000} }
    dispatch: { concurrency: 2, ackWaitMs: 20000 }
    retry: { maxAttempts: 12, backoffMs: 50, maxBackoffMs: 500 }
  - name: aggregate
    input: proofs.range
    collector: { strategy: sequential, maxCount: 2, timeoutMs: 1000 }
    executor: { type: process, command: ${prover(2)}, timeoutMs: 20000, heartbeatMs: ${opts.heartbeatMs ?? 1000} }
    dispatch: { concurrency: 2, ackWaitMs: 20000 }
    retry: { maxAttempts: 12, backoffMs: 50, maxBackoffMs: 500 }
log: { level: warn }
`
  const file = join(dir, 'pipeline.yaml')
  await writeFile(file, text)
  return { file, dir }
}

/** One line of `--export`. */
export interface ExportedJob {
  stage: string
  first: number
  last: number
  id: string
  attempts: number
}

/**
 * Independent continuity check of an export: per stage, the succeeded ranges sorted by first
 * block must tile [start, end] exactly.
 */
export function checkExport(lines: ExportedJob[], stages: string[], start: number, end: number): { gaps: number; overlaps: number; duplicates: number; covered: Record<string, number> } {
  let gaps = 0
  let overlaps = 0
  let duplicates = 0
  const covered: Record<string, number> = {}
  const ids = new Set<string>()
  for (const stage of stages) {
    const jobs = lines.filter((l) => l.stage === stage).sort((a, b) => a.first - b.first)
    let next = start
    covered[stage] = 0
    for (const j of jobs) {
      if (ids.has(j.id)) duplicates++
      ids.add(j.id)
      if (j.first > next) gaps++
      if (j.first < next) overlaps++
      covered[stage] += j.last - j.first + 1
      next = Math.max(next, j.last + 1)
    }
    if (next <= end) gaps++
  }
  return { gaps, overlaps, duplicates, covered }
}
