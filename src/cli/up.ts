import { rm, mkdir } from 'node:fs/promises'
import { resolve } from 'node:path'
import { createPublicClient, createWalletClient, http, keccak256, stringToHex, type Address, type Hex } from 'viem'
import { privateKeyToAccount } from 'viem/accounts'
import { startAnvil, DEV_L1_CHAIN_ID, DEV_L2_CHAIN_ID, isDevChain, type AnvilInstance } from '../chain/anvil.js'
import { deployMockVerifier, deployOracle, deployUltraHonkVerifier } from '../chain/deploy.js'
import { outputOracleAbi, ultraHonkAdapterAbi } from '../contracts/abis.js'
import type { BuiltinSetup } from '../backends/builtin/backend.js'
import { sharedBuiltinBackend } from '../backends/builtin/shared.js'
import { checkCrsForChain } from '../backends/crs/resolve.js'
import type { ProverConfig } from '../config/schema.js'
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
  /** Use the mock backend (dev chains only) instead of real UltraHonk proofs. */
  mock?: boolean
  blocksPerRange?: string
}

const MOCK_NOTE = 'mock backend (--mock): proofs are sha256 commitments (dev only) — they show the prover saw the right inputs, nothing about their validity'
const BUILTIN_NOTE =
  'built-in backend: Noir range + aggregate circuits proven with UltraHonk (bb) over a development CRS (dev chains only); each aggregate proof is verified on L1 by the generated UltraHonk verifier behind the UltraHonkAdapter (docs/proving.md)'

/** Defaults of `up` with real proofs (docs/proving.md, "Proving budget"). */
export const UP_BUILTIN_DEFAULTS = { blocksPerRange: 2, aggregateK: 2, blockTimeMs: 4000 } as const

/**
 * `proofline up`: the whole system in one process on embedded defaults — dev L1 and L2
 * chains (anvil from npm), the L2 message passer and a transaction load, the output oracle on
 * L1 with the generated UltraHonk verifier behind its adapter (or a mock verifier with
 * `--mock`), the watcher, range and aggregate stages proving with the built-in backend, and
 * the proposer.
 */
