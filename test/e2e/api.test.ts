import { spawn } from 'node:child_process'
import { readFile, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { BIN, runCli } from '../support/cli.js'
import { writeTestPipeline } from '../support/pipeline-config.js'

const dirs: string[] = []
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true })
})

async function waitFor<T>(fn: () => Promise<T | undefined>, ms = 60_000): Promise<T> {
  const end = Date.now() + ms
  for (;;) {
    const v = await fn().catch(() => undefined)
    if (v !== undefined) return v
    if (Date.now() > end) throw new Error('timed out')
    await new Promise((r) => setTimeout(r, 200))
  }
}

describe('a running orchestrator', () => {
  it('behavior: status and requeue go through its API, a second orchestrator is refused, SIGTERM drains', { timeout: 240_000 }, async () => {
    const { file, dir } = await writeTestPipeline({ failRate: 0, hostileRate: 0, blocksPerSecond: 50 })
    dirs.push(dir)
    const child = spawn(process.execPath, [BIN, 'run', '--config', file], { stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
    const exited = new Promise<number | null>((r) => child.on('close', (code) => r(code)))
    try {
      const api = await waitFor(async () => JSON.parse(await readFile(join(dir, 'data', 'api.json'), 'utf8')) as { url: string; token: string })
      const status = await waitFor(async () => {
        const r = await runCli(['status', '--config', file, '--json'])
        const v = JSON.parse(r.stdout) as { source: string; blocks: { count: number } | null }
        return v.source === 'api' && (v.blocks?.count ?? 0) > 0 ? v : undefined
      })
      expect(status.source).toBe('api')

      const second = await runCli(['run', '--config', file, '--until-blocks', '10'])
      expect(second.code).toBe(4)
      expect(second.stderr).toContain('another proofline orchestrator is running')

      const noAuth = await fetch(`${api.url}/jobs/x/requeue`, { method: 'POST' })
      expect(noAuth.status).toBe(401)
      const missing = await runCli(['requeue', 'range:1-2:nope', '--config', file])
      expect(missing.code).toBe(1)
      expect(missing.stdout).toContain('no job range:1-2:nope')
    } finally {
      child.kill('SIGTERM')
    }
    expect(await exited).toBe(0)
    expect(JSON.parse(stdout)).toMatchObject({ reason: 'stopped', continuity: { gaps: 0, overlaps: 0, duplicates: 0 } })
  })
})
