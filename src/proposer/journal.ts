import type { Address, Hex } from 'viem'
import { ProoflineError } from '../core/errors.js'

/**
 * The tx manager's write-ahead journal: every signed transaction is stored here before it is
 * broadcast, so a restarted process resumes the same intent on the same nonce instead of
 * sending it again (see docs/tx-manager.md).
 */

/**
 * Where an intent is.
 * - `pending`: signed and journaled (perhaps not yet broadcast, perhaps mined but not yet deep
 *   enough); the tx manager owns its nonce until it is final.
 * - `confirmed`: one of its attempts was mined, succeeded, and reached the required depth.
 * - `reverted`: one of its attempts was mined at the required depth but reverted. Final: the
 *   nonce is spent. Sending the same key again reports the revert; use a new key to retry.
 */
export type TxIntentStatus = 'pending' | 'confirmed' | 'reverted'

/** One signed transaction of an intent: the first one or a fee-bumped replacement. */
export interface TxAttempt {
  /** 1 for the first signed transaction, then 2, 3… for replacements. */
  attempt: number
  /** The nonce it was signed with (the intent's, unless the nonce was reassigned, see `reassignNonce`). */
  nonce: number
  hash: Hex
  /** The signed, serialized transaction: re-broadcasting it needs no key. */
  raw: Hex
  maxFeePerGas: bigint
  maxPriorityFeePerGas: bigint
  /** Epoch ms when it was journaled. */
  createdAtMs: number
}

/** What was mined, recorded once the intent is final. */
export interface TxOutcome {
  txHash: Hex
  blockNumber: bigint
  blockHash: Hex
  gasUsed: bigint
  effectiveGasPrice: bigint
}

/** One idempotent intent and everything signed for it. */
export interface JournaledTx {
  /** The caller's idempotency key, e.g. `propose:<l2Block>:<outputRoot>`. */
  key: string
  chainId: number
  /** The sending account, lowercase. */
  from: Address
  /** The nonce the intent currently holds. */
  nonce: number
  to: Address
  data: Hex
  value: bigint
  gas: bigint
  status: TxIntentStatus
  /** Every signed transaction, oldest first; any of them may be the one mined. */
  attempts: TxAttempt[]
  /** Set when `status` is `confirmed` or `reverted`. */
  outcome?: TxOutcome
}

/** A new intent with its first signed attempt. */
export type NewJournaledTx = Omit<JournaledTx, 'status' | 'attempts' | 'outcome'>

/**
 * Storage of tx intents. Every write resolves only once it is durable (it survives a SIGKILL of
 * the process and, for a database, a crash of the server). Implementations must be safe for
 * several processes sharing the same storage: the two uniqueness rules below are what stops
 * two proposers on one key from sending one intent twice.
 */
export interface TxJournal {
  /** The intent with all its attempts, or `undefined` if the key was never journaled. */
  get(key: string): Promise<JournaledTx | undefined>
  /**
   * Stores a new intent in `pending` together with its first attempt, atomically. Rejects with
   * `TxJournalConflictError` (`reason: 'key'`) if the key exists, or (`reason: 'nonce'`) if
   * another key already holds `(chainId, from, nonce)`; nothing is stored then.
   */
  create(intent: NewJournaledTx, first: TxAttempt): Promise<void>
  /**
   * Appends a replacement attempt (same nonce, higher fees) to a pending intent. Idempotent
   * for an attempt with the same hash; rejects with `TxJournalConflictError` if the intent is
   * not pending or the attempt number is taken by a different hash.
   */
  addAttempt(key: string, attempt: TxAttempt): Promise<void>
  /**
   * Moves a pending intent to a new nonce with a first attempt on it, atomically; older
   * attempts are kept. Only for an intent whose nonce was consumed by a transaction this
   * journal does not know. Rejects with `TxJournalConflictError` like `create` if another
   * key holds the new nonce.
   */
  reassignNonce(key: string, nonce: number, attempt: TxAttempt): Promise<void>
  /** Records the final outcome. Idempotent for the same outcome; a final intent is never changed. */
  finish(key: string, status: 'confirmed' | 'reverted', outcome: TxOutcome): Promise<void>
  /** Pending intents of one account on one chain, by nonce ascending. */
  pending(chainId: number, from: Address): Promise<JournaledTx[]>
  /** The highest nonce any intent of the account holds (any status), or `undefined` if none. */
  highestNonce(chainId: number, from: Address): Promise<number | undefined>
}

