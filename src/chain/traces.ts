/**
 * What the watcher fetches for one L2 block, and the artifact it stores: the full block JSON
 * (every header field, for RLP and the output root), its receipts, its prestate trace (the
 * witness a stateless prover reads) and the account proof of the L2ToL1MessagePasser
 * predeploy (its `storageHash` is the output root's `messagePasserStorageRoot`).
 *
 * Everything after the header is fetched by block *hash*, not number, so the pieces of one
 * artifact always describe the same block even if the chain reorganises mid-fetch (a
 * vanished hash fails the fetch, and the watcher re-reads the canonical block).
 */
import { createPublicClient, http, type Hex } from 'viem'
import type { ArtifactStore } from '../artifacts/types.js'
import { ProoflineError } from '../core/errors.js'
import { canonicalJson } from '../core/ids.js'
import type { ArtifactRef } from '../core/types.js'
import { EMPTY_STORAGE_ROOT, verifyAccountStorageRoot } from './output-root.js'

/** The OP Stack L2ToL1MessagePasser predeploy. */
export const MESSAGE_PASSER_ADDRESS: Hex = '0x4200000000000000000000000000000000000016'

/** The `format` field of every trace artifact; bumped on an incompatible change. */
export const TRACE_ARTIFACT_FORMAT = 'proofline/l2-block-trace@1'

/** The artifact-store prefix trace artifacts are stored under. */
export const TRACE_ARTIFACT_PREFIX = 'traces'

/**
 * The subset of an EIP-1193 / viem client the chain code uses: one JSON-RPC call. A viem
 * client fits through {@link chainRpc}; tests can pass a fake that fails on demand.
 */
export interface ChainRpc {
  /** Sends one JSON-RPC request; rejects with the node's error (its `code` kept) or a transport error. */
  request(args: { method: string; params?: readonly unknown[] }): Promise<unknown>
}

/** Adapts any viem client (public, test or wallet) to {@link ChainRpc}. */
export function chainRpc(client: { request: (...args: never[]) => Promise<unknown> }): ChainRpc {
  // viem types `request` per RPC schema; the watcher checks every result's shape itself.
  const request = client.request as unknown as ChainRpc['request']
  return { request: (args) => request(args) }
}

/** Options of {@link httpChainRpc}. */
export interface HttpChainRpcOptions {
  /**
   * Per-request timeout of the HTTP transport.
   * @default 30_000
   */
  timeoutMs?: number
}

/**
 * A {@link ChainRpc} over HTTP (viem's `http` transport) with the transport's own retries
 * off: the watcher retries with its own backoff and must see every failure.
 */
export function httpChainRpc(url: string, opts: HttpChainRpcOptions = {}): ChainRpc {
  const client = createPublicClient({ transport: http(url, { retryCount: 0, timeout: opts.timeoutMs ?? 30_000 }) })
  return chainRpc(client)
}

/** Codes of {@link ChainRpcError}. */
export type ChainRpcErrorCode =
  /** The call failed (transport, timeout, node error); retry. */
  | 'CHAIN_RPC'
  /** The node does not implement the method or block tag; retrying cannot help. */
  | 'CHAIN_RPC_UNSUPPORTED'
  /** The node returned something that is not what the method promises. */
  | 'CHAIN_RPC_INVALID'
  /** Pieces fetched for one block disagree (a reorg under the fetch); retry re-reads the block. */
  | 'CHAIN_INCONSISTENT'

/** A JSON-RPC call to the chain failed. `retryable` tells the watcher whether to back off and retry. */
export class ChainRpcError extends ProoflineError {
  constructor(code: ChainRpcErrorCode, message: string, opts: { retryable: boolean; details?: Record<string, unknown>; cause?: unknown }) {
    super(code, message, opts)
  }
}

const UNSUPPORTED_CODES = new Set([-32601, -32004])

/** The JSON-RPC error code of a thrown value, looking through viem's `cause` chain. */
export function rpcErrorCode(err: unknown): number | undefined {
  let e: unknown = err
  for (let depth = 0; depth < 8 && e !== null && typeof e === 'object'; depth++) {
    const code = (e as { code?: unknown }).code
    if (typeof code === 'number') return code
    e = (e as { cause?: unknown }).cause
  }
  return undefined
}

/** Options of {@link rpcRequest}. */
export interface RpcRequestOptions {
  signal?: AbortSignal
  /** Give up (retryably) after this long. @default 30_000 */
  timeoutMs?: number
  /** Added to the error message when the node lacks the method. */
  unsupportedHint?: string
}

