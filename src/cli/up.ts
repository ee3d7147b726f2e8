import { rm, mkdir } from 'node:fs/promises'
import { resolve } from 'node:path'
import { createPublicClient, createWalletClient, http, keccak256, stringToHex, type Address, type Hex } from 'viem'
import { privateKeyToAccount } from 'viem/accounts'
import { startAnvil, DEV_L1_CHAIN_ID, DEV_L2_CHAIN_ID, isDevChain, type AnvilInstance } from '../chain/anvil.js'
import { deployMockVerifier, deployOracle } from '../chain/deploy.js'
import { ANVIL_DEV_KEYS, installMessagePasser, startLoad, type LoadGenerator } from '../chain/load.js'
import { outputRootAt } from '../chain/output-root.js'
import { parseConfig } from '../config/load.js'
import { ConfigError, errorMessage } from '../core/errors.js'
import type { Executor } from '../executors/types.js'
import { startOrchestrator, type Orchestrator } from '../pipeline/orchestrator.js'
import { startProposer, type RunningProposer } from '../proposer/start.js'
import { createExecutor, createLogger, instanceId, randomToken, wireOrchestrator, type Wired } from '../wiring.js'
import { startOperatorApi } from '../api/start.js'
import { apiFilePath } from './api-file.js'
import { bar, progressLine } from './progress.js'

export interface UpOptions {
  exitAfterProposals?: string
  l1Rpc?: string
  l2Rpc?: string
  dataDir?: string
  proposeEveryMs?: string
  blockTimeMs?: string
  apiPort?: string
}

const MOCK_NOTE = 'mock backend: proofs are sha256 commitments (dev only) — they show the prover saw the right inputs, nothing about their validity; the built-in UltraHonk backend is not wired in yet'

/**
 * `proofline up`: the whole system in one process on embedded defaults — dev L1 and L2
 * chains (anvil from npm), the L2 message passer and a transaction load, the output oracle
 * with a mock verifier on L1, the watcher, range and aggregate stages, and the proposer.
 */
