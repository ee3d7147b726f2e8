import { spawn } from 'node:child_process'
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createPublicClient, createWalletClient, http, keccak256, stringToHex, type Hex } from 'viem'
import { privateKeyToAccount } from 'viem/accounts'
import { afterAll, describe, expect, it } from 'vitest'
import { startAnvil, type AnvilInstance } from '../../src/chain/anvil.js'
import { deployMockVerifier, deployOracle } from '../../src/chain/deploy.js'
import { ANVIL_DEV_KEYS, installMessagePasser, startLoad } from '../../src/chain/load.js'
import { outputRootAt } from '../../src/chain/output-root.js'
import { outputOracleAbi } from '../../src/contracts/abis.js'
import { BIN, runCli } from '../support/cli.js'

const cleanups: (() => Promise<unknown>)[] = []
afterAll(async () => {
  for (const c of cleanups.reverse()) await c()
})
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

async function chainsWithOracle(l1ChainId: number): Promise<{ l1: AnvilInstance; l2: AnvilInstance; oracle: Hex; dir: string }> {
  const l1 = await startAnvil({ chainId: l1ChainId })
  const l2 = await startAnvil({ chainId: 901 })
  cleanups.push(() => l1.stop(), () => l2.stop())
  const dir = await mkdtemp(join(tmpdir(), 'pl-runprop-'))
  await chmod(dir, 0o755)
  cleanups.push(() => rm(dir, { recursive: true, force: true }))
  const l2c = createPublicClient({ transport: http(l2.rpcUrl), cacheTime: 0 })
  await installMessagePasser(l2c)
  const abort = new AbortController()
  const load = await startLoad({ rpcUrl: l2.rpcUrl, privateKeys: ANVIL_DEV_KEYS.slice(1, 3), txPerBlock: 3, blockIntervalMs: 300, seed: 4, signal: abort.signal })
  cleanups.push(async () => {
    abort.abort()
    await load.done
  })
  while ((await l2c.getBlockNumber()) < 1n) await sleep(100)
  const anchor = await outputRootAt(l2c, 1n)
  const l1c = createPublicClient({ transport: http(l1.rpcUrl) })
  const wallet = createWalletClient({ account: privateKeyToAccount(ANVIL_DEV_KEYS[0] as Hex), transport: http(l1.rpcUrl) })
  if (l1ChainId !== 900) return { l1, l2, oracle: '0x0000000000000000000000000000000000000001', dir }
  const verifier = await deployMockVerifier(wallet, l1c)
  const oracle = await deployOracle(wallet, l1c, {
    anchorRoot: anchor.outputRoot, anchorBlock: 1n, intervalBlocks: 1n, verifier: verifier.address,
    programId: keccak256(stringToHex('mock-v1')), chainConfigHash: keccak256(stringToHex('test')), proposer: wallet.account.address,
  })
  return { l1, l2, oracle: oracle.address, dir }
}

function pipeline(l1Url: string, l2Url: string, oracle: string, dir: string): string {
  return `
version: 1
dataDir: ${dir}/data
source: { type: l2, rpcUrl: "${l2Url}", startBlock: 2, safety: { kind: latest, confirmations: 1 }, pollIntervalMs: 200 }
stages:
  - { name: range, input: blocks, collector: { strategy: sequential, maxCount: 3, timeoutMs: 1000 }, executor: { type: mock } }
  - { name: aggregate, input: proofs.range, collector: { strategy: sequential, maxCount: 2, timeoutMs: 1000 }, executor: { type: mock } }
proposer: { l1RpcUrls: ["http://127.0.0.1:1", "${l1Url}"], oracle: "${oracle}", intervalMs: 1000, confirmations: 1 }
log: { level: warn }
`
}

describe('proofline run with a proposer', () => {
  it('behavior: the orchestrator proposes contiguous outputs through the tx manager, failing over from a dead L1 RPC', { timeout: 180_000 }, async () => {
    const { l1, l2, oracle, dir } = await chainsWithOracle(900)
    const file = join(dir, 'pipeline.yaml')
    await writeFile(file, pipeline(l1.rpcUrl, l2.rpcUrl, oracle, dir))
    const child = spawn(process.execPath, [BIN, 'run', '--config', file], { env: { ...process.env, PROPOSER_PRIVATE_KEY: ANVIL_DEV_KEYS[0] }, stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    child.stdout.on('data', (d: Buffer) => (out += d.toString()))
    child.stderr.on('data', (d: Buffer) => (err += d.toString()))
    const exited = new Promise<number | null>((r) => child.on('close', (c) => r(c)))
    const l1c = createPublicClient({ transport: http(l1.rpcUrl), cacheTime: 0 })
    let index = 0n
    for (let i = 0; i < 600 && index < 3n; i++) {
      await sleep(100)
      index = await l1c.readContract({ address: oracle, abi: outputOracleAbi, functionName: 'latestOutputIndex' })
    }
    child.kill('SIGTERM')
    expect(await exited, err.slice(-3000)).toBe(0)
    // Index 0 is the anchor; the proposal in flight at SIGTERM may not be recorded yet.
    expect(index).toBeGreaterThanOrEqual(3n)
    const summary = JSON.parse(out) as { proposals: number; continuity: object }
    expect(summary.proposals).toBeGreaterThanOrEqual(2)
    expect(summary.continuity).toEqual({ gaps: 0, overlaps: 0, duplicates: 0 })
  })

  it('behavior: a mock proof is refused up front when L1 is not a dev chain', { timeout: 120_000 }, async () => {
    const { l1, l2, oracle, dir } = await chainsWithOracle(5)
    const file = join(dir, 'pipeline.yaml')
    await writeFile(file, pipeline(l1.rpcUrl, l2.rpcUrl, oracle, dir))
    const r = await runCli(['run', '--config', file], { env: { PROPOSER_PRIVATE_KEY: ANVIL_DEV_KEYS[0] as string } })
    expect(r.code).toBe(3)
    expect(r.stderr).toContain('proposer.proof "mock" is for dev chains only; L1 chain id 5')
  })
})
