import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createPublicClient, http, keccak256, parseAbiItem, type Address, type Hex } from 'viem'
import { afterAll, describe, expect, it } from 'vitest'
import { serialHeavy } from '../../src/backends/builtin/test-support.js'
import { startAnvil, type AnvilInstance } from '../../src/chain/anvil.js'
import { outputRootAt } from '../../src/chain/output-root.js'
import { ROOT, runCli } from '../support/cli.js'

/**
 * `proofline up` on its default path: real UltraHonk proofs, the generated verifier behind the
 * adapter in the oracle. Heavy (two aggregate proofs): serial with the other proving tests; the
 * CRS, circuits and keys come from the shared cache (~/.cache/proofline) after the first run.
 */

const cleanups: (() => Promise<void>)[] = []
afterAll(async () => {
  for (const c of cleanups.reverse()) await c()
})

interface UpSummary {
  ok: boolean
  oracle: Address
  verifier: { kind: string; address: Address; honkVerifier: Address; codeHash: Hex; generatedCodeHash: Hex; codeHashMatches: boolean }
  anchor: { l2Block: number }
  proposals: { l2BlockFirst: number; l2Block: number; outputRoot: Hex; txHash: Hex; gasUsed: number; verifier: string; proofBytes: number }[]
}

describe('proofline up (built-in backend, the default)', () => {
  it('behavior: proposals are verified on L1 by the generated UltraHonk verifier the oracle calls', { timeout: 3_600_000 }, async () => {
    const l1: AnvilInstance = await startAnvil({ chainId: 900 })
    const l2: AnvilInstance = await startAnvil({ chainId: 901 })
    const dir = await mkdtemp(join(tmpdir(), 'pl-up-builtin-'))
    await chmod(dir, 0o755) // the embedded Postgres runs as an unprivileged user
    cleanups.push(() => l1.stop(), () => l2.stop(), () => rm(dir, { recursive: true, force: true }))
    const r = await serialHeavy(() =>
      runCli(['up', '--exit-after-proposals', '2', '--l1-rpc', l1.rpcUrl, '--l2-rpc', l2.rpcUrl, '--data-dir', join(dir, 'up'), '--propose-every-ms', '2000'], { timeoutMs: 3_000_000 }),
    )
    // Kept for reading the measured times (test-output/ is not committed).
    await mkdir(join(ROOT, 'test-output'), { recursive: true })
    await writeFile(join(ROOT, 'test-output', 'up-builtin.json'), r.stdout)
    await writeFile(join(ROOT, 'test-output', 'up-builtin.stderr.log'), r.stderr)
    expect(r.code, r.stderr.slice(-4000)).toBe(0)
    const s = JSON.parse(r.stdout) as UpSummary
    expect(s.ok).toBe(true)
    expect(s.verifier.kind).toContain('UltraHonk')
    expect(s.verifier.kind).not.toContain('Mock')
    // The oracle's verifier (the adapter) calls a HonkVerifier whose code is the generated one.
    const client = createPublicClient({ transport: http(l1.rpcUrl) })
    const code = await client.getCode({ address: s.verifier.honkVerifier })
    expect(code).toBeDefined()
    expect(keccak256(code as Hex)).toBe(s.verifier.generatedCodeHash)
    expect(s.verifier.codeHashMatches).toBe(true)
    expect(s.proposals.length).toBeGreaterThanOrEqual(2)
    let next = s.anchor.l2Block + 1
    for (const p of s.proposals) {
      expect(p.l2BlockFirst).toBe(next)
      next = p.l2Block + 1
      expect(p.verifier).toBe('UltraHonk')
      expect(p.proofBytes).toBeGreaterThan(5_000)
      // The oracle's proposal transaction ran the verifier: far above a mock's gas.
      expect(p.gasUsed).toBeGreaterThan(300_000)
    }
    const logs = await client.getLogs({
      address: s.oracle,
      event: parseAbiItem('event OutputProposed(bytes32 indexed outputRoot, uint256 indexed l2OutputIndex, uint256 indexed l2BlockNumber, uint256 l1Timestamp)'),
      fromBlock: 0n,
    })
    expect(logs.map((l) => [l.args.outputRoot, Number(l.args.l2BlockNumber)])).toEqual(s.proposals.map((p) => [p.outputRoot, p.l2Block]))
    const l2client = createPublicClient({ transport: http(l2.rpcUrl) })
    for (const p of s.proposals) expect((await outputRootAt(l2client, BigInt(p.l2Block))).outputRoot).toBe(p.outputRoot)
  })
})