export async function upCommand(opts: UpOptions): Promise<number> {
  const started = Date.now()
  const exitAfter = opts.exitAfterProposals === undefined ? undefined : Number(opts.exitAfterProposals)
  if (exitAfter !== undefined && (!Number.isSafeInteger(exitAfter) || exitAfter <= 0)) throw new ConfigError(`--exit-after-proposals must be a positive integer (got ${opts.exitAfterProposals})`)
  const proposeEveryMs = Number(opts.proposeEveryMs ?? 3000)
  const blockTimeMs = Number(opts.blockTimeMs ?? 1000)
  const apiPort = Number(opts.apiPort ?? 0)
  if (!Number.isSafeInteger(apiPort) || apiPort < 0 || apiPort > 65535) throw new ConfigError(`--api-port must be a port number (got ${opts.apiPort})`)
  const dataDir = resolve(opts.dataDir ?? '.proofline/up')
  const log = createLogger('warn')
  const say = (line: string): void => void process.stderr.write(`${line}\n`)
  const stops: (() => Promise<void>)[] = []
  const stopAll = async (): Promise<void> => {
    for (const s of stops.splice(0).reverse()) {
      try {
        await s()
      } catch (err) {
        log.warn({ err: errorMessage(err) }, 'shutdown step failed')
      }
    }
  }
  try {
    // Chains: ours (anvil from npm) unless given.
    let l1Url = opts.l1Rpc
    let l2Url = opts.l2Rpc
    if (!l1Url) {
      const l1: AnvilInstance = await startAnvil({ chainId: DEV_L1_CHAIN_ID })
      stops.push(() => l1.stop())
      l1Url = l1.rpcUrl
    }
    if (!l2Url) {
      const l2: AnvilInstance = await startAnvil({ chainId: DEV_L2_CHAIN_ID })
      stops.push(() => l2.stop())
      l2Url = l2.rpcUrl
    }
    // cacheTime 0: the progress line must show the head now, not a cached one.
    const l1 = createPublicClient({ transport: http(l1Url), cacheTime: 0 })
    const l2 = createPublicClient({ transport: http(l2Url), cacheTime: 0 })
    const l1ChainId = await l1.getChainId()
    const l2ChainId = await l2.getChainId()
    if (!isDevChain(l1ChainId)) throw new ConfigError(`proofline up deploys a mock verifier, which only dev chains accept; L1 chain id ${l1ChainId} is not one`)
    say(`proofline up — L1 ${l1Url} (chain ${l1ChainId}), L2 ${l2Url} (chain ${l2ChainId})`)
    say(`  ${MOCK_NOTE}`)

    // L2: the OP message passer and a transaction load (transfers, contract calls, withdrawals).
    await installMessagePasser(l2)
    const loadAbort = new AbortController()
    const load: LoadGenerator = await startLoad({ rpcUrl: l2Url, privateKeys: ANVIL_DEV_KEYS.slice(1, 4), txPerBlock: 4, blockIntervalMs: blockTimeMs, seed: 1, signal: loadAbort.signal })
    stops.push(async () => {
      loadAbort.abort()
      await load.done
    })
    // Anchor at a mined block (anvil's genesis reports an empty state root).
    let anchorBlock = await l2.getBlockNumber()
    while (anchorBlock < 1n) {
      await new Promise((r) => setTimeout(r, 200))
      anchorBlock = await l2.getBlockNumber()
    }
    const anchor = await outputRootAt(l2, anchorBlock)

    // L1: mock verifier + output oracle, proposer = dev account 0.
    const account = privateKeyToAccount(ANVIL_DEV_KEYS[0] as Hex)
    const wallet = createWalletClient({ account, transport: http(l1Url) })
    const verifier = await deployMockVerifier(wallet, l1)
    const programId = keccak256(stringToHex('mock-v1'))
    const chainConfigHash = keccak256(stringToHex(`proofline-dev-l2:${l2ChainId}`))
    const oracle = await deployOracle(wallet, l1, {
      anchorRoot: anchor.outputRoot,
      anchorBlock,
      intervalBlocks: 1n,
      l2BlockTimeSec: BigInt(Math.max(1, Math.round(blockTimeMs / 1000))),
      verifier: verifier.address,
      programId,
      chainConfigHash,
      proposer: account.address,
    })
    say(`  oracle ${oracle.address} (anchor L2 #${anchorBlock}), verifier MockVerifier ${verifier.address}`)

    // The pipeline, on embedded defaults, fresh for these fresh chains.
    await rm(dataDir, { recursive: true, force: true })
    await mkdir(dataDir, { recursive: true })
    const config = parseConfig(
      `
version: 1
name: up
dataDir: ${JSON.stringify(dataDir)}
source: { type: l2, rpcUrl: ${JSON.stringify(l2Url)}, startBlock: ${Number(anchorBlock) + 1}, safety: { kind: latest, confirmations: 1 }, pollIntervalMs: 250 }
stages:
  - name: range
    input: blocks
    collector: { strategy: sequential, maxCount: 4, timeoutMs: ${Math.max(2000, blockTimeMs * 3)} }
    executor: { type: mock, latencyMs: { min: 100, max: 300 } }
  - name: aggregate
    input: proofs.range
    collector: { strategy: sequential, maxCount: 2, timeoutMs: ${Math.max(2000, blockTimeMs * 3)} }
    executor: { type: mock, latencyMs: { min: 100, max: 300 } }
proposer: { l1RpcUrls: [${JSON.stringify(l1Url)}], oracle: "${oracle.address}", intervalMs: ${proposeEveryMs}, confirmations: 1, proof: mock }
api: { enabled: true, port: ${apiPort} }
log: { level: warn }
`,
      resolve(dataDir, 'up.yaml'),
    )
    const wired: Wired = await wireOrchestrator(config, log)
    stops.push(() => wired.close())
    const executors = new Map<string, Executor>(config.stages.map((s) => [s.name, createExecutor(config, s)]))

    // API, metrics and the dashboard, before the pipeline starts so they see every write.
    let orchestrator: Orchestrator | undefined
    let running: RunningProposer | undefined
    const api = await startOperatorApi({ config, ctx: wired.ctx, orchestrator: () => orchestrator, proposer: () => running, token: randomToken(), log })
    stops.push(() => api.close())
    say(`  dashboard ${api.server.dashboardUrl} (API ${api.server.url}, metrics ${api.server.url}/metrics; admin token in ${apiFilePath(config)})`)

    const o: Orchestrator = await startOrchestrator(wired.ctx, { executors, workerId: instanceId(), observer: api.observer })
    orchestrator = o
    stops.push(async () => {
      await o.stop()
    })

    // The proposer signs with dev account 0 (a public anvil key: dev chains only).
    running = await startProposer(config, { state: wired.ctx.state, database: wired.database, log, env: { PROPOSER_PRIVATE_KEY: ANVIL_DEV_KEYS[0] } })
    if (!running) throw new Error('up: the proposer section is missing')
    const rp = running
    stops.push(() => rp.stop())
    const proposer = rp.service

    // Live progress until enough proposals are confirmed (or Ctrl-C).
    const interrupted = new Promise<void>((r) => {
      process.once('SIGINT', () => r())
      process.once('SIGTERM', () => r())
    })
    let done = false
    void interrupted.then(() => (done = true))
    // On a terminal one line redrawn twice a second; otherwise a line every 2 s.
    const progress = progressLine()
    const firstBlock = Number(anchorBlock) + 1
    while (!done) {
      const proposals = await proposer.list()
      const s = await o.summary()
      const head = Number(await l2.getBlockNumber())
      const proposed = proposals.length > 0 ? Math.max(...proposals.map((p) => Number(p.l2Block))) : Number(anchorBlock)
      const share = head >= firstBlock ? (proposed - firstBlock + 1) / (head - firstBlock + 1) : 0
      const target = exitAfter !== undefined ? ` of ${exitAfter}` : ''
      progress.update(
        `  ${bar(share)} L2 head ${head} | seen ${s.blocks.lastSeen ?? '-'} | proven ${s.stages[0]?.lastCovered ?? '-'} | aggregated ${s.stages[1]?.lastCovered ?? '-'} | proposed ${proposed} (${proposals.length}${target} proposals) | lag ${head - proposed} blocks`,
      )
      if (exitAfter !== undefined && proposals.length >= exitAfter) break
      await Promise.race([new Promise((r) => setTimeout(r, progress.live ? 500 : 2000)), interrupted])
    }
    progress.done()
    // Stop proposing first, letting a proposal already sent confirm, so the summary lists
    // every proposal that went to L1.
    await rp.stop({ graceMs: 60_000 })
    const proposals = await proposer.list()
    const summary = {
      ok: exitAfter === undefined || proposals.length >= exitAfter,
      backend: MOCK_NOTE,
      l1: { rpcUrl: l1Url, chainId: l1ChainId },
      l2: { rpcUrl: l2Url, chainId: l2ChainId },
      oracle: oracle.address as Address,
      verifier: { kind: 'MockVerifier (dev chains only)', address: verifier.address as Address },
      anchor: { l2Block: Number(anchorBlock), outputRoot: anchor.outputRoot },
      proposals: proposals.map((p) => ({
        l2BlockFirst: Number(p.first),
        l2Block: Number(p.l2Block),
        outputRoot: p.outputRoot,
        txHash: p.txHash,
        l1Block: Number(p.l1Block),
        gasUsed: Number(p.gasUsed),
        verifier: p.verifier,
        jobId: p.jobId,
      })),
      durationMs: Date.now() - started,
    }
    await stopAll()
    process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`)
    return summary.ok ? 0 : 1
  } catch (err) {
    await stopAll()
    throw err
  }
}
