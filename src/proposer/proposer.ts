import { setTimeout as sleep } from 'node:timers/promises'
import { size, type Client, type Hex } from 'viem'
import { getBlockNumber } from 'viem/actions'
import { outputRootAt, type OutputRootResult } from '../chain/output-root.js'
import { ProoflineError, errorMessage } from '../core/errors.js'
import type { StateStore, StoredJob } from '../state/types.js'
import { describeOracleRevert, type OracleClient, type OracleOutput } from './oracle-client.js'
import type { InFlightProposal, ProposalRecord, ProposalStore } from './proposals.js'
import { TxError, type TxManager, type TxSendResult } from './tx-manager.js'

/**
 * The proposer: every `intervalMs`, proposes to the L1 OutputOracle the succeeded aggregate job
 * that extends the oracle's latest output exactly (`job.first === latestBlockNumber + 1`), after
 * re-deriving its output root from the L2 node, through the crash-safe tx manager. The round,
 * its checks and its crash cases are in docs/tx-manager.md, "Proposer".
 */

/** Where the proposer reports (pino-compatible). */
export interface ProposerLogger {
  debug(obj: Record<string, unknown>, msg: string): void
  info(obj: Record<string, unknown>, msg: string): void
  warn(obj: Record<string, unknown>, msg: string): void
  error(obj: Record<string, unknown>, msg: string): void
}

/** What `proofFor` may need besides the job: the transition the oracle will check the proof against. */
export interface ProofContext {
  /** The oracle's latest output root: the proof's "previous output root" public value. */
  previousOutputRoot: Hex
  previousL2Block: bigint
  /** The output root re-derived from the L2 node for `job.last`. */
  outputRoot: Hex
  l2Block: bigint
}

/** Options of {@link proposerService}. */
export interface ProposerOptions {
  /** Where succeeded aggregate jobs are read (read only). */
  state: Pick<StateStore, 'listJobs'>
  /** The stage whose succeeded jobs are proposed, e.g. `aggregate`. */
  stage: string
  /** The L2 node the output roots are re-derived from (a viem `PublicClient` or any `Client`). */
  l2: Client
  /** The OutputOracle on L1 (see `oracleClient`); read every round. */
  oracle: OracleClient
  /** The tx manager that signs and sends (its `confirmations` is the L1 depth a proposal needs). */
  tx: Pick<TxManager, 'send' | 'recover'>
  /** Where proposals are recorded. */
  proposals: ProposalStore
  /** Time between rounds; a round that proposed is followed by the next one at once (catching up). @default 300000 */
  intervalMs?: number
  /** After a failed round, the next one runs this soon (at most `intervalMs`). @default 10000 */
  retryDelayMs?: number
  /**
   * The `proof` bytes given to `proposeL2Output` for a job: the aggregate proof from the
   * artifact store; for the mock backend `'0x'` (MockVerifier accept-all) or
   * `mockCommitmentProof(encodePublicInputs(...))` built from `ctx` (public-inputs-commitment).
   */
  proofFor: (job: StoredJob, ctx: ProofContext) => Promise<Hex>
  /** Recorded with every proposal, e.g. `MockVerifier` or `UltraHonk`. */
  verifierLabel: string
  /**
   * Depth the proven L2 block must have on the L2 node before it is proposed
   * (`head − last + 1 ≥ confirmations`; 1 = it exists). The L1 depth of the proposal
   * transaction is the tx manager's `confirmations`. @default 1
   */
  confirmations?: number
  /** Check `eth_getProof`'s account proof against the L2 block's state root (see output-root.ts). @default true */
  verifyAccountProof?: boolean
  /** @default warnings and errors to stderr, debug and info dropped */
  log?: ProposerLogger
  /** Clock for `proposedAt` and refusal times (epoch ms). @default Date.now */
  now?: () => number
}

/** `idle` → `start()` → `running` → `stop()` → `stopping` (the current round is aborted) → `stopped`. */
export type ProposerState = 'idle' | 'running' | 'stopping' | 'stopped'