export async function upCommand(opts: UpOptions): Promise<number> {
  const started = Date.now()
  const exitAfter = opts.exitAfterProposals === undefined ? undefined : Number(opts.exitAfterProposals)
  if (exitAfter !== undefined && (!Number.isSafeInteger(exitAfter) || exitAfter <= 0)) throw new ConfigError(`--exit-after-proposals must be a positive integer (got ${opts.exitAfterProposals})`)
  const proposeEveryMs = Number(opts.proposeEveryMs ?? 3000)
  const apiPort = Number(opts.apiPort ?? 0)
  if (!Number.isSafeInteger(apiPort) || apiPort < 0 || apiPort > 65535) throw new ConfigError(`--api-port must be a port number (got ${opts.apiPort})`)
  const mock = opts.mock === true
  const blockTimeMs = Number(opts.blockTimeMs ?? (mock ? 1000 : UP_BUILTIN_DEFAULTS.blockTimeMs))
  const blocksPerRange = Number(opts.blocksPerRange ?? (mock ? 4 : UP_BUILTIN_DEFAULTS.blocksPerRange))
  if (!Number.isSafeInteger(blocksPerRange) || blocksPerRange < 1 || blocksPerRange > 64) throw new ConfigError(`--blocks-per-range must be an integer in 1..64 (got ${opts.blocksPerRange})`)
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
    if (!isDevChain(l1ChainId) || !isDevChain(l2ChainId)) {
      throw new ConfigError(
        `proofline up is for dev chains: it ${mock ? 'deploys a mock verifier' : 'proves over a development CRS, which whoever generated it can forge proofs with'}; chain ids ${l1ChainId} (L1) / ${l2ChainId} (L2) are not both dev chains`,
      )
    }
    say(`proofline up — L1 ${l1Url} (chain ${l1ChainId}), L2 ${l2Url} (chain ${l2ChainId})`)
    say(`  ${mock ? MOCK_NOTE : BUILTIN_NOTE}`)
    const chainConfigHash = keccak256(stringToHex(`proofline-dev-l2:${l2ChainId}`))
    const prover: ProverConfig = {
      blocksPerRange,
      aggregateK: UP_BUILTIN_DEFAULTS.aggregateK,
      chainConfigHash,
      crs: { kind: 'dev', points: 2 ** 21 + 1 },
    }
    // Real proofs: CRS (generated once, cached), circuits, keys and the verifier (cached).
    let builtin: BuiltinSetup | undefined
    if (!mock) {
      const t = Date.now()
      say('  setting up the built-in backend (first run: CRS generation and compilation take minutes; later runs read the cache)…')
      const backend = await sharedBuiltinBackend(prover, { onProgress: (m) => say(`    ${m}`) })
      builtin = await backend.ready()
      checkCrsForChain(builtin.crs, l1ChainId, 'L1')
      checkCrsForChain(builtin.crs, l2ChainId, 'L2')
      say(
        `  backend ready in ${((Date.now() - t) / 1000).toFixed(1)} s: range 2^${builtin.range.log2Size} (${builtin.range.gates} gates, ${blocksPerRange} blocks), aggregate 2^${builtin.aggregate.log2Size} (${builtin.aggregate.gates} gates, K=${builtin.aggregate.capacity}), CRS ${builtin.crs.kind} ${builtin.crs.g1Sha256.slice(0, 12)}…`,
      )
    }

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

    // L1: verifier + output oracle, proposer = dev account 0.
    const account = privateKeyToAccount(ANVIL_DEV_KEYS[0] as Hex)
    const wallet = createWalletClient({ account, transport: http(l1Url) })
    let verifier: { address: Address }
    let honk: { address: Address } | undefined
    let programId: Hex
    if (builtin) {
      programId = builtin.programId
      const d = await deployUltraHonkVerifier(wallet, l1, { honkBytecode: builtin.verifier.bytecode, programId })
      verifier = d.adapter
      honk = d.honk
    } else {
      programId = keccak256(stringToHex('mock-v1'))
      verifier = await deployMockVerifier(wallet, l1)
    }
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
    say(`  oracle ${oracle.address} (anchor L2 #${anchorBlock}), verifier ${builtin ? `UltraHonkAdapter ${verifier.address} → HonkVerifier ${honk?.address}` : `MockVerifier ${verifier.address}`}`)

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
${mock ? mockStages(blockTimeMs, blocksPerRange) : builtinStages(blockTimeMs, prover)}
proposer: { l1RpcUrls: [${JSON.stringify(l1Url)}], oracle: "${oracle.address}", intervalMs: ${proposeEveryMs}, confirmations: 1, proof: ${mock ? 'mock' : 'builtin'} }
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
    running = await startProposer(config, { state: wired.ctx.state, database: wired.database, log, env: { PROPOSER_PRIVATE_KEY: ANVIL_DEV_KEYS[0] }, artifacts: wired.ctx.artifacts })
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
    // What the oracle actually calls, read back from L1.
    const oracleVerifier = (await l1.readContract({ address: oracle.address, abi: outputOracleAbi, functionName: 'VERIFIER' })) as Address
    let verifierSummary: Record<string, unknown>
    if (builtin && honk) {
      const behind = (await l1.readContract({ address: oracleVerifier, abi: ultraHonkAdapterAbi, functionName: 'HONK_VERIFIER' })) as Address
      const code = await l1.getCode({ address: behind })
      const onChainCodeHash = code === undefined ? null : keccak256(code)
      verifierSummary = {
        kind: 'UltraHonk (generated by bb for the aggregate program, G2 of the development CRS) behind UltraHonkAdapter',
        address: oracleVerifier,
        honkVerifier: behind,
        codeHash: onChainCodeHash,
        generatedCodeHash: builtin.verifier.codeHash,
        codeHashMatches: onChainCodeHash === builtin.verifier.codeHash,
        programId: builtin.programId,
        crs: { kind: builtin.crs.kind, sha256: builtin.crs.g1Sha256, points: builtin.crs.points },
        circuits: {
          range: { gates: builtin.range.gates, log2Size: builtin.range.log2Size, blocks: builtin.range.capacity, vkHash: builtin.range.vkHash },
          aggregate: { gates: builtin.aggregate.gates, log2Size: builtin.aggregate.log2Size, k: builtin.aggregate.capacity, vkHash: builtin.aggregate.vkHash },
        },
      }
    } else {
      verifierSummary = { kind: 'MockVerifier (dev chains only)', address: oracleVerifier }
    }
    const summary = {
      ok: (exitAfter === undefined || proposals.length >= exitAfter) && (builtin === undefined || verifierSummary.codeHashMatches === true),
      backend: mock ? MOCK_NOTE : BUILTIN_NOTE,
      l1: { rpcUrl: l1Url, chainId: l1ChainId },
      l2: { rpcUrl: l2Url, chainId: l2ChainId },
      oracle: oracle.address as Address,
      verifier: verifierSummary,
      anchor: { l2Block: Number(anchorBlock), outputRoot: anchor.outputRoot },
      proposals: proposals.map((p) => ({
        l2BlockFirst: Number(p.first),
        l2Block: Number(p.l2Block),
        outputRoot: p.outputRoot,
        txHash: p.txHash,
        l1Block: Number(p.l1Block),
        gasUsed: Number(p.gasUsed),
        verifier: p.verifier,
        proofBytes: p.proofBytes,
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

function mockStages(blockTimeMs: number, blocksPerRange: number): string {
  const timeout = Math.max(2000, blockTimeMs * 3)
  return `  - name: range
    input: blocks
    collector: { strategy: sequential, maxCount: ${blocksPerRange}, timeoutMs: ${timeout} }
    executor: { type: mock, latencyMs: { min: 100, max: 300 } }
  - name: aggregate
    input: proofs.range
    collector: { strategy: sequential, maxCount: 2, timeoutMs: ${timeout} }
    executor: { type: mock, latencyMs: { min: 100, max: 300 } }`
}

/**
 * Real proofs: a range job closes at `blocksPerRange` blocks, an aggregate job at K ranges (or
 * on its timeout with fewer: the circuit pads the tail, see docs/proving.md). One proof at a
 * time per stage: two bb processes already fill 2 cores.
 */
function builtinStages(blockTimeMs: number, prover: ProverConfig): string {
  const rangeTimeout = Math.max(5000, blockTimeMs * (prover.blocksPerRange + 1))
  return `  - name: range
    input: blocks
    programId: builtin-range
    verify: builtin
    collector: { strategy: sequential, maxCount: ${prover.blocksPerRange}, timeoutMs: ${rangeTimeout} }
    executor: { type: builtin, program: range }
    dispatch: { concurrency: 1, ackWaitMs: 120000 }
    leaseMs: 900000
  - name: aggregate
    input: proofs.range
    programId: builtin-aggregate
    verify: builtin
    collector: { strategy: sequential, maxCount: ${prover.aggregateK}, timeoutMs: 600000 }
    executor: { type: builtin, program: aggregate }
    dispatch: { concurrency: 1, ackWaitMs: 120000 }
    leaseMs: 900000
prover:
  blocksPerRange: ${prover.blocksPerRange}
  aggregateK: ${prover.aggregateK}
  chainConfigHash: "${prover.chainConfigHash}"
  crs: { kind: ${prover.crs.kind}, points: ${prover.crs.points} }`
}
