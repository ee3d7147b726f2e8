import { chmod, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createPublicClient, http, parseAbiItem, type Address, type Hex } from 'viem'
import { afterAll, describe, expect, it } from 'vitest'
import { startAnvil, type AnvilInstance } from '../../src/chain/anvil.js'
import { outputRootAt } from '../../src/chain/output-root.js'
import { runCli } from '../support/cli.js'

const cleanups: (() => Promise<void>)[] = []
afterAll(async () => {
  for (const c of cleanups.reverse()) await c()
})

interface UpSummary {
  ok: boolean
  oracle: Address
  l1: { rpcUrl: string; chainId: number }
  verifier: { kind: string; address: Address }
  anchor: { l2Block: number }
  proposals: { l2BlockFirst: number; l2Block: number; outputRoot: Hex; txHash: Hex; gasUsed: number }[]
}

describe('proofline up', () => {
  it('behavior: on chains that outlive the run, the oracle\'s OutputProposed events show the summary\'s contiguous proposals', { timeout: 600_000 }, async () => {
    const l1: AnvilInstance = await startAnvil({ chainId: 900 })
    const l2: AnvilInstance = await startAnvil({ chainId: 901 })
    const dir = await mkdtemp(join(tmpdir(), 'pl-up-'))
    await chmod(dir, 0o755) // the embedded Postgres runs as an unprivileged user
    cleanups.push(() => l1.stop(), () => l2.stop(), () => rm(dir, { recursive: true, force: true }))
    const r = await runCli(['up', '--exit-after-proposals', '3', '--l1-rpc', l1.rpcUrl, '--l2-rpc', l2.rpcUrl, '--data-dir', join(dir, 'up'), '--block-time-ms', '500', '--propose-every-ms', '1000', '--mock'], { timeoutMs: 540_000 })
    expect(r.code, r.stderr.slice(-3000)).toBe(0)
    // The dashboard URL is printed at start-up, before the first progress line.
    const url = /dashboard (http:\/\/127\.0\.0\.1:\d+\/dashboard\/)/.exec(r.stderr)
    expect(url, r.stderr.slice(0, 2000)).not.toBeNull()
    expect(r.stderr.indexOf(url?.[0] ?? '')).toBeLessThan(r.stderr.indexOf('L2 head'))
    const s = JSON.parse(r.stdout) as UpSummary
    expect(s.ok).toBe(true)
    expect(s.l1.rpcUrl).toBe(l1.rpcUrl)
    expect(s.verifier.kind).toContain('MockVerifier')
    // At least 3 (one more may land while it stops); the summary lists every one.
    expect(s.proposals.length).toBeGreaterThanOrEqual(3)
    // Contiguous from the anchor.
    let next = s.anchor.l2Block + 1
    for (const p of s.proposals) {
      expect(p.l2BlockFirst).toBe(next)
      next = p.l2Block + 1
    }
    // The L1 oracle says the same, and each root is the L2 node's output root.
    const client = createPublicClient({ transport: http(l1.rpcUrl) })
    const logs = await client.getLogs({
      address: s.oracle,
      event: parseAbiItem('event OutputProposed(bytes32 indexed outputRoot, uint256 indexed l2OutputIndex, uint256 indexed l2BlockNumber, uint256 l1Timestamp)'),
      fromBlock: 0n,
    })
    expect(logs.map((l) => [l.args.outputRoot, Number(l.args.l2BlockNumber)])).toEqual(s.proposals.map((p) => [p.outputRoot, p.l2Block]))
    expect(logs.map((l) => l.transactionHash)).toEqual(s.proposals.map((p) => p.txHash))
    const l2client = createPublicClient({ transport: http(l2.rpcUrl) })
    for (const p of s.proposals) expect((await outputRootAt(l2client, BigInt(p.l2Block))).outputRoot).toBe(p.outputRoot)
  })
})