/**
 * One JSON-RPC call, bounded by a timeout and abortable: on abort it rejects at once with the
 * signal's reason (the request itself finishes in the background and is ignored). Failures
 * become {@link ChainRpcError}: "method not found" is not retryable, anything else is.
 */
export function rpcRequest(rpc: ChainRpc, method: string, params: readonly unknown[], opts: RpcRequestOptions = {}): Promise<unknown> {
  const { signal } = opts
  const timeoutMs = opts.timeoutMs ?? 30_000
  if (signal?.aborted) return Promise.reject(signal.reason as Error)
  return new Promise((resolve, reject) => {
    const cleanup = (): void => {
      clearTimeout(timer)
      signal?.removeEventListener('abort', onAbort)
    }
    const onAbort = (): void => {
      cleanup()
      reject(signal?.reason as Error)
    }
    const timer = setTimeout(() => {
      cleanup()
      reject(new ChainRpcError('CHAIN_RPC', `${method} timed out after ${timeoutMs} ms`, { retryable: true, details: { method, timeoutMs } }))
    }, timeoutMs)
    signal?.addEventListener('abort', onAbort, { once: true })
    let pending: Promise<unknown>
    try {
      pending = rpc.request({ method, params })
    } catch (err) {
      pending = Promise.reject(err as Error)
    }
    pending.then(
      (value) => {
        cleanup()
        resolve(value)
      },
      (err: unknown) => {
        cleanup()
        reject(classifyRpcError(method, err, opts.unsupportedHint))
      },
    )
  })
}

function classifyRpcError(method: string, err: unknown, hint: string | undefined): ChainRpcError {
  if (err instanceof ChainRpcError) return err
  const code = rpcErrorCode(err)
  const message = err instanceof Error ? (err as { shortMessage?: string }).shortMessage ?? err.message : String(err)
  if (code !== undefined && UNSUPPORTED_CODES.has(code)) {
    return new ChainRpcError('CHAIN_RPC_UNSUPPORTED', `the L2 node does not support ${method}${hint ? `: ${hint}` : ''}`, {
      retryable: false,
      details: { method, code },
      cause: err,
    })
  }
  return new ChainRpcError('CHAIN_RPC', `${method} failed: ${message}`, { retryable: true, details: { method, code }, cause: err })
}

/**
 * A block as `eth_getBlockByNumber(n, true)` returns it: hex quantities, unmodified. The
 * fields named here are checked; every other header field (receiptsRoot, logsBloom,
 * baseFeePerGas, withdrawalsRoot, …) is kept as the node sent it, for RLP.
 */
export interface RpcBlockJson {
  number: Hex
  hash: Hex
  parentHash: Hex
  stateRoot: Hex
  receiptsRoot: Hex
  transactionsRoot: Hex
  timestamp: Hex
  gasUsed: Hex
  gasLimit: Hex
  /** Full transaction objects (hydrated), in block order. */
  transactions: unknown[]
  [field: string]: unknown
}

/** A receipt as `eth_getBlockReceipts` returns it (hex quantities, unmodified). */
export interface RpcReceiptJson {
  transactionHash: Hex
  blockHash: Hex
  status?: Hex
  gasUsed: Hex
  [field: string]: unknown
}

/** `eth_getProof(MESSAGE_PASSER_ADDRESS, [], block)` as the node returns it. */
export interface RpcAccountProofJson {
  address: Hex
  accountProof: Hex[]
  balance: Hex
  codeHash: Hex
  nonce: Hex
  /** The account's storage trie root: the output root's `messagePasserStorageRoot`. */
  storageHash: Hex
  storageProof: unknown[]
}

/**
 * The trace artifact of one block, stored as canonical JSON (sorted keys) under
 * `traces/<sha256>`. Node responses are kept verbatim so a later stage can re-encode the
 * header, check receipts against `receiptsRoot`, or verify the account proof against
 * `stateRoot`.
 */
export interface BlockTraceArtifact {
  format: typeof TRACE_ARTIFACT_FORMAT
  number: number
  hash: Hex
  /** `eth_getBlockByNumber(number, true)`. */
  block: RpcBlockJson
  /** `eth_getBlockReceipts(hash)`, one per transaction, in block order. */
  receipts: RpcReceiptJson[]
  /** The tracer used for `prestate`, or null when traces are off. */
  tracer: 'prestateTracer' | null
  /**
   * `debug_traceBlockByHash(hash, { tracer: 'prestateTracer' })`: per transaction
   * `{ txHash, result }` where `result` maps each touched account to its state before the tx.
   */
  prestate: unknown[] | null
  /** The message passer's account proof at this block. */
  messagePasser: RpcAccountProofJson
}

