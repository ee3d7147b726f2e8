import { spawn } from 'node:child_process'
import { afterAll, describe, expect, it } from 'vitest'
import { ROOT } from '../support/cli.js'

/**
 * The distributed demo as a test: orchestrator (watcher, collectors, proposer) + three workers
 * over NATS (private server), Postgres and S3 (s3rver), following a dev L2 and proposing to a
 * dev L1; a worker SIGKILLed mid-job, NATS restarted once.
 */
describe('distributed mode', () => {
  it('behavior: 2,000 L2 blocks are proven exactly once and proposed across worker and NATS failures', { timeout: 480_000 }, async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', `${ROOT}scripts/demo-distributed.ts`], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] })
    // A timed-out test must not leave the demo running (SIGTERM: it stops its servers and chains).
    afterAll(() => {
      if (child.exitCode === null) child.kill('SIGTERM')
    })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    const code = await new Promise<number | null>((r) => child.on('close', (c) => r(c)))
    expect(code, `${stdout}\n${stderr.slice(-3000)}`).toBe(0)
    const r = JSON.parse(stdout) as Record<string, unknown>
    expect(r, `${stdout}\n${stderr.slice(-3000)}`).toMatchObject({ ok: true, lostBlocks: 0, gaps: 0, overlaps: 0, duplicateProofs: 0, unaccountedJobs: [], deadLetters: 0 })
    expect(r.disruptions).toHaveLength(3)
    expect((r.disruptions as string[])[0]).toContain('mid-job')
    // The work was shared (a killed worker's attempt is re-run on another worker under the same
    // attempt number, so its record may name that worker instead; the restarted w2 may find the
    // queue empty).
    expect(Object.keys(r.attemptsByWorker as object).length).toBeGreaterThanOrEqual(2)
    // The orchestrator's proposer put contiguous outputs on L1 whose roots are the L2 node's.
    expect(r.proposals).toMatchObject({ rootsMatchL2: true })
    expect((r.proposals as { onL1: number }).onL1).toBeGreaterThan(0)
  })
})
