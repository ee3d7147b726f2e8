import type { Address, Hex } from 'viem'

/**
 * The proposer's record of what it proposed to L1: one row per L2 block, written `in-flight`
 * before the transaction is sent and `proposed` once it is confirmed, plus a log of proposals
 * it refused or the oracle rejected. The L1 oracle stays the truth of *where* proposals are;
 * this store keeps *what it cost and where it came from* (tx, gas, job, verifier) for the
 * `up` summary and the API, and lets a restarted proposer finish recording a proposal whose
 * transaction it sent before the crash (see docs/tx-manager.md, "Proposer").
 */

/** A proposal confirmed on L1. */
export interface ProposalRecord {
  /** The L2 block the output root is for (the aggregate job's `last`). */
  l2Block: number
  /** First L2 block the proof covers (the oracle's previous latest block + 1). */
  first: number
  outputRoot: Hex
  txHash: Hex
  /** The L1 block the transaction was mined in. */
  l1Block: bigint
  gasUsed: bigint
  effectiveGasPrice: bigint
  /** Which verifier the proof was made for, e.g. `MockVerifier` (the service's `verifierLabel`). */
  verifier: string
  /** The aggregate job whose proof was proposed. */
  jobId: string
  /** Size of the proof given to `proposeL2Output`, in bytes. */
  proofBytes: number
  /** Epoch ms when the proposal was recorded as confirmed. */
  proposedAt: number
}

/** A proposal whose transaction may have been sent but is not recorded as confirmed yet. */
export interface InFlightProposal {
  l2Block: number
  first: number
  outputRoot: Hex
  /** The L2 block hash at `l2Block` the output root was derived from. */
  lastHash: string
  jobId: string
  verifier: string
  /** The tx manager's idempotency key, `propose:<l2Block>:<outputRoot>`. */
  key: string
  /** The exact intent: a restart re-sends these bytes under `key` (the tx manager refuses other bytes). */
  to: Address
  data: Hex
  proofBytes: number
  /** Epoch ms when it was written. */
  startedAt: number
}

/** A round that did not propose a job it found: refused by the proposer or rejected by the oracle. */
export interface ProposalRefusal {
  /** Epoch ms. */
  at: number
  /** `refused`: the proposer's own checks failed, nothing was sent. `rejected`: the oracle reverted (in `eth_estimateGas` or on chain). */
  kind: 'refused' | 'rejected'
  l2Block: number
  first: number
  jobId: string
  /** One line for an operator. */
  reason: string
  details: Record<string, unknown>
}

/**
 * Storage of proposals. Every write resolves once durable. Implementations must be safe for
 * several processes sharing the storage (the SQL adapter is; the memory one is per process).
 */
export interface ProposalStore {
  /**
   * Stores `p` as the in-flight proposal of `p.l2Block`, replacing an earlier in-flight one for
   * that block. Does nothing if `p.l2Block` is already proposed (confirmed rows never change).
   */
  begin(p: InFlightProposal): Promise<void>
  /** In-flight proposals, by `l2Block` ascending. */
  listInFlight(): Promise<InFlightProposal[]>
  /**
   * Records a confirmed proposal and clears the block's in-flight row. Idempotent by `l2Block`:
   * if the block is already proposed, nothing changes and the stored record is returned.
   */
  complete(r: ProposalRecord): Promise<ProposalRecord>
  /** Drops the in-flight proposal of `l2Block` if its key is `key`; it will not be resumed. */
  abandon(l2Block: number, key: string): Promise<void>
  /** The confirmed proposal for `l2Block`, if any. */
  get(l2Block: number): Promise<ProposalRecord | undefined>
  /** Confirmed proposals by `l2Block` ascending (the last `limit` ones when given). */
  list(opts?: { limit?: number }): Promise<ProposalRecord[]>
  /** Appends a refusal or rejection to the log. */
  recordRefusal(r: ProposalRefusal): Promise<void>
  /** Refusals and rejections, newest first. */
  listRefusals(opts?: { limit?: number }): Promise<ProposalRefusal[]>
}

// The SQL adapter lives in its own file (like sql-journal.ts); re-exported here so callers
// import the port and its adapters from one place.
export { sqlProposalStore, migrateProposalStore } from './sql-proposals.js'

/** A proposal store in memory: tests and throwaway runs only (a restart forgets it). */
export function memoryProposalStore(): ProposalStore {
  const proposed = new Map<number, ProposalRecord>()
  const inFlight = new Map<number, InFlightProposal>()
  const refusals: ProposalRefusal[] = []
  const copy = <T>(v: T): T => structuredClone(v)
  const ok = <T>(v: T): Promise<T> => Promise.resolve(v)
  return {
    begin(p) {
      if (!proposed.has(p.l2Block)) inFlight.set(p.l2Block, copy(p))
      return ok(undefined)
    },
    listInFlight: () => ok([...inFlight.values()].sort((a, b) => a.l2Block - b.l2Block).map(copy)),
    complete(r) {
      const existing = proposed.get(r.l2Block)
      if (existing !== undefined) return ok(copy(existing))
      proposed.set(r.l2Block, copy(r))
      inFlight.delete(r.l2Block)
      return ok(copy(r))
    },
    abandon(l2Block, key) {
      if (inFlight.get(l2Block)?.key === key) inFlight.delete(l2Block)
      return ok(undefined)
    },
    get: (l2Block) => ok(proposed.has(l2Block) ? copy(proposed.get(l2Block)) : undefined),
    list(opts = {}) {
      const all = [...proposed.values()].sort((a, b) => a.l2Block - b.l2Block).map(copy)
      return ok(opts.limit === undefined ? all : all.slice(Math.max(0, all.length - opts.limit)))
    },
    recordRefusal(r) {
      refusals.push(copy(r))
      return ok(undefined)
    },
    listRefusals(opts = {}) {
      const all = [...refusals].reverse().map(copy)
      return ok(opts.limit === undefined ? all : all.slice(0, opts.limit))
    },
  }
}
