import { readFile, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { loadConfig } from '../../src/config/load.js'
import { ownerTag } from '../../src/wiring.js'
import { pidsWithEnv, runCli, seeded } from '../support/cli.js'
import { checkExport, writeTestPipeline, type ExportedJob } from '../support/pipeline-config.js'

/**
 * Kill-and-restart: SIGKILL the orchestrator at 20 seeded points — named crash points inside
 * transactions and inside executors, and seeded wall-clock times — restart it each time, and
 * require the same guarantees as an uninterrupted run, with no orphaned prover processes.
 */
const POINTS = [
  'collector.after-items',
  'collector.mid-group-tx',
  'collector.after-group-tx',
  'dispatcher.before-execute',
  'dispatcher.mid-execute',
  'recorder.mid-success-tx',
  'recorder.after-success-tx',
  'recorder.after-failed-tx',
  'source.after-publish',
] as const

const BLOCKS = 10_000
let dir = ''
afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true })
})

describe('crash recovery', () => {
  it('behavior: 20 SIGKILLs at seeded points lose nothing, duplicate nothing, and leave no orphans', { timeout: 900_000 }, async () => {
    const cfg = await writeTestPipeline({ failRate: 0.1, hostileRate: 0.03, latencyMs: '30:150', heartbeatMs: 10, blocksPerSecond: 250 })
    dir = cfg.dir
    const config = await loadConfig(cfg.file)
    const tag = ownerTag(config)
    const rand = seeded(20261121)
    const schedule: string[] = []
    let killed = 0
    for (let i = 0; i < 20; i++) {
      let env: Record<string, string> = {}
      let killAfterMs: number | undefined
      if (i % 3 === 2) {
        killAfterMs = 1_500 + Math.floor(rand() * 3_000)
        schedule.push(`t+${killAfterMs}ms`)
      } else {
        const point = POINTS[Math.floor(rand() * POINTS.length)] as string
        const n = point === 'collector.after-items' || point === 'source.after-publish' ? 1 + Math.floor(rand() * 40) : 1 + Math.floor(rand() * 4)
        env = { PROOFLINE_CRASH_AT: `${point}:${n}` }
        schedule.push(`${point}:${n}`)
      }
      const r = await runCli(['run', '--config', cfg.file, '--until-blocks', String(BLOCKS)], { env, ...(killAfterMs !== undefined ? { killAfterMs } : {}) })
      if (r.signal === 'SIGKILL') killed++
      else expect(r.code, `run ${i} (${schedule[i] ?? ''}) ended with ${r.code}: ${r.stderr.slice(-2000)}`).toBe(0)
    }
    // Most runs must really have been killed, or the test proves little.
    expect(killed, schedule.join(', ')).toBeGreaterThanOrEqual(15)

    const out = join(cfg.dir, 'export.jsonl')
    const final = await runCli(['run', '--config', cfg.file, '--until-blocks', String(BLOCKS), '--export', out])
    expect(final.code, final.stderr.slice(-3000)).toBe(0)
    const s = JSON.parse(final.stdout) as { ok: boolean; deadLetters: number; retries: number; continuity: object; stages: { blocksCovered: number }[] }
    expect(s).toMatchObject({ ok: true, deadLetters: 0, continuity: { gaps: 0, overlaps: 0, duplicates: 0 } })
    expect(s.stages.map((x) => x.blocksCovered)).toEqual([BLOCKS, BLOCKS])
    expect(s.retries).toBeGreaterThan(0)

    const lines = (await readFile(out, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as ExportedJob)
    expect(checkExport(lines, ['range', 'aggregate'], 1, BLOCKS)).toEqual({ gaps: 0, overlaps: 0, duplicates: 0, covered: { range: BLOCKS, aggregate: BLOCKS } })
    expect(await pidsWithEnv('PROOFLINE_OWNER', tag)).toEqual([])
  })
})
