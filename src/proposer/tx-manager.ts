import { setTimeout as sleep } from 'node:timers/promises'
import {
  BaseError,
  createPublicClient,
  fallback,
  http,
  keccak256,
  TransactionReceiptNotFoundError,
  type Address,
  type Hex,
  type LocalAccount,
  type PublicClient,
  type TransactionReceipt,
} from 'viem'
import { ProoflineError, errorMessage } from '../core/errors.js'
import { TxJournalConflictError, type JournaledTx, type TxAttempt, type TxJournal } from './journal.js'

/**
 * A crash-safe L1 transaction manager: every signed transaction is journaled before it is
 * broadcast, an intent keeps its nonce until it is final, stuck transactions are replaced on
 * the same nonce with bumped fees, and a receipt counts only once it is `confirmations` deep and
 * still in the canonical chain. The algorithm and its crash cases are in docs/tx-manager.md.
 */

/** Where the tx manager reports progress (pino-compatible). */
export interface TxLogger {
  info(obj: Record<string, unknown>, msg: string): void
  warn(obj: Record<string, unknown>, msg: string): void
}

/** Options of {@link txManager}. */
export interface TxManagerOptions {
  /** L1 JSON-RPC URLs, tried in order (viem `fallback`, not ranked): the first healthy one serves. */
  rpcUrls: readonly string[]
  /** The L1 chain id; the manager refuses to send if the RPCs report another. */
  chainId: number
  /** The signing account (see `loadSigner`). */
  account: LocalAccount
  /** Where signed transactions are written before they are broadcast. */
  journal: TxJournal
  /** Blocks a receipt's block must have, itself included, before the intent is final (1 = mined). @default 3 */
  confirmations?: number
  /** Fee increase of a replacement on the same nonce, in percent; nodes refuse less than 10. @default 12.5 */
  feeBumpPercent?: number
  /** A transaction not mined this long after it was broadcast is replaced with bumped fees. @default 30000 */
  resubmitAfterMs?: number
  /** The manager never signs a transaction with a higher `maxFeePerGas`. @default 500 gwei */
  maxFeePerGasCap?: bigint
  /** How often receipts and the head are polled. @default 2000 */
  pollIntervalMs?: number
  /** Timeout of one JSON-RPC request to one URL. @default 10000 */
  rpcTimeoutMs?: number
  /** How many times the fallback retries a request over the whole URL list. @default 2 */
  rpcRetryCount?: number
  /** Margin added to `eth_estimateGas` when an intent has no `gas`, in percent. @default 20 */
  gasMarginPercent?: number
  /** @default warnings to stderr, info dropped */
  log?: TxLogger
}

/** One transaction to send, identified by a caller-chosen idempotency key. */
export interface TxIntent {
  /** Idempotency key, e.g. `propose:<l2Block>:<outputRoot>`: one key is at most one transaction on chain. */
  key: string
  to: Address
  data: Hex
  /** @default 0n */
  value?: bigint
  /** Gas limit. @default eth_estimateGas + `gasMarginPercent` */
  gas?: bigint
}

/** The confirmed transaction of an intent. */
export interface TxSendResult {
  txHash: Hex
  blockNumber: bigint
  blockHash: Hex
  gasUsed: bigint
  effectiveGasPrice: bigint
  nonce: number
  /** How many transactions were signed for the intent (1 + fee bumps and nonce reassignments). */
  attempts: number
}

/** The tx manager. Sends are serialised: one intent at a time per manager. */
export interface TxManager {
  /**
   * Sends the intent, or resumes it if its key is already journaled, and resolves once one of
   * its transactions is `confirmations` deep in the canonical chain. A key already confirmed
   * resolves at once with the journaled outcome. Rejects with `TxError` `TX_REVERTED` if the
   * transaction was mined but reverted (final for that key). Aborting `signal` stops waiting;
   * the intent stays journaled and the next `send`/`recover` resumes it.
   */
  send(intent: TxIntent, opts?: { signal?: AbortSignal }): Promise<TxSendResult>
  /**
   * Resumes every unconfirmed intent of the account in the journal, in nonce order, until each
   * is final. `send` runs it once before its first intent, so calling it is only needed to
   * settle leftovers at start without sending.
   */
  recover(opts?: { signal?: AbortSignal }): Promise<void>
  /** Stops waiting (in-flight sends reject with `TX_MANAGER_CLOSED`); journaled intents stay resumable. Idempotent. */
  close(): Promise<void>
}