/** What the OP Stack v0 output root of a block is computed from. */
export interface OutputRootInputs {
  stateRoot: Hex
  messagePasserStorageRoot: Hex
  blockHash: Hex
}

const HASH = /^0x[0-9a-fA-F]{64}$/
const QUANTITY = /^0x[0-9a-fA-F]+$/

// Retryable: a garbled answer (a broken proxy, a node restarting) is retried with backoff and
// never used; a node that keeps answering garbage shows up as repeated errors in the logs.
function invalid(method: string, why: string, details: Record<string, unknown> = {}): ChainRpcError {
  return new ChainRpcError('CHAIN_RPC_INVALID', `${method} returned an invalid result: ${why}`, { retryable: true, details: { method, ...details } })
}

/** Checks the fields the watcher relies on; returns null for a missing block (`null` result). */
export function parseRpcBlock(value: unknown, method = 'eth_getBlockByNumber'): RpcBlockJson | null {
  if (value === null || value === undefined) return null
  if (typeof value !== 'object' || Array.isArray(value)) throw invalid(method, 'not an object')
  const b = value as Record<string, unknown>
  for (const key of ['hash', 'parentHash', 'stateRoot', 'receiptsRoot', 'transactionsRoot'] as const) {
    if (typeof b[key] !== 'string' || !HASH.test(b[key])) throw invalid(method, `${key} is not a 32-byte hex string`, { [key]: b[key] })
  }
  for (const key of ['number', 'timestamp', 'gasUsed', 'gasLimit'] as const) {
    if (typeof b[key] !== 'string' || !QUANTITY.test(b[key])) throw invalid(method, `${key} is not a hex quantity`, { [key]: b[key] })
  }
  if (!Array.isArray(b.transactions)) throw invalid(method, 'transactions is not an array')
  return b as RpcBlockJson
}

/** A hex quantity as a safe integer. */
export function hexToSafeNumber(value: Hex, what: string): number {
  const n = Number(BigInt(value))
  if (!Number.isSafeInteger(n)) throw new RangeError(`${what} ${value} is not a safe integer`)
  return n
}

/** Options of {@link fetchBlockTrace}. */
export interface FetchBlockTraceOptions {
  /** `'prestate'` runs `debug_traceBlockByHash` with the prestateTracer; `'none'` skips it. @default 'prestate' */
  traces?: 'prestate' | 'none'
  signal?: AbortSignal
  /** @default 30_000 */
  timeoutMs?: number
}

/**
 * Fetches receipts, prestate trace and message-passer proof of an already-fetched block (by
 * its hash) and checks they belong to it. Throws a retryable `CHAIN_INCONSISTENT` when they
 * do not (the block was reorged out during the fetch).
 */
