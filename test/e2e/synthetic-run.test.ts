import { readFile, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { runCli } from '../support/cli.js'
import { checkExport, writeTestPipeline, type ExportedJob } from '../support/pipeline-config.js'

const dirs: string[] = []
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true })
})

interface Summary {
  ok: boolean
  reason: string
  blocks: { seen: number; target: number }
  retries: number
  deadLetters: number
  rejectedOutputs: number
  continuity: { gaps: number; overlaps: number; duplicates: number }
  stages: { stage: string; blocksCovered: number; retriedJobsRecovered: number; meanFill: number | null; states: Record<string, number> }[]
}

describe('proofline run (synthetic, process executors)', () => {
  it('behavior: every block is covered exactly once by every stage, and retries recover', async () => {
    const { file, dir } = await writeTestPipeline({ failRate: 0.15, hostileRate: 0.05 })
    dirs.push(dir)
    const out = join(dir, 'export.jsonl')
    const r = await runCli(['run', '--config', file, '--until-blocks', '3000', '--export', out])
    expect(r.code, r.stderr.slice(-3000)).toBe(0)
    const s = JSON.parse(r.stdout) as Summary
    expect(s).toMatchObject({ ok: true, reason: 'complete', deadLetters: 0, continuity: { gaps: 0, overlaps: 0, duplicates: 0 } })
    expect(s.blocks.seen).toBe(3000)
    expect(s.stages.map((st) => st.blocksCovered)).toEqual([3000, 3000])
    expect(s.retries).toBeGreaterThan(0)
    expect(s.rejectedOutputs).toBeGreaterThan(0)
    // Capacity-aware ranges are nearly full (the tail range may be partial).
    expect(s.stages[0]?.meanFill).toBeGreaterThan(0.8)

    const lines = (await readFile(out, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as ExportedJob)
    const check = checkExport(lines, ['range', 'aggregate'], 1, 3000)
    expect(check).toEqual({ gaps: 0, overlaps: 0, duplicates: 0, covered: { range: 3000, aggregate: 3000 } })
    expect(lines.some((l) => l.attempts > 1)).toBe(true)

    // Status reads the store when no orchestrator runs.
    const st = await runCli(['status', '--config', file, '--json'])
    expect(st.code, st.stderr).toBe(0)
    const view = JSON.parse(st.stdout) as { source: string; stages: { blocksCovered: number }[] }
    expect(view.source).toBe('state-store')
    expect(view.stages.map((x) => x.blocksCovered)).toEqual([3000, 3000])
  })

  it('behavior: a too-big range is split, and an unprovable one is dead-lettered and fails the run', async () => {
    // The range prover refuses more than ~60M gas of blocks (exit 10 → split); the aggregate
    // is fine. Then a second pipeline whose prover marks everything unprovable.
    const { file, dir } = await writeTestPipeline({ failRate: 0, hostileRate: 0, tooBigAbove: 60_000_000, capacity: 200_000_000 })
    dirs.push(dir)
    const r = await runCli(['run', '--config', file, '--until-blocks', '400'])
    expect(r.code, r.stderr.slice(-3000)).toBe(0)
    const s = JSON.parse(r.stdout) as Summary
    expect(s.ok).toBe(true)
    expect(s.stages[0]?.states.split).toBeGreaterThan(0)
    expect(s.continuity).toEqual({ gaps: 0, overlaps: 0, duplicates: 0 })

    // A prover that says every range is unprovable (exit code 11).
    const bad = await writeTestPipeline({ rangeCommand: ['node', '-e', 'process.exit(11)', '--'] })
    dirs.push(bad.dir)
    const r2 = await runCli(['run', '--config', bad.file, '--until-blocks', '50'])
    expect(r2.code).toBe(1)
    const s2 = JSON.parse(r2.stdout) as Summary
    expect(s2).toMatchObject({ ok: false, reason: 'dead-letters' })
    expect(s2.deadLetters).toBeGreaterThan(0)
    expect(r2.stderr).toContain('ALERT: job dead-lettered')
  })

  it('behavior: a config with a typo exits non-zero naming the key path and the file', async () => {
    const { file, dir } = await writeTestPipeline()
    dirs.push(dir)
    const text = await readFile(file, 'utf8')
    await writeFile(file, text.replace('maxCount: 256', 'maxCuont: 256'))
    const r = await runCli(['run', '--config', file, '--until-blocks', '10'])
    expect(r.code).toBe(3)
    expect(r.stderr).toContain(file)
    expect(r.stderr).toContain('stages[0].collector.maxCuont: unknown key')
  })
})