/** Codes of {@link TxError}. */
export type TxErrorCode =
  | 'TX_CONFIG_INVALID'
  | 'TX_WRONG_CHAIN'
  | 'TX_INTENT_MISMATCH'
  | 'TX_WOULD_REVERT'
  | 'TX_REVERTED'
  | 'TX_MANAGER_CLOSED'

/** A tx manager failure. */
export class TxError extends ProoflineError {
  constructor(code: TxErrorCode, message: string, opts: { retryable: boolean; details?: Record<string, unknown>; cause?: unknown }) {
    super(code, message, opts)
  }
}

const GWEI = 1_000_000_000n

const consoleTxLogger: TxLogger = {
  info() {},
  warn(obj, msg) {
    console.warn(`[proofline tx] ${msg}`, obj)
  },
}

interface Fees {
  maxFeePerGas: bigint
  maxPriorityFeePerGas: bigint
}

/** The subset of a viem public client the manager uses. */
type Rpc = Pick<
  PublicClient,
  | 'getChainId'
  | 'getBlock'
  | 'getBlockNumber'
  | 'getTransactionCount'
  | 'getTransactionReceipt'
  | 'estimateGas'
  | 'estimateMaxPriorityFeePerGas'
  | 'sendRawTransaction'
>

/** Creates a tx manager; nothing is sent or read until `send` or `recover`. */
export function txManager(opts: TxManagerOptions): TxManager {
  const confirmations = opts.confirmations ?? 3
  const feeBumpPercent = opts.feeBumpPercent ?? 12.5
  const resubmitAfterMs = opts.resubmitAfterMs ?? 30_000
  const cap = opts.maxFeePerGasCap ?? 500n * GWEI
  const pollIntervalMs = opts.pollIntervalMs ?? 2_000
  const gasMarginPercent = opts.gasMarginPercent ?? 20
  const log = opts.log ?? consoleTxLogger
  const { account, journal, chainId } = opts
  const from = account.address.toLowerCase() as Address

  const invalid = (msg: string, details: Record<string, unknown>): TxError => new TxError('TX_CONFIG_INVALID', msg, { retryable: false, details })
  if (opts.rpcUrls.length === 0) throw invalid('the tx manager needs at least one L1 RPC URL (proposer.l1RpcUrls)', {})
  if (!Number.isInteger(confirmations) || confirmations < 1) throw invalid(`confirmations must be an integer >= 1, got ${confirmations}`, { confirmations })
  if (!(feeBumpPercent >= 10)) {
    throw invalid(`feeBumpPercent must be >= 10 (nodes refuse replacements below +10%), got ${feeBumpPercent}`, { feeBumpPercent })
  }
  if (!(resubmitAfterMs > 0) || !(pollIntervalMs > 0)) throw invalid('resubmitAfterMs and pollIntervalMs must be > 0', { resubmitAfterMs, pollIntervalMs })
  if (cap <= 0n) throw invalid('maxFeePerGasCap must be > 0', { maxFeePerGasCap: cap.toString() })

  const rpc: Rpc = createPublicClient({
    transport: fallback(
      opts.rpcUrls.map((url) => http(url, { timeout: opts.rpcTimeoutMs ?? 10_000, retryCount: 0 })),
      { rank: false, retryCount: opts.rpcRetryCount ?? 2, retryDelay: 200 },
    ),
    pollingInterval: pollIntervalMs,
  })

  const closing = new AbortController()
  let closed = false
  let tail: Promise<unknown> = Promise.resolve()
  let ready = false
  let recovered = false

  /** Runs `fn` after every earlier call has settled: one intent at a time. */
  const exclusive = <T>(fn: () => Promise<T>): Promise<T> => {
    const run = tail.then(fn, fn)
    tail = run.catch(() => undefined)
    return run
  }

  const combined = (signal: AbortSignal | undefined): AbortSignal =>
    signal === undefined ? closing.signal : AbortSignal.any([signal, closing.signal])

  const checkOpen = (): void => {
    if (closed) throw new TxError('TX_MANAGER_CLOSED', 'the tx manager is closed', { retryable: true })
  }

  const rethrowAbort = (signal: AbortSignal): void => {
    if (closing.signal.aborted) throw new TxError('TX_MANAGER_CLOSED', 'the tx manager was closed while waiting', { retryable: true })
    signal.throwIfAborted()
  }

  async function ensureReady(): Promise<void> {
    if (ready) return
    const actual = await rpc.getChainId()
    if (actual !== chainId) {
      throw new TxError('TX_WRONG_CHAIN', `the L1 RPC reports chain id ${actual}, the proposer is configured for ${chainId}; fix the L1 RPC URLs or the chain id`, {
        retryable: false,
        details: { expected: chainId, actual },
      })
    }
    ready = true
  }

  /** max(journal's highest nonce + 1, the node's pending count): see docs/tx-manager.md "Nonces". */
  async function nextNonce(): Promise<number> {
    const [highest, pendingCount] = await Promise.all([
      journal.highestNonce(chainId, from),
      rpc.getTransactionCount({ address: account.address, blockTag: 'pending' }),
    ])
    return Math.max(highest === undefined ? 0 : highest + 1, pendingCount)
  }

  async function marketFees(): Promise<Fees> {
    const [block, tip] = await Promise.all([rpc.getBlock({ blockTag: 'latest' }), rpc.estimateMaxPriorityFeePerGas()])
    const baseFee = block.baseFeePerGas ?? 0n
    // Twice the base fee survives six full blocks of +12.5% base-fee growth without a bump.
    let maxFeePerGas = 2n * baseFee + tip
    if (maxFeePerGas > cap) {
      log.warn({ maxFeePerGas: maxFeePerGas.toString(), cap: cap.toString() }, 'fee estimate above maxFeePerGasCap; using the cap')
      maxFeePerGas = cap
    }
    return { maxFeePerGas, maxPriorityFeePerGas: tip > maxFeePerGas ? maxFeePerGas : tip }
  }

  const bumpUp = (v: bigint): bigint => {
    const scaled = (v * BigInt(Math.round((100 + feeBumpPercent) * 1000)) + 99_999n) / 100_000n
    return scaled > v ? scaled : v + 1n
  }

  /** Fees of a replacement: at least +feeBumpPercent on both, at least the market; undefined when the cap forbids it. */
  async function replacementFees(prev: Fees): Promise<Fees | undefined> {
    const minFee = bumpUp(prev.maxFeePerGas)
    const minTip = bumpUp(prev.maxPriorityFeePerGas)
    if (minFee > cap) return undefined
    const market = await marketFees()
    let maxFeePerGas = market.maxFeePerGas > minFee ? market.maxFeePerGas : minFee
    if (maxFeePerGas > cap) maxFeePerGas = cap
    let maxPriorityFeePerGas = market.maxPriorityFeePerGas > minTip ? market.maxPriorityFeePerGas : minTip
    if (maxPriorityFeePerGas > maxFeePerGas) maxPriorityFeePerGas = maxFeePerGas
    return { maxFeePerGas, maxPriorityFeePerGas }
  }

  async function sign(tx: Pick<JournaledTx, 'to' | 'data' | 'value' | 'gas'>, nonce: number, fees: Fees, attempt: number): Promise<TxAttempt> {
    const raw = await account.signTransaction({
      type: 'eip1559',
      chainId,
      nonce,
      to: tx.to,
      data: tx.data,
      value: tx.value,
      gas: tx.gas,
      maxFeePerGas: fees.maxFeePerGas,
      maxPriorityFeePerGas: fees.maxPriorityFeePerGas,
    })
    return { attempt, nonce, hash: keccak256(raw), raw, ...fees, createdAtMs: Date.now() }
  }

  /** Journals a new intent on a fresh nonce, or returns the journaled one with the same key. */
  async function admit(intent: TxIntent): Promise<JournaledTx> {
    const existing = await journal.get(intent.key)
    if (existing !== undefined) return sameIntent(existing, intent)
    const value = intent.value ?? 0n
    let gas = intent.gas
    if (gas === undefined) {
      let estimate: bigint
      try {
        estimate = await rpc.estimateGas({ account: account.address, to: intent.to, data: intent.data, value })
      } catch (err) {
        const reverted = err instanceof BaseError && err.walk((e) => /revert/i.test((e as Error).message)) !== null
        if (!reverted) throw err
        throw new TxError('TX_WOULD_REVERT', `intent ${intent.key} would revert: ${errorMessage(err).split('\n')[0]}`, {
          retryable: false,
          details: { key: intent.key, to: intent.to },
          cause: err,
        })
      }
      gas = (estimate * BigInt(100 + gasMarginPercent)) / 100n
    }
    const fees = await marketFees()
    const body = { to: intent.to.toLowerCase() as Address, data: intent.data, value, gas }
    for (let round = 0; ; round++) {
      const nonce = await nextNonce()
      const first = await sign(body, nonce, fees, 1)
      try {
        await journal.create({ key: intent.key, chainId, from, nonce, ...body }, first)
        log.info({ key: intent.key, nonce, hash: first.hash }, 'intent journaled')
        return { key: intent.key, chainId, from, nonce, ...body, status: 'pending', attempts: [first] }
      } catch (err) {
        if (!(err instanceof TxJournalConflictError) || round >= 5) throw err
        if (err.reason === 'key') {
          const other = await journal.get(intent.key)
          if (other !== undefined) return sameIntent(other, intent)
        }
        // 'nonce': another process took it; allocate again.
      }
    }
  }

  function sameIntent(tx: JournaledTx, intent: TxIntent): JournaledTx {
    const differs =
      tx.to.toLowerCase() !== intent.to.toLowerCase() ||
      tx.data.toLowerCase() !== intent.data.toLowerCase() ||
      tx.value !== (intent.value ?? 0n) ||
      (intent.gas !== undefined && intent.gas !== tx.gas)
    if (differs) {
      throw new TxError('TX_INTENT_MISMATCH', `key ${intent.key} is journaled with a different transaction; an idempotency key must always name the same call`, {
        retryable: false,
        details: { key: intent.key, journaledTo: tx.to },
      })
    }
    return tx
  }

  async function receiptOf(hash: Hex): Promise<TransactionReceipt | undefined> {
    try {
      return await rpc.getTransactionReceipt({ hash })
    } catch (err) {
      if (err instanceof TransactionReceiptNotFoundError) return undefined
      throw err
    }
  }

  /** The receipt of whichever attempt is mined, newest attempts first. */
  async function findReceipt(tx: JournaledTx): Promise<TransactionReceipt | undefined> {
    for (const a of [...tx.attempts].reverse()) {
      const r = await receiptOf(a.hash)
      if (r !== undefined) return r
    }
    return undefined
  }

  /** Broadcasts a signed transaction; true if a node holds it now (accepted or already known). */
  async function broadcast(tx: JournaledTx, a: TxAttempt): Promise<boolean> {
    try {
      await rpc.sendRawTransaction({ serializedTransaction: a.raw })
      log.info({ key: tx.key, nonce: a.nonce, hash: a.hash, attempt: a.attempt, maxFeePerGas: a.maxFeePerGas.toString() }, 'transaction broadcast')
      return true
    } catch (err) {
      const text = err instanceof BaseError ? `${err.shortMessage} ${err.details}` : errorMessage(err)
      if (/already known|known transaction|already imported|already exists|already in (the )?(mem)?pool/i.test(text)) return true
      // The nonce is used: the receipt check or the nonce check of the next round sorts it out.
      if (/nonce too low|nonce has already been used|nonce.*too low/i.test(text)) return true
      log.warn({ key: tx.key, nonce: a.nonce, hash: a.hash, error: text.slice(0, 300) }, 'broadcast failed; will retry')
      return false
    }
  }

  function toResult(tx: JournaledTx): TxSendResult {
    const o = tx.outcome
    if (o === undefined) throw new Error(`intent ${tx.key} is ${tx.status} without an outcome`)
    const mined = tx.attempts.find((a) => a.hash.toLowerCase() === o.txHash.toLowerCase())
    if (tx.status === 'reverted') {
      throw new TxError('TX_REVERTED', `transaction ${o.txHash} of ${tx.key} was mined in block ${o.blockNumber} but reverted; send under a new key to try again`, {
        retryable: false,
        details: { key: tx.key, txHash: o.txHash, blockNumber: o.blockNumber.toString() },
      })
    }
    return {
      txHash: o.txHash,
      blockNumber: o.blockNumber,
      blockHash: o.blockHash,
      gasUsed: o.gasUsed,
      effectiveGasPrice: o.effectiveGasPrice,
      nonce: mined?.nonce ?? tx.nonce,
      attempts: tx.attempts.length,
    }
  }

  /** Moves an intent whose nonce a foreign transaction consumed (at depth) to a fresh nonce. */
  async function reassign(tx: JournaledTx): Promise<JournaledTx> {
    for (let round = 0; ; round++) {
      const nonce = await nextNonce()
      const a = await sign(tx, nonce, await marketFees(), tx.attempts.length + 1)
      try {
        await journal.reassignNonce(tx.key, nonce, a)
        log.warn(
          { key: tx.key, oldNonce: tx.nonce, nonce, account: account.address },
          'the nonce was used by a transaction this journal does not know (is the proposer key used elsewhere?); intent moved to a new nonce',
        )
        return { ...tx, nonce, attempts: [...tx.attempts, a] }
      } catch (err) {
        if (!(err instanceof TxJournalConflictError) || err.reason !== 'nonce' || round >= 5) throw err
      }
    }
  }

  /** Drives one pending intent until it is final. */
  async function drive(start: JournaledTx, signal: AbortSignal): Promise<TxSendResult> {
    let tx = start
    if (tx.status !== 'pending') return toResult(tx)
    // What this process broadcast last and when; a restarted process re-broadcasts first.
    let current: { hash: Hex; sinceMs: number; accepted: boolean } | undefined
    let minedIn: Hex | undefined
    let capWarned = false
    for (;;) {
      rethrowAbort(signal)
      try {
        const receipt = await findReceipt(tx)
        if (receipt !== undefined) {
          if (minedIn !== receipt.blockHash) {
            log.info({ key: tx.key, hash: receipt.transactionHash, block: receipt.blockNumber.toString() }, 'transaction mined')
            minedIn = receipt.blockHash
          }
          const head = await rpc.getBlockNumber()
          if (head - receipt.blockNumber + 1n >= BigInt(confirmations)) {
            // Still canonical? The block at that height must be the receipt's, and the receipt unchanged.
            const [block, again] = await Promise.all([rpc.getBlock({ blockNumber: receipt.blockNumber }), receiptOf(receipt.transactionHash)])
            if (block.hash === receipt.blockHash && again?.blockHash === receipt.blockHash) {
              const status = receipt.status === 'success' ? 'confirmed' : 'reverted'
              const outcome = {
                txHash: receipt.transactionHash,
                blockNumber: receipt.blockNumber,
                blockHash: receipt.blockHash,
                gasUsed: receipt.gasUsed,
                effectiveGasPrice: receipt.effectiveGasPrice,
              }
              await journal.finish(tx.key, status, outcome)
              log.info({ key: tx.key, hash: outcome.txHash, block: outcome.blockNumber.toString(), status }, 'intent final')
              return toResult({ ...tx, status, outcome })
            }
          }
        } else {
          if (minedIn !== undefined) {
            log.warn({ key: tx.key, block: minedIn }, 'L1 reorg dropped the transaction; re-broadcasting')
            minedIn = undefined
            current = undefined
          }
          const latestNonce = await rpc.getTransactionCount({ address: account.address, blockTag: 'latest' })
          if (latestNonce > tx.nonce) {
            tx = await checkForeignNonce(tx)
          } else {
            const latest = tx.attempts[tx.attempts.length - 1]
            if (latest === undefined) throw new Error(`intent ${tx.key} has no attempts`)
            if (current === undefined || current.hash !== latest.hash) current = { hash: latest.hash, sinceMs: Date.now(), accepted: false }
            // A transaction a node refused (e.g. "max fee per gas less than block base fee")
            // is retried each round and bumped on the same clock as one that is stuck.
            if (Date.now() - current.sinceMs < resubmitAfterMs) {
              if (!current.accepted) current.accepted = await broadcast(tx, latest)
            } else {
              const fees = await replacementFees(latest)
              if (fees === undefined) {
                if (!capWarned) log.warn({ key: tx.key, cap: cap.toString() }, 'transaction stuck and maxFeePerGasCap forbids another bump; re-broadcasting')
                capWarned = true
                current = { hash: latest.hash, sinceMs: Date.now(), accepted: await broadcast(tx, latest) }
              } else {
                const next = await sign(tx, latest.nonce, fees, tx.attempts.length + 1)
                await journal.addAttempt(tx.key, next)
                tx = { ...tx, attempts: [...tx.attempts, next] }
                log.info({ key: tx.key, nonce: next.nonce, attempt: next.attempt, maxFeePerGas: fees.maxFeePerGas.toString() }, 'fee bump')
                current = { hash: next.hash, sinceMs: Date.now(), accepted: await broadcast(tx, next) }
              }
            }
          }
        }
      } catch (err) {
        if (signal.aborted) rethrowAbort(signal)
        if (err instanceof ProoflineError && !err.retryable) throw err
        log.warn({ key: tx.key, error: errorMessage(err).split('\n')[0] }, 'tx manager round failed; retrying')
      }
      try {
        await sleep(pollIntervalMs, undefined, { signal })
      } catch {
        rethrowAbort(signal)
      }
    }
  }

  /**
   * The account's nonce passed the intent's and none of its transactions has a receipt. Either
   * one was mined after the receipt check (seen next round) or a transaction the journal does
   * not know used the nonce: once that is `confirmations` deep, the intent's own transactions
   * can never be mined, so it moves to a new nonce (it would otherwise be skipped).
   */
  async function checkForeignNonce(tx: JournaledTx): Promise<JournaledTx> {
    const head = await rpc.getBlockNumber()
    const depthBlock = head - BigInt(confirmations) + 1n
    if (depthBlock < 0n) return tx
    const atDepth = await rpc.getTransactionCount({ address: account.address, blockNumber: depthBlock })
    if (atDepth <= tx.nonce) return tx
    if ((await findReceipt(tx)) !== undefined) return tx
    return reassign(tx)
  }

  async function recoverAll(signal: AbortSignal): Promise<void> {
    await ensureReady()
    for (const tx of await journal.pending(chainId, from)) {
      log.info({ key: tx.key, nonce: tx.nonce, attempts: tx.attempts.length }, 'resuming journaled intent')
      try {
        await drive(tx, signal)
      } catch (err) {
        // A reverted intent is final and recorded; recovery goes on with the next one.
        if (!(err instanceof TxError && err.code === 'TX_REVERTED')) throw err
      }
    }
    recovered = true
  }

  return {
    send(intent, sendOpts) {
      return exclusive(async () => {
        checkOpen()
        const signal = combined(sendOpts?.signal)
        if (!recovered) await recoverAll(signal)
        return drive(await admit(intent), signal)
      })
    },
    recover(recoverOpts) {
      return exclusive(async () => {
        checkOpen()
        await recoverAll(combined(recoverOpts?.signal))
      })
    },
    async close() {
      closed = true
      closing.abort()
      await tail
    },
  }
}
