import { createPublicClient, fallback, http, parseGwei, type Address, type Hex } from 'viem'
import type { Logger } from 'pino'
import { isDevChain } from '../chain/anvil.js'
import type { ResolvedConfig } from '../config/load.js'
import { ConfigError } from '../core/errors.js'
import type { StateStore, StoredJob } from '../state/types.js'
import type { ArtifactStore } from '../artifacts/types.js'
import { checkCrsForChain } from '../backends/crs/resolve.js'
import type { SqlDatabase } from '../state/sql/database.js'
import { oracleClient } from './oracle-client.js'
import { proposerService, type ProposerService } from './proposer.js'
import { sqlProposalStore, type ProposalStore } from './proposals.js'
import { loadSigner } from './signer.js'
import { sqlTxJournal } from './sql-journal.js'
import { txManager } from './tx-manager.js'

/** A started proposer and what it runs on. */
export interface RunningProposer {
  service: ProposerService
  oracle: Address
  l1ChainId: number
  /** The proposer's L1 account. */
  address: Address
  /** Where its proposals, in-flight intents and refusals are recorded. */
  proposals: ProposalStore
  /** The account's L1 balance in wei (read now). */
  balance(): Promise<bigint>
  /** Stops the service (see `ProposerService.stop` for `graceMs`) and the tx manager. */
  stop(opts?: { graceMs?: number }): Promise<void>
}

/**
 * Builds the proposer from the `proposer` section: signer (PROPOSER_PRIVATE_KEY or an
 * encrypted keystore), a tx manager failing over between the L1 RPC URLs, journal and
 * proposals in the state database, and the service. A mock proof is refused unless L1 is a
 * dev chain (the oracle would refuse the mock verifier anyway; this says so up front).
 */
export async function startProposer(
  config: ResolvedConfig,
  deps: { state: StateStore; database: SqlDatabase; log: Logger; env?: Record<string, string | undefined>; artifacts?: ArtifactStore },
): Promise<RunningProposer | undefined> {
  const p = config.proposer
  if (!p) return undefined
  const l2Url = p.l2RpcUrl ?? (config.source.type === 'l2' ? config.source.rpcUrl : undefined)
  if (!l2Url) throw new ConfigError(`${config.file}: proposer.l2RpcUrl is needed to re-derive output roots`)
  const l1 = createPublicClient({ transport: fallback(p.l1RpcUrls.map((u) => http(u))), cacheTime: 0 })
  const l2 = createPublicClient({ transport: http(l2Url), cacheTime: 0 })
  const l1ChainId = await l1.getChainId()
  if (p.proof === 'mock' && !isDevChain(l1ChainId)) {
    throw new ConfigError(`${config.file}: proposer.proof "mock" is for dev chains only; L1 chain id ${l1ChainId} is not one`)
  }
  let proofFor: (job: StoredJob) => Promise<Hex> = () => Promise.resolve('0x' as Hex)
  if (p.proof === 'builtin') {
    if (config.prover === undefined) throw new ConfigError(`${config.file}: proposer.proof "builtin" needs the prover section`)
    // Whoever generated a development CRS can forge proofs: never on a chain that is not a dev chain.
    checkCrsForChain({ kind: config.prover.crs.kind, g1Sha256: config.prover.crs.sha256 ?? 'unpinned' }, l1ChainId)
    const artifacts = deps.artifacts
    if (artifacts === undefined) throw new ConfigError(`${config.file}: proposer.proof "builtin" reads proofs from the artifact store, which was not given`)
    proofFor = async (job) => {
      const ref = job.result?.proof
      if (ref === undefined) throw new ConfigError(`job ${job.id} has no proof artifact to propose with`)
      const doc = JSON.parse(new TextDecoder().decode(await artifacts.get(ref))) as { format?: string; program?: string; proof?: string }
      if (doc.format !== 'proofline/builtin-proof@1' || doc.program !== 'aggregate' || typeof doc.proof !== 'string') {
        throw new ConfigError(`job ${job.id}'s proof artifact is not a built-in aggregate proof`)
      }
      return doc.proof as Hex
    }
  }
  const account = await loadSigner({ ...(deps.env ? { env: deps.env } : {}), ...(p.keystorePath !== undefined ? { keystorePath: p.keystorePath } : {}) })
  const log = deps.log.child({ part: 'proposer' })
  const tx = txManager({
    rpcUrls: p.l1RpcUrls,
    chainId: l1ChainId,
    account,
    journal: await sqlTxJournal(deps.database),
    confirmations: p.confirmations,
    feeBumpPercent: p.feeBumpPercent,
    resubmitAfterMs: p.resubmitAfterMs,
    maxFeePerGasCap: parseGwei(String(p.maxFeePerGasGwei)),
    log,
  })
  const proposals = await sqlProposalStore(deps.database)
  const stage = p.stage ?? (config.stages[config.stages.length - 1]?.name as string)
  const service = proposerService({
    state: deps.state,
    stage,
    l2,
    oracle: oracleClient({ client: l1, address: p.oracle as Address }),
    tx,
    proposals,
    intervalMs: p.intervalMs,
    confirmations: p.l2Confirmations,
    proofFor,
    verifierLabel: p.proof === 'mock' ? 'MockVerifier' : 'UltraHonk',
    log,
  })
  service.start()
  return {
    service,
    oracle: p.oracle as Address,
    l1ChainId,
    address: account.address,
    proposals,
    balance: () => l1.getBalance({ address: account.address }),
    async stop(opts) {
      await service.stop(opts)
      await tx.close()
    },
  }
}