/** A journal write broke one of its uniqueness rules. Retryable: re-read and resume. */
export class TxJournalConflictError extends ProoflineError {
  readonly reason: 'key' | 'nonce' | 'state'
  constructor(reason: 'key' | 'nonce' | 'state', message: string, details: Record<string, unknown> = {}) {
    super('TX_JOURNAL_CONFLICT', message, { retryable: true, details: { reason, ...details } })
    this.reason = reason
  }
}

/**
 * A journal in memory: for unit tests and throwaway dev runs only, since it is lost with the
 * process (which is exactly the crash the journal exists for).
 */
export function memoryTxJournal(): TxJournal {
  const byKey = new Map<string, JournaledTx>()
  const copy = (tx: JournaledTx): JournaledTx => structuredClone(tx)
  const holder = (chainId: number, from: Address, nonce: number): JournaledTx | undefined =>
    [...byKey.values()].find((t) => t.chainId === chainId && t.from === from && t.nonce === nonce)
  const pendingOf = (key: string): JournaledTx => {
    const tx = byKey.get(key)
    if (tx === undefined) throw new TxJournalConflictError('state', `no journaled intent ${key}`, { key })
    if (tx.status !== 'pending') throw new TxJournalConflictError('state', `intent ${key} is ${tx.status}, not pending`, { key })
    return tx
  }
  const run = <T>(fn: () => T): Promise<T> => {
    try {
      return Promise.resolve(fn())
    } catch (err) {
      return Promise.reject(err as Error)
    }
  }
  return {
    get: (key) => run(() => {
      const tx = byKey.get(key)
      return tx === undefined ? undefined : copy(tx)
    }),
    create: (intent, first) => run(() => {
      const from = intent.from.toLowerCase() as Address
      if (byKey.has(intent.key)) throw new TxJournalConflictError('key', `intent ${intent.key} is already journaled`, { key: intent.key })
      const other = holder(intent.chainId, from, intent.nonce)
      if (other !== undefined) {
        throw new TxJournalConflictError('nonce', `nonce ${intent.nonce} is held by ${other.key}`, { key: intent.key, nonce: intent.nonce })
      }
      byKey.set(intent.key, copy({ ...intent, from, status: 'pending', attempts: [first] }))
    }),
    addAttempt: (key, attempt) => run(() => {
      const existing = byKey.get(key)?.attempts.find((a) => a.attempt === attempt.attempt)
      if (existing?.hash === attempt.hash) return
      const tx = pendingOf(key)
      if (existing !== undefined) throw new TxJournalConflictError('state', `attempt ${attempt.attempt} of ${key} is taken`, { key })
      tx.attempts.push(structuredClone(attempt))
    }),
    reassignNonce: (key, nonce, attempt) => run(() => {
      const tx = pendingOf(key)
      const other = holder(tx.chainId, tx.from, nonce)
      if (other !== undefined && other.key !== key) {
        throw new TxJournalConflictError('nonce', `nonce ${nonce} is held by ${other.key}`, { key, nonce })
      }
      tx.nonce = nonce
      tx.attempts.push(structuredClone(attempt))
    }),
    finish: (key, status, outcome) => run(() => {
      const tx = byKey.get(key)
      if (tx !== undefined && tx.status === status && tx.outcome?.txHash === outcome.txHash) return
      const p = pendingOf(key)
      p.status = status
      p.outcome = { ...outcome }
    }),
    pending: (chainId, from) => run(() =>
      [...byKey.values()]
        .filter((t) => t.chainId === chainId && t.from === from.toLowerCase() && t.status === 'pending')
        .sort((a, b) => a.nonce - b.nonce)
        .map(copy),
    ),
    highestNonce: (chainId, from) => run(() => {
      let max: number | undefined
      for (const t of byKey.values()) {
        if (t.chainId !== chainId || t.from !== from.toLowerCase()) continue
        for (const n of [t.nonce, ...t.attempts.map((a) => a.nonce)]) if (max === undefined || n > max) max = n
      }
      return max
    }),
  }
}
