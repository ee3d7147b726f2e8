import { spawn } from 'node:child_process'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { BIN, ROOT, runCli } from '../support/cli.js'
import { writeTestPipeline } from '../support/pipeline-config.js'
import { until } from '../support/poll.js'

const dirs: string[] = []
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true })
})

/** Sum of a metric's samples whose labels include every `labels` pair (text exposition format). */
function metric(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue
    const m = /^([^{ ]+)(?:\{([^}]*)\})? (\S+)$/.exec(line)
    if (!m || m[1] !== name) continue
    const have = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]))
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) sum += Number(m[3])
  }
  return sum
}

/**
 * A range prover that refuses any job covering block 5 as unprovable (exit 11) while the
 * poison file exists — "a prover bug" the operator fixes — and otherwise runs the mock prover.
 */
const POISONED_BLOCK = 5
function poisonedProver(poisonFile: string): string {
  return `import { existsSync, readFileSync } from 'node:fs'
import { spawnSync } from 'node:child_process'
const args = process.argv.slice(2)
const doc = JSON.parse(readFileSync(args[args.indexOf('--input-path') + 1], 'utf8'))
if (existsSync(${JSON.stringify(poisonFile)}) && doc.job.first <= ${POISONED_BLOCK} && doc.job.last >= ${POISONED_BLOCK}) {
  process.stderr.write('test prover: block ${POISONED_BLOCK} is poisoned, cannot prove this range\\n')
  process.exit(11)
}
const r = spawnSync(process.execPath, [${JSON.stringify(`${ROOT}examples/mock-prover.mjs`)}, ...args], { stdio: 'inherit' })
process.exit(r.status ?? 1)
`
}

interface Snapshot {
  blocks: { seen: number | null }
  stages: { name: string; paused: boolean; queued: number; jobs: Record<string, number | undefined>; coveredTo: number | null }[]
}