/** The proposer service. */
export interface ProposerService {
  readonly state: ProposerState
  /** Starts the loop: a round now, then every `intervalMs`. Only from `idle`. */
  start(): void
  /**
   * Stops the loop: no new round starts; the round in progress may finish for up to
   * `graceMs` (so a proposal already sent is confirmed and recorded), then it is aborted (a
   * transaction it sent stays journaled and in flight; the next proposer on the same journal
   * and store finishes it). Idempotent; a second call waits for the first.
   */
  stop(opts?: { graceMs?: number }): Promise<void>
  /**
   * Runs one round now (serialised with the loop's) and resolves with the proposal it confirmed,
   * if any. Rejects with `ProposerError` `PROPOSAL_REJECTED` when the oracle refuses the call,
   * and with the underlying error when L1, L2 or the stores fail (the round is safe to repeat).
   */
  tick(opts?: { signal?: AbortSignal }): Promise<ProposalRecord | undefined>
  /** Confirmed proposals, by L2 block ascending. */
  list(): Promise<ProposalRecord[]>
}

/** Codes of {@link ProposerError}. */
export type ProposerErrorCode = 'PROPOSER_CONFIG_INVALID' | 'PROPOSAL_REJECTED' | 'PROPOSER_STOPPED'

/** A proposer failure. */
export class ProposerError extends ProoflineError {
  constructor(code: ProposerErrorCode, message: string, opts: { retryable: boolean; details?: Record<string, unknown>; cause?: unknown }) {
    super(code, message, opts)
  }
}

const consoleLogger: ProposerLogger = {
  debug() {},
  info() {},
  warn(obj, msg) {
    console.warn(`[proofline proposer] ${msg}`, obj)
  },
  error(obj, msg) {
    console.error(`[proofline proposer] ${msg}`, obj)
  },
}

/** The result of the proposer's own checks of a job. */
type Check = { ok: true; root: OutputRootResult } | { ok: false; reason: string; details: Record<string, unknown> }

