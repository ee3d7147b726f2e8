import { loadConfig } from '../config/load.js'
import type { JobCounts, StateStore } from '../state/types.js'
import { stageCoverage, type StageCoverage } from '../pipeline/summary.js'
import { createLogger, wireOrchestrator } from '../wiring.js'
import { readApiFile } from './api-file.js'

interface StatusView {
  source: 'api' | 'state-store'
  orchestrator: string
  jobs: JobCounts
  stages: StageCoverage[]
  openItems: Record<string, number>
  /** Stages an operator paused (known only from a running orchestrator). */
  paused: string[]
  blocks: { count: number; min: number; max: number } | null
  deadJobs: { id: string; stage: string; first: number; last: number; error: string | null }[]
}

/**
 * `proofline status`: asks the running orchestrator's API; when none runs, reads the state
 * store directly (safe: no orchestrator is writing, and the embedded store is real Postgres).
 */
export async function printStatus(opts: { config: string; json?: boolean }): Promise<number> {
  const config = await loadConfig(opts.config, { env: process.env })
  const api = await readApiFile(config)
  let view: StatusView | undefined
  if (api) {
    try {
      const res = await fetch(`${api.url}/status`)
      const body = (await res.json()) as { jobs: JobCounts; openItems: Record<string, number>; state: string; paused?: string[]; summary: { stages: StageCoverage[]; blocks: { seen: number; start: number; lastSeen: number | null } } | null }
      const dead = (await (await fetch(`${api.url}/jobs?state=dead&limit=20`)).json()) as { jobs: { id: string; stage: string; first: number; last: number; lastError: string | null }[] }
      view = {
        source: 'api',
        orchestrator: `${body.state} (pid ${api.pid}, ${api.url})`,
        jobs: body.jobs,
        stages: body.summary?.stages ?? [],
        openItems: body.openItems,
        paused: body.paused ?? [],
        blocks: body.summary?.blocks.lastSeen != null ? { count: body.summary.blocks.seen, min: body.summary.blocks.start, max: body.summary.blocks.lastSeen } : null,
        deadJobs: dead.jobs.map((j) => ({ id: j.id, stage: j.stage, first: j.first, last: j.last, error: j.lastError })),
      }
    } catch {
      view = undefined // stale api.json: the orchestrator died; read the store instead
    }
  }
  if (!view) {
    const log = createLogger('warn')
    const wired = await wireOrchestrator(config, log)
    try {
      view = await viewFromStore(wired.ctx.state, config.stages.map((s) => s.name), config.source.startBlock)
    } finally {
      await wired.close()
    }
  }
  if (opts.json) {
    process.stdout.write(`${JSON.stringify(view, null, 2)}\n`)
    return 0
  }
  const lines = [`orchestrator: ${view.orchestrator}`]
  lines.push(view.blocks ? `blocks seen: ${view.blocks.count} (${view.blocks.min}…${view.blocks.max})` : 'blocks seen: none')
  for (const s of view.stages) {
    const states = Object.entries(view.jobs[s.stage] ?? {}).map(([k, v]) => `${k}=${v}`).join(' ')
    lines.push(
      `stage ${s.stage}: covered ${s.blocksCovered} blocks up to ${s.lastCovered ?? '-'} | ${states || 'no jobs'} | open inputs ${view.openItems[s.stage] ?? '?'} | holes ${s.internalGaps} overlaps ${s.overlaps.length} duplicates ${s.duplicates} | retries ${s.retries}${s.meanFill !== null ? ` | fill ${(s.meanFill * 100).toFixed(1)}%` : ''}`,
    )
  }
  if (view.paused.length > 0) lines.push(`PAUSED by an operator: ${view.paused.join(', ')} — \`proofline resume STAGE --config …\` releases their jobs`)
  for (const d of view.deadJobs) lines.push(`DEAD ${d.id} (${d.stage} ${d.first}-${d.last}): ${d.error ?? ''} — fix the cause, then \`proofline requeue ${d.id} --config …\``)
  process.stdout.write(`${lines.join('\n')}\n`)
  return 0
}

async function viewFromStore(state: StateStore, stages: string[], start: number): Promise<StatusView> {
  const blocks = (await state.blockStats()) ?? null
  const cov: StageCoverage[] = []
  for (const stage of stages) cov.push(stageCoverage(stage, await state.listJobs({ stage, omitInputs: true }), start, blocks?.max ?? start - 1))
  const dead = await state.listJobs({ states: ['dead'], limit: 20 })
  return {
    source: 'state-store',
    orchestrator: 'not running',
    jobs: await state.countJobs(),
    stages: cov,
    openItems: {},
    paused: [],
    blocks,
    deadJobs: dead.map((j) => ({ id: j.id, stage: j.stage, first: j.first, last: j.last, error: j.lastError })),
  }
}