describe('operating a running orchestrator', () => {
  it('behavior: /metrics counters move between two scrapes; admin needs the token (401 without); a paused stage takes no job until resumed; jobs --failed, inspect block and requeue work through the API', { timeout: 300_000 }, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'pl-op-'))
    dirs.push(dir)
    const poison = join(dir, 'poison')
    const prover = join(dir, 'poisoned-prover.mjs')
    await writeFile(poison, 'block 5 cannot be proven until this file is removed\n')
    await writeFile(prover, poisonedProver(poison))
    const { file } = await writeTestPipeline({ failRate: 0, hostileRate: 0, blocksPerSecond: 40, rangeCommand: ['node', prover, '--latency-ms', '10:40', '--seed', '1'] })
    dirs.push(join(file, '..'))
    const dataDir = join(file, '..', 'data')

    const child = spawn(process.execPath, [BIN, 'run', '--config', file], { stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    const exited = new Promise<number | null>((r) => child.on('close', (code) => r(code)))
    try {
      const api = await until('api.json', async () => JSON.parse(await readFile(join(dataDir, 'api.json'), 'utf8')) as { url: string; token: string })
      const get = async <T>(path: string): Promise<T> => (await (await fetch(`${api.url}${path}`)).json()) as T
      const scrape = async (): Promise<string> => {
        const res = await fetch(`${api.url}/metrics`)
        expect(res.headers.get('content-type')).toContain('text/plain')
        return res.text()
      }
      const stage = async (name: string): Promise<Snapshot['stages'][number]> => (await get<Snapshot>('/pipeline')).stages.find((s) => s.name === name) as Snapshot['stages'][number]

      // -- /metrics, scraped twice during the run --------------------------------------------------
      const first = await until('a first scrape with range jobs succeeded', async () => {
        const t = await scrape()
        return metric(t, 'proofline_job_transitions_total', { stage: 'range', to: 'succeeded' }) > 0 ? t : undefined
      })
      const second = await until('counters to move', async () => {
        const t = await scrape()
        return metric(t, 'proofline_job_transitions_total', { stage: 'range', to: 'succeeded' }) > metric(first, 'proofline_job_transitions_total', { stage: 'range', to: 'succeeded' }) ? t : undefined
      })
      expect(metric(second, 'proofline_jobs_created_total', { stage: 'range' })).toBeGreaterThan(metric(first, 'proofline_jobs_created_total', { stage: 'range' }))
      expect(metric(second, 'proofline_l2_seen_block')).toBeGreaterThan(metric(first, 'proofline_l2_seen_block'))
      expect(metric(second, 'proofline_attempts_total', { stage: 'range', outcome: 'succeeded' })).toBeGreaterThan(metric(first, 'proofline_attempts_total', { stage: 'range', outcome: 'succeeded' }))
      expect(metric(second, 'proofline_job_latency_seconds_count', { stage: 'range' })).toBeGreaterThan(metric(first, 'proofline_job_latency_seconds_count', { stage: 'range' }))
      // The poisoned range is dead-lettered with its class.
      const dead = await until('the poisoned range dead-lettered', async () => {
        const t = await scrape()
        return metric(t, 'proofline_dead_letters_total', { stage: 'range', failure_class: 'unprovable' }) === 1 ? t : undefined
      })
      expect(metric(dead, 'proofline_jobs', { stage: 'range', state: 'dead' })).toBe(1)

      // -- admin needs the token ---------------------------------------------------------------------
      expect((await fetch(`${api.url}/stages/range/pause`, { method: 'POST' })).status).toBe(401)
      expect((await fetch(`${api.url}/stages/range/pause`, { method: 'POST', headers: { authorization: `Bearer ${api.token.replace(/.$/, (c) => (c === 'x' ? 'y' : 'x'))}` } })).status).toBe(401)
      expect((await get<{ paused: string[] }>('/status')).paused).toEqual([])
      expect((await stage('range')).paused).toBe(false)

      // -- pause: the stage takes no job -----------------------------------------------------------
      const paused = await fetch(`${api.url}/stages/range/pause`, { method: 'POST', headers: { authorization: `Bearer ${api.token}` } })
      expect(paused.status).toBe(200)
      expect(await paused.json()).toMatchObject({ ok: true, stage: 'range', paused: true })
      expect((await get<{ paused: string[] }>('/status')).paused).toEqual(['range'])
      // Attempts running at the pause finish; then nothing starts.
      await until('range attempts running at the pause to end', async () => ((await stage('range')).jobs.running ?? 0) === 0 || undefined)
      const startedAtPause = metric(await scrape(), 'proofline_job_transitions_total', { stage: 'range', to: 'running' })
      const seenAtPause = (await get<Snapshot>('/pipeline')).blocks.seen ?? 0
      // New blocks keep arriving and new range jobs are created, but held back.
      const held = await until('new range jobs held back', async () => {
        const s = await get<Snapshot>('/pipeline')
        const r = s.stages.find((x) => x.name === 'range')
        return (s.blocks.seen ?? 0) >= seenAtPause + 120 && (r?.queued ?? 0) >= 2 ? r : undefined
      })
      expect(held.jobs.running ?? 0).toBe(0)
      const whilePaused = await scrape()
      expect(metric(whilePaused, 'proofline_job_transitions_total', { stage: 'range', to: 'running' })).toBe(startedAtPause)
      expect(metric(whilePaused, 'proofline_stage_paused', { stage: 'range' })).toBe(1)
      expect(metric(whilePaused, 'proofline_stage_queued_jobs', { stage: 'range' })).toBeGreaterThanOrEqual(2)
      const heldIds = (await get<{ jobs: { id: string }[] }>('/jobs?stage=range&state=pending,retrying')).jobs.map((j) => j.id)
      expect(heldIds.length).toBeGreaterThanOrEqual(2)

      const statusText = await runCli(['status', '--config', file])
      expect(statusText.stdout).toContain('PAUSED by an operator: range')

      // -- resume (through the CLI): the held jobs run -------------------------------------------------
      const resumed = await runCli(['resume', 'range', '--config', file])
      expect(resumed.code, resumed.stderr).toBe(0)
      expect(resumed.stdout).toMatch(/stage range resumed \(\d+ jobs published\)/)
      await until('range jobs to start again', async () => metric(await scrape(), 'proofline_job_transitions_total', { stage: 'range', to: 'running' }) > startedAtPause || undefined)
      await until('the held range jobs done', async () => {
        for (const id of heldIds) if ((await get<{ job: { state: string } }>(`/jobs/${encodeURIComponent(id)}`)).job.state !== 'succeeded') return undefined
        return true
      })
      expect((await get<{ paused: string[] }>('/status')).paused).toEqual([])

      // -- the CLI, through the API --------------------------------------------------------------------
      const failedJson = await runCli(['jobs', '--failed', '--json', '--config', file])
      expect(failedJson.code, failedJson.stderr).toBe(0)
      const failed = (JSON.parse(failedJson.stdout) as { jobs: { id: string; state: string; first: number; last: number; failureClass: string; lastError: string }[] }).jobs
      expect(failed.map((j) => j.state)).toEqual(['dead'])
      const deadJob = failed[0] as (typeof failed)[number]
      expect(deadJob.first).toBeLessThanOrEqual(POISONED_BLOCK)
      expect(deadJob.last).toBeGreaterThanOrEqual(POISONED_BLOCK)
      expect(deadJob.failureClass).toBe('unprovable')
      const failedText = await runCli(['jobs', '--failed', '--config', file])
      expect(failedText.stdout).toContain(deadJob.id)
      expect(failedText.stdout).toContain('proofline requeue JOB')

      const blockJson = await runCli(['inspect', 'block', String(POISONED_BLOCK), '--json', '--config', file])
      expect(blockJson.code, blockJson.stderr).toBe(0)
      const block = JSON.parse(blockJson.stdout) as { status: string; block: { number: number } | null; stages: { stage: string; jobs: { id: string; state: string }[] }[] }
      expect(block.status).toBe('range:dead')
      expect(block.block?.number).toBe(POISONED_BLOCK)
      expect(block.stages.find((s) => s.stage === 'range')?.jobs.map((j) => [j.id, j.state])).toEqual([[deadJob.id, 'dead']])
      const blockText = await runCli(['inspect', 'block', String(POISONED_BLOCK), '--config', file])
      expect(blockText.stdout).toContain(`block ${POISONED_BLOCK}: range:dead`)
      expect(blockText.stdout).toContain('block 5 is poisoned')
      const unseen = await runCli(['inspect', 'block', '999999999', '--config', file])
      expect(unseen.code).toBe(1)
      expect(unseen.stdout).toContain('has not been seen')

      const jobText = await runCli(['inspect', 'job', deadJob.id, '--config', file])
      expect(jobText.code, jobText.stderr).toBe(0)
      expect(jobText.stdout).toContain('attempt 1: failed')
      expect(jobText.stdout).toContain('block 5 is poisoned') // the stderr tail

      // Fix the cause, requeue: the range is proven and aggregated.
      await rm(poison)
      const requeued = await runCli(['requeue', deadJob.id, '--config', file])
      expect(requeued.code, requeued.stdout + requeued.stderr).toBe(0)
      await until('the requeued range aggregated', async () => ((await get<{ status: string }>(`/blocks/${POISONED_BLOCK}`)).status === 'aggregate:succeeded' ? true : undefined))
      const after = await runCli(['inspect', 'block', String(POISONED_BLOCK), '--json', '--config', file])
      expect((JSON.parse(after.stdout) as { status: string }).status).toBe('aggregate:succeeded')
      expect(JSON.parse((await runCli(['jobs', '--failed', '--json', '--config', file])).stdout)).toEqual({ jobs: [] })
    } finally {
      child.kill('SIGTERM')
    }
    expect(await exited, stderr.slice(-3000)).toBe(0)
    expect(JSON.parse(stdout)).toMatchObject({ reason: 'stopped', continuity: { gaps: 0, overlaps: 0, duplicates: 0 } })
  })
})