/** Creates the proposer; nothing runs until `start()` or `tick()`. */
export function proposerService(opts: ProposerOptions): ProposerService {
  const intervalMs = opts.intervalMs ?? 300_000
  const retryDelayMs = Math.min(opts.retryDelayMs ?? 10_000, intervalMs)
  const confirmations = opts.confirmations ?? 1
  const log = opts.log ?? consoleLogger
  const now = opts.now ?? Date.now
  const { state: store, stage, l2, oracle, tx, proposals, verifierLabel } = opts
  const invalid = (msg: string): ProposerError => new ProposerError('PROPOSER_CONFIG_INVALID', msg, { retryable: false })
  if (!(intervalMs > 0) || !(retryDelayMs > 0)) throw invalid(`intervalMs and retryDelayMs must be > 0 (got ${intervalMs}, ${retryDelayMs})`)
  if (!Number.isInteger(confirmations) || confirmations < 1) throw invalid(`confirmations must be an integer >= 1, got ${confirmations}`)
  if (stage === '') throw invalid('stage must name the stage whose jobs are proposed (e.g. aggregate)')

  let state: ProposerState = 'idle'
  /** Aborted by `stop()`: no new round, no more waiting between rounds. */
  const halt = new AbortController()
  /** Aborted once the grace is over: the round in progress gives up. */
  const lifetime = new AbortController()
  let stopped: Promise<void> | undefined
  let loop: Promise<void> | undefined
  let tail: Promise<unknown> = Promise.resolve()

  /** One round at a time: the loop's and a caller's `tick()` never interleave. */
  const exclusive = <T>(fn: () => Promise<T>): Promise<T> => {
    const run = tail.then(fn, fn)
    tail = run.catch(() => undefined)
    return run
  }

  const blockNumber = (n: bigint, what: string): number => {
    if (n > BigInt(Number.MAX_SAFE_INTEGER)) throw new ProposerError('PROPOSAL_REJECTED', `${what} ${n} is beyond the pipeline's block numbers`, { retryable: false })
    return Number(n)
  }

  /** The succeeded job of `stage` that starts right after `latest`; the longest if several. */
  async function nextJob(latest: number): Promise<StoredJob | undefined> {
    const jobs = await store.listJobs({ stage, states: ['succeeded'], coversBlock: latest + 1 })
    let best: StoredJob | undefined
    for (const j of jobs) {
      if (j.state !== 'succeeded' || j.stage !== stage || j.first !== latest + 1) continue
      if (best === undefined || j.last > best.last) best = j
    }
    return best
  }

  /** Re-derives the job's claim from the L2 node: the proven block is canonical, the output root is the node's. */
  async function check(job: StoredJob, prev: OracleOutput, signal: AbortSignal): Promise<Check> {
    const refuse = (reason: string, details: Record<string, unknown> = {}): Check => ({ ok: false, reason, details })
    const r = job.result
    if (r === null) return refuse(`job ${job.id} succeeded without a result`)
    if (r.first !== job.first || r.last !== job.last || r.lastHash.toLowerCase() !== job.lastHash.toLowerCase()) {
      return refuse(`job ${job.id}'s result covers ${r.first}-${r.last} (${r.lastHash}), the job is ${job.first}-${job.last} (${job.lastHash})`)
    }
    const out = r.output
    if (typeof out.lastHash === 'string' && out.lastHash.toLowerCase() !== job.lastHash.toLowerCase()) {
      return refuse(`job ${job.id}'s proof output commits to L2 block hash ${out.lastHash}, the job to ${job.lastHash}`)
    }
    let root: OutputRootResult
    try {
      root = await outputRootAt(l2, BigInt(job.last), { signal, ...(opts.verifyAccountProof === undefined ? {} : { verifyAccountProof: opts.verifyAccountProof }) })
    } catch (err) {
      // A node that cannot answer now is retried next round; a node whose proof does not verify is refused.
      if (err instanceof ProoflineError && !err.retryable) return refuse(`the L2 node's output root for block ${job.last} is not trustworthy: ${err.message}`, { code: err.code })
      throw err
    }
    if (root.blockHash.toLowerCase() !== job.lastHash.toLowerCase()) {
      return refuse(`L2 block ${job.last} is ${root.blockHash} on the L2 node, the job proved ${job.lastHash}: the proven block is no longer canonical (L2 reorg)`, {
        nodeHash: root.blockHash,
        jobHash: job.lastHash,
      })
    }
    if (typeof out.outputRoot === 'string' && out.outputRoot.toLowerCase() !== root.outputRoot.toLowerCase()) {
      return refuse(`job ${job.id}'s proof claims output root ${out.outputRoot}, the L2 node gives ${root.outputRoot}`, { claimed: out.outputRoot, derived: root.outputRoot })
    }
    if (typeof out.previousOutputRoot === 'string' && out.previousOutputRoot.toLowerCase() !== prev.outputRoot.toLowerCase()) {
      return refuse(`job ${job.id}'s proof starts from output root ${out.previousOutputRoot}, the oracle's latest is ${prev.outputRoot}`, {
        claimed: out.previousOutputRoot,
        oracle: prev.outputRoot,
      })
    }
    return { ok: true, root }
  }

  let latestChecked: { key: string; at: number } | undefined
  /**
   * While nothing extends the oracle's latest output: is that output still the canonical L2
   * chain's? An L2 reorg deeper than `confirmations` can orphan a proposed block; then no job
   * can ever extend it, and only an operator can fix it (the oracle's owner or challenger
   * deletes the outputs from that block on). Checked when the latest output changes, and at
   * most once a minute otherwise; an alert every time it is found orphaned.
   */
  async function checkLatestCanonical(signal: AbortSignal): Promise<void> {
    try {
      const out = await oracle.latestOutput()
      const key = `${out.index}:${out.outputRoot}`
      if (latestChecked !== undefined && latestChecked.key === key && now() - latestChecked.at < 60_000) return
      latestChecked = { key, at: now() }
      const root = await outputRootAt(l2, out.l2BlockNumber, { signal, ...(opts.verifyAccountProof === undefined ? {} : { verifyAccountProof: opts.verifyAccountProof }) })
      if (root.outputRoot.toLowerCase() === out.outputRoot.toLowerCase()) return
      log.error(
        { alert: true, l2Block: Number(out.l2BlockNumber), outputIndex: Number(out.index), oracleRoot: out.outputRoot, canonicalRoot: root.outputRoot },
        `ALERT: the oracle's latest output (L2 block ${out.l2BlockNumber}) is not on the canonical L2 chain: an L2 reorg deeper than the proposer's L2 confirmations orphaned a proposed block. Nothing can be proposed after it until the oracle's outputs from that block on are deleted; raise proposer.l2Confirmations above the deepest reorg`,
      )
    } catch (err) {
      // A check that cannot be made now (node unreachable, genesis quirk) is tried next round.
      log.debug({ err: errorMessage(err) }, 'could not check the oracle\'s latest output against L2')
    }
  }

  /** Records the confirmed transaction of an in-flight proposal. */
  async function record(p: InFlightProposal, r: TxSendResult): Promise<ProposalRecord> {
    const rec = await proposals.complete({
      l2Block: p.l2Block,
      first: p.first,
      outputRoot: p.outputRoot,
      txHash: r.txHash,
      l1Block: r.blockNumber,
      gasUsed: r.gasUsed,
      effectiveGasPrice: r.effectiveGasPrice,
      verifier: p.verifier,
      jobId: p.jobId,
      proofBytes: p.proofBytes,
      proposedAt: now(),
    })
    log.info({ l2Block: rec.l2Block, first: rec.first, outputRoot: rec.outputRoot, txHash: rec.txHash, l1Block: rec.l1Block.toString() }, 'proposal confirmed')
    return rec
  }

  const isRejection = (err: unknown): err is TxError => err instanceof TxError && (err.code === 'TX_WOULD_REVERT' || err.code === 'TX_REVERTED')

  /** Sends a new proposal's exact intent and records it once confirmed; an oracle revert becomes `PROPOSAL_REJECTED`. */
  async function send(p: InFlightProposal, signal: AbortSignal): Promise<ProposalRecord> {
    let r: TxSendResult
    try {
      r = await tx.send({ key: p.key, to: p.to, data: p.data }, { signal })
    } catch (err) {
      if (!isRejection(err)) throw err
      const revert = describeOracleRevert(err)
      const reason = `the OutputOracle rejects the proposal of L2 block ${p.l2Block}: ${revert?.message ?? errorMessage(err).split('\n')[0]}`
      await proposals.abandon(p.l2Block, p.key)
      await proposals.recordRefusal({
        at: now(),
        kind: 'rejected',
        l2Block: p.l2Block,
        first: p.first,
        jobId: p.jobId,
        reason,
        details: { txCode: err.code, key: p.key, ...(revert === undefined ? {} : { errorName: revert.errorName, args: revert.args.map(String) }) },
      })
      log.error({ l2Block: p.l2Block, jobId: p.jobId, key: p.key, txCode: err.code, errorName: revert?.errorName }, reason)
      throw new ProposerError('PROPOSAL_REJECTED', reason, {
        // Too low is a race with another proposal; anything else needs an operator.
        retryable: revert?.errorName === 'L2BlockNumberTooLow',
        details: { l2Block: p.l2Block, key: p.key, errorName: revert?.errorName, txCode: err.code },
        cause: err,
      })
    }
    return record(p, r)
  }

  /**
   * An in-flight proposal the oracle is at or past. After `recover`, its transaction (if it was
   * ever journaled) is final, so re-sending the same intent returns the journaled receipt at
   * once; if it was never journaled, `eth_estimateGas` refuses it (too low) and nothing is sent.
   */
  async function settle(p: InFlightProposal, signal: AbortSignal): Promise<ProposalRecord | undefined> {
    let r: TxSendResult
    try {
      r = await tx.send({ key: p.key, to: p.to, data: p.data }, { signal })
    } catch (err) {
      if (!isRejection(err)) throw err
      await proposals.abandon(p.l2Block, p.key)
      log.warn({ l2Block: p.l2Block, key: p.key, txCode: err.code }, 'an in-flight proposal the oracle is already past was never confirmed by us; dropped')
      return undefined
    }
    log.info({ l2Block: p.l2Block, key: p.key }, 'recording a proposal confirmed before a restart')
    return record(p, r)
  }

  async function round(signal: AbortSignal): Promise<ProposalRecord | undefined> {
    signal.throwIfAborted()
    // Drive every journaled intent to its final state first, so the oracle read below already
    // reflects all our own transactions (a crash may have left one in flight).
    await tx.recover({ signal })
    const latestBig = await oracle.latestBlockNumber()
    const latest = blockNumber(latestBig, 'the oracle\'s latest L2 block')
    let settled: ProposalRecord | undefined
    for (const p of await proposals.listInFlight()) {
      if (p.l2Block <= latest) settled = (await settle(p, signal)) ?? settled
    }

    const job = await nextJob(latest)
    if (job === undefined) {
      log.debug({ stage, latest }, `no succeeded ${stage} job starts at L2 block ${latest + 1}`)
      await checkLatestCanonical(signal)
      return settled
    }
    const interval = await oracle.submissionInterval()
    if (BigInt(job.last) < latestBig + interval) {
      log.info(
        { jobId: job.id, first: job.first, last: job.last, latest, interval: interval.toString() },
        `waiting: job ${job.id} ends at ${job.last}, the oracle needs an L2 block >= ${latestBig + interval} (latest + submission interval)`,
      )
      return settled
    }
    if (confirmations > 1) {
      const head = await getBlockNumber(l2, { cacheTime: 0 })
      if (head - BigInt(job.last) + 1n < BigInt(confirmations)) {
        log.info({ jobId: job.id, last: job.last, head: head.toString(), confirmations }, 'waiting: the proven L2 block is not deep enough yet')
        return settled
      }
    }
    const prev = await oracle.latestOutput()
    if (prev.l2BlockNumber !== latestBig) {
      log.info({ latest, now: prev.l2BlockNumber.toString() }, 'the oracle moved during the round; retrying next round')
      return settled
    }

    const c = await check(job, prev, signal)
    if (!c.ok) {
      log.error({ jobId: job.id, first: job.first, last: job.last, ...c.details }, `refusing to propose: ${c.reason}`)
      await proposals.recordRefusal({ at: now(), kind: 'refused', l2Block: job.last, first: job.first, jobId: job.id, reason: c.reason, details: c.details })
      return settled
    }
    const outputRoot = c.root.outputRoot
    const key = `propose:${job.last}:${outputRoot}`
    // A retry of an intent that may already be journaled must carry the very same bytes.
    const earlier = (await proposals.listInFlight()).find((p) => p.key === key)
    let data: Hex
    let proofBytes: number
    if (earlier !== undefined) {
      data = earlier.data
      proofBytes = earlier.proofBytes
    } else {
      const proof = await opts.proofFor(job, { previousOutputRoot: prev.outputRoot, previousL2Block: prev.l2BlockNumber, outputRoot, l2Block: BigInt(job.last) })
      data = oracle.proposeCalldata(outputRoot, BigInt(job.last), proof)
      proofBytes = size(proof)
    }
    const p: InFlightProposal = {
      l2Block: job.last,
      first: job.first,
      outputRoot,
      lastHash: job.lastHash,
      jobId: job.id,
      verifier: verifierLabel,
      key,
      to: oracle.address,
      data,
      proofBytes,
      startedAt: now(),
    }
    await proposals.begin(p)
    log.info({ jobId: job.id, first: job.first, last: job.last, outputRoot, key }, 'proposing')
    return send(p, signal)
  }

  const tick = (tickOpts: { signal?: AbortSignal } = {}): Promise<ProposalRecord | undefined> =>
    exclusive(() => {
      if (halt.signal.aborted) return Promise.reject(new ProposerError('PROPOSER_STOPPED', 'the proposer is stopped', { retryable: false }))
      return round(tickOpts.signal === undefined ? lifetime.signal : AbortSignal.any([tickOpts.signal, lifetime.signal]))
    })

  async function run(): Promise<void> {
    const signal = halt.signal
    while (!signal.aborted) {
      let wait = intervalMs
      try {
        // A round that proposed is followed by the next at once: catching up after downtime.
        if ((await tick()) !== undefined) wait = 0
      } catch (err) {
        if (signal.aborted) break
        wait = retryDelayMs
        const e = err instanceof ProoflineError ? { code: err.code, retryable: err.retryable } : {}
        log.error({ error: errorMessage(err).split('\n')[0], ...e }, 'proposer round failed')
      }
      if (wait > 0) await sleep(wait, undefined, { signal }).catch(() => undefined)
    }
  }

  return {
    get state() {
      return state
    },
    start() {
      if (state !== 'idle') throw new ProposerError('PROPOSER_STOPPED', `start() is only allowed once, from idle (state is ${state})`, { retryable: false })
      state = 'running'
      loop = run().catch((err: unknown) => log.error({ error: errorMessage(err) }, 'proposer loop crashed'))
    },
    stop(stopOpts = {}) {
      stopped ??= (async () => {
        state = 'stopping'
        halt.abort()
        const graceMs = stopOpts.graceMs ?? 0
        if (graceMs > 0) {
          const grace = new AbortController()
          await Promise.race([tail, sleep(graceMs, undefined, { signal: grace.signal }).catch(() => undefined)])
          grace.abort()
        }
        lifetime.abort()
        await loop
        await tail
        state = 'stopped'
      })()
      return stopped
    },
    tick,
    list: () => proposals.list(),
  }
}
