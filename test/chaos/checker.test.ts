import { createPublicClient, createWalletClient, http, keccak256, stringToHex, type Hex } from 'viem'
import { privateKeyToAccount } from 'viem/accounts'
import { afterAll, describe, expect, it } from 'vitest'
import { startAnvil } from '../../src/chain/anvil.js'
import { deployMockVerifier, deployOracle } from '../../src/chain/deploy.js'
import { ANVIL_DEV_KEYS, installMessagePasser } from '../../src/chain/load.js'
import { outputOracleAbi } from '../../src/contracts/abis.js'
import { analyzeCoverage, canonicalOutputRoot, checkChains, type ProposalRange } from './checker.js'

const root = (n: number): Hex => keccak256(stringToHex(`root-${n}`))
const tile = (cuts: number[]): ProposalRange[] =>
  cuts.slice(1).map((last, i) => ({ index: i + 1, first: (cuts[i] as number) + 1, last, outputRoot: root(last) }))

describe('the chaos checker', () => {
  it('behavior: contiguous proposals covering the target report nothing', () => {
    const r = analyzeCoverage({ start: 2, target: 100, proposals: tile([1, 10, 50, 100, 120]) })
    expect(r).toMatchObject({ lost: 0, gaps: 0, duplicates: 0, discontinuities: 0, coveredTo: 120 })
    expect(r.findings).toEqual([])
  })

  it('behavior: an injected gap is reported as a gap, a discontinuity and lost blocks', () => {
    // Output 2 (blocks 11-50) is missing: 40 blocks are in no proposal.
    const proposals = tile([1, 10, 50, 100]).filter((p) => p.index !== 2)
    const r = analyzeCoverage({ start: 2, target: 100, proposals })
    expect(r).toMatchObject({ lost: 40, gaps: 1, duplicates: 0, discontinuities: 1 })
    expect(r.findings.join('\n')).toContain('blocks 11-50 are in no proposal')
  })

  it('behavior: an injected overlap is reported as duplicates and a discontinuity', () => {
    // Output 3 claims 41-100 although output 2 already covered 11-50: blocks 41-50 twice.
    const proposals = tile([1, 10, 50, 100]).map((p) => (p.index === 3 ? { ...p, first: 41 } : p))
    const r = analyzeCoverage({ start: 2, target: 100, proposals })
    expect(r).toMatchObject({ lost: 0, gaps: 0, duplicates: 10, discontinuities: 1 })
    expect(r.findings.join('\n')).toContain('blocks 41-50 are in more than one proposal')
  })

  it('behavior: a repeated event and an unproposed tail are reported', () => {
    const base = tile([1, 10, 50])
    const r = analyzeCoverage({ start: 2, target: 80, proposals: [...base, base[1] as ProposalRange] })
    expect(r.duplicates).toBe(40)
    expect(r.lost).toBe(30)
    expect(r.coveredTo).toBe(50)
  })
})

const cleanups: (() => Promise<void>)[] = []
afterAll(async () => {
  for (const c of cleanups.reverse()) await c()
})

describe('the chaos checker on chains', () => {
  it('behavior: a proposal whose L2 block was reorged out is reported as orphaned; canonical ones are not', { timeout: 120_000 }, async () => {
    const l1 = await startAnvil({ chainId: 900 })
    const l2 = await startAnvil({ chainId: 901 })
    cleanups.push(() => l1.stop(), () => l2.stop())
    const l2c = createPublicClient({ transport: http(l2.rpcUrl), cacheTime: 0 })
    const l1c = createPublicClient({ transport: http(l1.rpcUrl), cacheTime: 0 })
    await installMessagePasser(l2c)
    await l2c.request({ method: 'anvil_mine' as never, params: ['0xc'] as never })
    const wallet = createWalletClient({ account: privateKeyToAccount(ANVIL_DEV_KEYS[0] as Hex), transport: http(l1.rpcUrl) })
    const verifier = await deployMockVerifier(wallet, l1c)
    const anchor = await canonicalOutputRoot(l2c, 1)
    const oracle = await deployOracle(wallet, l1c, {
      anchorRoot: anchor.outputRoot, anchorBlock: 1n, intervalBlocks: 1n, verifier: verifier.address,
      programId: keccak256(stringToHex('mock-v1')), chainConfigHash: keccak256(stringToHex('checker')), proposer: wallet.account.address,
    })
    for (const n of [5, 10]) {
      const { outputRoot } = await canonicalOutputRoot(l2c, n)
      const hash = await wallet.writeContract({ chain: null, address: oracle.address, abi: outputOracleAbi, functionName: 'proposeL2Output', args: [outputRoot, BigInt(n), '0x'] })
      await l1c.waitForTransactionReceipt({ hash })
    }
    const args = { l1RpcUrl: l1.rpcUrl, l2RpcUrl: l2.rpcUrl, oracle: oracle.address, start: 2, target: 10 }
    expect(await checkChains({ ...args, orphaned: [] })).toMatchObject({ proposals: 2, lost: 0, gaps: 0, duplicates: 0, nonCanonicalProposals: 0, orphanedInProposals: 0, proposedTo: 10 })

    // Replace blocks 9..head: block 10's proposal now commits to an orphaned block.
    const head = Number(await l2c.getBlockNumber())
    const orphaned = []
    for (let n = 9; n <= head; n++) orphaned.push({ number: n, hash: (await l2c.getBlock({ blockNumber: BigInt(n) })).hash })
    await l2c.request({ method: 'anvil_reorg' as never, params: [head - 8, [[{ from: '0x70997970C51812dc3A010C7d01b50e0d17dc79C8', to: '0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC', value: '0x5' }, 0]]] as never })
    const after = await checkChains({ ...args, orphaned })
    expect(after).toMatchObject({ proposals: 2, lost: 0, nonCanonicalProposals: 1, orphanedInProposals: 2, orphanedConfirmed: head - 8 })
    expect(after.findings.join('\n')).toContain('output 2 (6-10)')
  })
})