export async function fetchBlockTrace(rpc: ChainRpc, block: RpcBlockJson, opts: FetchBlockTraceOptions = {}): Promise<BlockTraceArtifact> {
  const traces = opts.traces ?? 'prestate'
  const ro: RpcRequestOptions = { timeoutMs: opts.timeoutMs ?? 30_000 }
  if (opts.signal) ro.signal = opts.signal
  const hash = block.hash
  const number = hexToSafeNumber(block.number, 'block number')
  const [receiptsRaw, traceRaw, proofRaw] = await Promise.all([
    rpcRequest(rpc, 'eth_getBlockReceipts', [hash], { ...ro, unsupportedHint: 'the watcher needs eth_getBlockReceipts (geth ≥ 1.13, reth, anvil)' }),
    traces === 'prestate'
      ? rpcRequest(rpc, 'debug_traceBlockByHash', [hash, { tracer: 'prestateTracer' }], {
          ...ro,
          unsupportedHint: "enable the node's debug API, or set the watcher's traces to 'none'",
        })
      : Promise.resolve(null),
    rpcRequest(rpc, 'eth_getProof', [MESSAGE_PASSER_ADDRESS, [], { blockHash: hash }], ro),
  ])
  const inconsistent = (why: string): ChainRpcError =>
    new ChainRpcError('CHAIN_INCONSISTENT', `block ${number} (${hash}) changed while it was fetched: ${why}`, {
      retryable: true,
      details: { number, hash },
    })

  if (receiptsRaw === null) throw inconsistent('eth_getBlockReceipts found no block with that hash')
  if (!Array.isArray(receiptsRaw)) throw invalid('eth_getBlockReceipts', 'not an array')
  const receipts = receiptsRaw as RpcReceiptJson[]
  if (receipts.length !== block.transactions.length) {
    throw inconsistent(`${receipts.length} receipts for ${block.transactions.length} transactions`)
  }
  for (const r of receipts) {
    if (r === null || typeof r !== 'object') throw invalid('eth_getBlockReceipts', 'a receipt is not an object')
    if (typeof r.blockHash === 'string' && r.blockHash.toLowerCase() !== hash.toLowerCase()) throw inconsistent(`a receipt belongs to block ${r.blockHash}`)
  }

  let prestate: unknown[] | null = null
  if (traces === 'prestate') {
    if (traceRaw === null) throw inconsistent('debug_traceBlockByHash found no block with that hash')
    if (!Array.isArray(traceRaw)) throw invalid('debug_traceBlockByHash', 'not an array')
    if (traceRaw.length !== block.transactions.length) throw inconsistent(`${traceRaw.length} traces for ${block.transactions.length} transactions`)
    prestate = traceRaw as unknown[]
  }

  if (proofRaw === null || typeof proofRaw !== 'object') throw inconsistent('eth_getProof found no block with that hash')
  const proof = proofRaw as RpcAccountProofJson
  if (typeof proof.storageHash !== 'string' || !HASH.test(proof.storageHash)) throw invalid('eth_getProof', 'storageHash is not a 32-byte hex string')
  if (!Array.isArray(proof.accountProof)) throw invalid('eth_getProof', 'accountProof is not an array')
  // The storage root goes into the output root: it must be proven against the block's state
  // root. (Anvil reports the empty-trie root for its genesis block; nothing can be proven there.)
  if (block.stateRoot.toLowerCase() !== EMPTY_STORAGE_ROOT) {
    let proven: string
    try {
      proven = verifyAccountStorageRoot(block.stateRoot, MESSAGE_PASSER_ADDRESS, proof.accountProof)
    } catch (err) {
      throw invalid('eth_getProof', `the account proof does not prove against block ${number}'s state root: ${(err as Error).message}`, { number, hash })
    }
    if (proven !== proof.storageHash.toLowerCase()) throw invalid('eth_getProof', `storageHash ${proof.storageHash} is not the one the account proof gives (${proven})`, { number, hash })
  }

  return {
    format: TRACE_ARTIFACT_FORMAT,
    number,
    hash,
    block,
    receipts,
    tracer: traces === 'prestate' ? 'prestateTracer' : null,
    prestate,
    messagePasser: proof,
  }
}

/** The artifact's bytes: canonical JSON (sorted keys), so the same block gives the same sha256. */
export function encodeBlockTrace(artifact: BlockTraceArtifact): Uint8Array {
  return new TextEncoder().encode(canonicalJson(artifact))
}

/** Parses and checks an artifact written by {@link encodeBlockTrace}. */
export function decodeBlockTrace(bytes: Uint8Array): BlockTraceArtifact {
  const value = JSON.parse(new TextDecoder().decode(bytes)) as Partial<BlockTraceArtifact> | null
  if (value === null || typeof value !== 'object' || value.format !== TRACE_ARTIFACT_FORMAT) {
    throw new ChainRpcError('CHAIN_RPC_INVALID', `not a ${TRACE_ARTIFACT_FORMAT} artifact`, { retryable: false })
  }
  parseRpcBlock(value.block, 'trace artifact block')
  return value as BlockTraceArtifact
}

/** Reads a trace artifact from the store (sha256-checked by the store) and decodes it. */
export async function readBlockTrace(store: ArtifactStore, ref: ArtifactRef, opts: { signal?: AbortSignal } = {}): Promise<BlockTraceArtifact> {
  return decodeBlockTrace(await store.get(ref, opts))
}

/** The three inputs of the block's OP Stack v0 output root, as stored in its trace artifact. */
export function outputRootInputs(artifact: BlockTraceArtifact): OutputRootInputs {
  return { stateRoot: artifact.block.stateRoot, messagePasserStorageRoot: artifact.messagePasser.storageHash, blockHash: artifact.hash }
}
