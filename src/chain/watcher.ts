/**
 * The L2 watcher: follows the chain at a safety level, stores one trace artifact per block,
 * publishes `BlockMessage`s through a {@link BlockSourceSink}, and reports reorgs before it
 * re-emits replacement blocks. See docs/watcher.md.
 */
import { setMaxListeners } from 'node:events'
import type { Hex } from 'viem'
import type { ArtifactStore } from '../artifacts/types.js'
import { errorMessage, isRetryable, ProoflineError } from '../core/errors.js'
import type { ArtifactRef, BlockMessage } from '../core/types.js'
import type { BlockSourceSink, ReorgNotice } from '../sources/types.js'
import { checkCostModel, estimateCost, type CostModel } from './cost.js'
import { headerHashMatches } from './header.js'
import {
  ChainRpcError,
  encodeBlockTrace,
  fetchBlockTrace,
  hexToSafeNumber,
  parseRpcBlock,
  rpcErrorCode,
  rpcRequest,
  TRACE_ARTIFACT_PREFIX,
  type ChainRpc,
  type RpcBlockJson,
} from './traces.js'

/**
 * Which blocks the watcher treats as ready:
 * - `latest` with `confirmations: N`: blocks up to `head − N` (N = 0 follows the tip).
 * - `safe` / `finalized`: blocks up to the node's `safe` / `finalized` block tag.
 */
export type SafetyLevel = { kind: 'latest'; confirmations: number } | { kind: 'safe' } | { kind: 'finalized' }

/** The subset of a logger (pino's signature) the watcher writes to. */
export interface WatcherLogger {
  info(obj: Record<string, unknown>, msg: string): void
  warn(obj: Record<string, unknown>, msg: string): void
  error(obj: Record<string, unknown>, msg: string): void
}

/** Options of {@link l2Watcher}. */
export interface L2WatcherOptions {
  /** The L2 node (see `chainRpc`, `httpChainRpc`). */
  client: ChainRpc
  /** Where trace artifacts go (prefix `traces`). */
  artifacts: ArtifactStore
  /** Where blocks, reorg notices and the cursor go. */
  sink: BlockSourceSink
  safety: SafetyLevel
  /** First block to emit on a fresh start; ignored when the sink holds a cursor. */
  startBlock: number
  /**
   * How long to wait when there is no new block.
   * @default 1000
   */
  pollIntervalMs?: number
  /**
   * Most blocks fetched and emitted per tick (one `emit` call, one cursor write).
   * @default 32
   */
  maxBlocksPerTick?: number
  /** The proving-cost model; see `src/chain/cost.ts`. */
  cost: CostModel
  /**
   * `'prestate'` stores the prestateTracer trace of each block; `'none'` stores header,
   * receipts and proof only (for nodes without the debug API).
   * @default 'prestate'
   */
  traces?: 'prestate' | 'none'
  /** Emit up to this block (inclusive), then resolve `finished` and stop. */
  untilBlock?: number
  /**
   * How many emitted block hashes are kept (and persisted) to detect reorgs. A reorg deeper
   * than this stops the watcher with `WATCHER_REORG_TOO_DEEP`.
   * @default 128
   */
  maxReorgDepth?: number
  /**
   * Backoff after a failed tick: starts at `initialMs`, doubles per consecutive failure, capped
   * at `maxMs` (±20% jitter). Retryable failures are retried forever; a block is never skipped.
   * @default { initialMs: 250, maxMs: 10_000 }
   */
  retry?: { initialMs?: number; maxMs?: number }
  /**
   * Per-RPC-call timeout.
   * @default 30_000
   */
  rpcTimeoutMs?: number
  /**
   * Blocks fetched at once within a tick (block, receipts, trace, proof, artifact write); they
   * are still checked and emitted in order.
   * @default 8
   */
  fetchConcurrency?: number
  /**
   * Recompute every block's hash from its header (keccak256 of the RLP) and reject a block
   * whose `hash` differs: a broken or hostile node (or proxy) cannot make the pipeline commit
   * to a hash that is not the header's. Such an answer is retried, never emitted. Turn off
   * only for a chain whose headers carry fields proofline does not know.
   * @default true
   */
  verifyHeaderHash?: boolean
  /** Defaults to warnings and errors on stderr. */
  log?: WatcherLogger
}

/** Counters of a running watcher. */
export interface WatcherStats {
  /** Reorgs handled (each one `sink.reorg` call). */
  rewinds: number
  /** Emitted blocks that reorgs orphaned, in total. */
  orphaned: number
  /** The last head seen at the safety level (`head − N`, or the safe/finalized block); −1 before the first poll. */
  head: number
  /** Blocks emitted, counting re-emissions after reorgs and restarts. */
  emitted: number
  /** The next block number to emit. */
  next: number
  /** Failed ticks (RPC, artifact store or sink errors) that were retried. */
  errors: number
}

/**
 * Lifecycle: `idle → running → stopped`, or `running → finished` (reached `untilBlock`),
 * or `running → failed` (a non-retryable error: `finished` rejects with it).
 */
export type WatcherState = 'idle' | 'running' | 'stopped' | 'finished' | 'failed'

/** A running L2 watcher. */
export interface L2Watcher {
  /** Starts the background loop; a second call is ignored. */
  start(): void
  /** Stops promptly: in-flight RPC calls are abandoned, a sink call in progress completes. */
  stop(): Promise<void>
  /**
   * Resolves when `untilBlock` has been emitted or the watcher was stopped; rejects when it
   * failed with a non-retryable error (too-deep reorg, unsupported RPC method or tag, bad
   * cursor).
   */
  readonly finished: Promise<void>
  stats(): WatcherStats
  state(): WatcherState
}

/** Why the watcher stopped on its own. */
export class WatcherError extends ProoflineError {
  constructor(code: 'WATCHER_REORG_TOO_DEEP' | 'WATCHER_BAD_CURSOR' | 'WATCHER_BAD_OPTIONS', message: string, details: Record<string, unknown> = {}, cause?: unknown) {
    super(code, message, { retryable: false, details, cause })
  }
}

/**
 * The persisted cursor: the next block to emit and the hashes of the last emitted blocks
 * (`hashes[i]` is block `next − hashes.length + i`). `start` is the first block this watcher
 * ever emitted, so a reorg reaching below every stored hash can still be handled when the
 * hashes go back to it.
 */
export interface WatcherCursor {
  v: 1
  next: number
  start: number
  hashes: Hex[]
}

/** Parses a cursor written by the watcher; throws `WATCHER_BAD_CURSOR` otherwise. */
export function parseWatcherCursor(text: string): WatcherCursor {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (err) {
    throw new WatcherError('WATCHER_BAD_CURSOR', 'the stored watcher cursor is not JSON; delete it to restart from startBlock', { text }, err)
  }
  const c = value as Partial<WatcherCursor> | null
  const ok =
    c !== null &&
    typeof c === 'object' &&
    c.v === 1 &&
    Number.isSafeInteger(c.next) &&
    Number.isSafeInteger(c.start) &&
    Array.isArray(c.hashes) &&
    c.hashes.every((h) => typeof h === 'string' && /^0x[0-9a-fA-F]{64}$/.test(h)) &&
    (c.next as number) - c.hashes.length >= (c.start as number)
  if (!ok) throw new WatcherError('WATCHER_BAD_CURSOR', 'the stored watcher cursor is malformed; delete it to restart from startBlock', { text })
  return c as WatcherCursor
}

const stderrLogger: WatcherLogger = {
  info() {},
  warn(obj, msg) {
    console.warn(`[proofline watcher] ${msg}`, obj)
  },
  error(obj, msg) {
    console.error(`[proofline watcher] ${msg}`, obj)
  },
}

// Signals that the chain changed under a tick; the loop re-runs at once.
const AGAIN = Symbol('again')

/**
 * Creates an L2 watcher. Guarantees:
 * - blocks are emitted in increasing order, each one's `parentHash` the previous one's `hash`
 *   (also across restarts, through the persisted cursor);
 * - a block is never skipped: a failing RPC call, artifact write or sink call is retried
 *   with backoff and the cursor moves only after `emit` resolved (so delivery is
 *   at-least-once: a crash between `emit` and the cursor write re-emits the same blocks);
 * - on a reorg, `sink.reorg` is awaited before any replacement block is emitted, and before
 *   the cursor forgets the orphaned hashes (a crash in between reports the reorg again).
 */
export function l2Watcher(opts: L2WatcherOptions): L2Watcher {
  const rpc = opts.client
  const sink = opts.sink
  const pollIntervalMs = opts.pollIntervalMs ?? 1000
  const maxPerTick = opts.maxBlocksPerTick ?? 32
  const maxDepth = opts.maxReorgDepth ?? 128
  const traces = opts.traces ?? 'prestate'
  const retryInitialMs = opts.retry?.initialMs ?? 250
  const retryMaxMs = opts.retry?.maxMs ?? 10_000
  const rpcTimeoutMs = opts.rpcTimeoutMs ?? 30_000
  const log = opts.log ?? stderrLogger
  const verifyHeaderHash = opts.verifyHeaderHash ?? true
  const fetchConcurrency = opts.fetchConcurrency ?? 8
  const cost = checkCostModel(opts.cost)
  checkOptions(opts, maxPerTick, maxDepth)

  const abort = new AbortController()
  const signal = abort.signal
  // Every concurrent RPC call and artifact write listens on it (fetchConcurrency × a few).
  setMaxListeners(0, signal)
  let state: WatcherState = 'idle'
  let loop: Promise<void> | undefined
  const stats: WatcherStats = { rewinds: 0, orphaned: 0, head: -1, emitted: 0, next: opts.startBlock, errors: 0 }

  // The cursor in memory: `hashes[i]` is block `next - hashes.length + i`.
  let next = opts.startBlock
  let start = opts.startBlock
  let hashes: Hex[] = []

  let settle: { resolve: () => void; reject: (err: unknown) => void } = { resolve: () => {}, reject: () => {} }
  const finished = new Promise<void>((resolve, reject) => (settle = { resolve, reject }))
  // A caller that never awaits `finished` must not turn a failure into an unhandled rejection.
  finished.catch(() => undefined)

  const call = (method: string, params: readonly unknown[], hint?: string): Promise<unknown> =>
    rpcRequest(rpc, method, params, hint === undefined ? { signal, timeoutMs: rpcTimeoutMs } : { signal, timeoutMs: rpcTimeoutMs, unsupportedHint: hint })

  function sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      if (signal.aborted) return resolve()
      const onAbort = (): void => {
        clearTimeout(t)
        resolve()
      }
      const t = setTimeout(() => {
        signal.removeEventListener('abort', onAbort)
        resolve()
      }, ms)
      signal.addEventListener('abort', onAbort, { once: true })
    })
  }

  async function getBlock(number: number, full: boolean): Promise<RpcBlockJson | null> {
    const block = parseRpcBlock(await call('eth_getBlockByNumber', [`0x${number.toString(16)}`, full]))
    if (block !== null && verifyHeaderHash) {
      const check = headerHashMatches(block)
      if (!check.ok) {
        throw new ChainRpcError(
          'CHAIN_RPC_INVALID',
          `eth_getBlockByNumber(${number}) returned block ${block.hash}, which is not its header's hash (${check.reason}): the L2 node or a proxy in front of it is broken or hostile; the block is not used and the call is retried. For a chain whose headers have fields proofline does not know, set source.verifyHeaderHash: false`,
          { retryable: true, details: { number, hash: block.hash } },
        )
      }
    }
    return block
  }

  /** The highest block number ready at the safety level, or −1 when none is. */
  async function safeHead(): Promise<number> {
    const s = opts.safety
    if (s.kind === 'latest') {
      const head = hexToSafeNumber((await call('eth_blockNumber', [])) as Hex, 'eth_blockNumber')
      return head - s.confirmations
    }
    let raw: unknown
    try {
      raw = await call('eth_getBlockByNumber', [s.kind, false])
    } catch (err) {
      const code = rpcErrorCode(err)
      // -32602 invalid params / -39001 unknown block: the node does not know the tag.
      if (err instanceof ChainRpcError && (err.code === 'CHAIN_RPC_UNSUPPORTED' || code === -32602 || code === -39001)) throw tagUnsupported(s.kind, err)
      throw err
    }
    const block = parseRpcBlock(raw)
    if (block === null) throw tagUnsupported(s.kind, undefined)
    return hexToSafeNumber(block.number, `${s.kind} block number`)
  }

  function tagUnsupported(tag: string, cause: unknown): ChainRpcError {
    return new ChainRpcError(
      'CHAIN_RPC_UNSUPPORTED',
      `the L2 node does not serve the '${tag}' block tag; set the watcher's safety to { kind: 'latest', confirmations: N } instead`,
      { retryable: false, details: { tag }, cause },
    )
  }

  async function loadCursor(): Promise<void> {
    const text = await sink.getCursor()
    if (text === undefined) return
    const c = parseWatcherCursor(text)
    next = c.next
    start = c.start
    hashes = c.hashes.slice(-maxDepth)
    stats.next = next
    log.info({ next, hashes: hashes.length }, 'watcher resumes from its cursor')
  }

  // False while the stored cursor is behind the one in memory (a failed write): the next tick
  // writes it first, so the stored cursor catches up even when no new block comes (found by
  // the chaos run: after a Postgres restart the stored cursor stayed behind while the chain
  // was idle).
  let cursorSaved = true
  async function saveCursor(): Promise<void> {
    const c: WatcherCursor = { v: 1, next, start, hashes }
    cursorSaved = false
    await sink.setCursor(JSON.stringify(c))
    cursorSaved = true
  }

  const tipNumber = (): number => next - 1
  const tipHash = (): Hex | undefined => hashes[hashes.length - 1]

  /**
   * Walks back through the stored hashes until the node agrees, reports the orphaned blocks,
   * and moves the cursor to the fork point.
   */
  async function rewind(reason: string): Promise<void> {
    const first = next - hashes.length
    let fork: number | undefined
    for (let i = hashes.length - 1; i >= 0; i--) {
      const number = first + i
      const canonical = await getBlock(number, false)
      if (canonical !== null && canonical.hash === hashes[i]) {
        fork = number + 1
        break
      }
    }
    if (fork === undefined) {
      if (first > start) {
        throw new WatcherError(
          'WATCHER_REORG_TOO_DEEP',
          `the L2 chain reorganised below block ${first}, deeper than the ${hashes.length} block hashes the watcher keeps; raise maxReorgDepth, or reset the watcher's cursor to restart from a block below the fork (its downstream work must be invalidated by hand)`,
          { first, next, maxReorgDepth: maxDepth },
        )
      }
      fork = first
    }
    const index = fork - first
    const orphaned = hashes.slice(index).map((hash, i) => ({ number: fork + i, hash }))
    if (orphaned.length === 0) {
      // Our tip is canonical after all (e.g. a lagging node behind a load balancer answered).
      log.warn({ reason, next }, 'chain looked reorganised but the emitted tip is canonical; re-reading')
      return
    }
    const notice: ReorgNotice = { fromBlock: fork, orphaned, depth: orphaned.length }
    log.warn({ fromBlock: fork, depth: notice.depth, reason }, 'L2 reorg: rewinding')
    await sink.reorg(notice)
    hashes = hashes.slice(0, index)
    next = fork
    stats.next = next
    stats.rewinds++
    stats.orphaned += orphaned.length
    await saveCursor()
  }

  /** One poll: emits up to `maxPerTick` ready blocks. Returns whether it made progress. */
  async function tick(): Promise<boolean | typeof AGAIN> {
    const head = await safeHead()
    stats.head = head
    let upto = Math.min(head, next + maxPerTick - 1)
    if (opts.untilBlock !== undefined) upto = Math.min(upto, opts.untilBlock)
    const tip = tipHash()
    if (upto < next) {
      // Nothing new. Check the emitted tip is still canonical, so a reorg that keeps the
      // height (or a head that moved backwards) is reported without waiting for a new block.
      if (tip !== undefined) {
        const canonical = await getBlock(tipNumber(), false)
        if (canonical === null || canonical.hash !== tip) {
          await rewind(canonical === null ? 'the head moved below the emitted tip' : 'the emitted tip was replaced')
          return AGAIN
        }
      }
      return false
    }

    const pending: { msg: BlockMessage; hash: Hex }[] = []
    let prev = tip
    /** A block with its trace stored, or null when the node does not have it (yet). */
    const fetchOne = async (n: number): Promise<{ block: RpcBlockJson; bytes: Uint8Array; ref: ArtifactRef } | null> => {
      const block = await getBlock(n, true)
      if (block === null) return null
      if (hexToSafeNumber(block.number, 'block number') !== n) throw new ChainRpcError('CHAIN_RPC_INVALID', `eth_getBlockByNumber(${n}) returned block ${block.number}`, { retryable: true })
      const artifact = await fetchBlockTrace(rpc, block, { traces, signal, timeoutMs: rpcTimeoutMs })
      const bytes = encodeBlockTrace(artifact)
      const ref = await opts.artifacts.put(bytes, { prefix: TRACE_ARTIFACT_PREFIX, signal })
      return { block, bytes, ref }
    }
    try {
      // Blocks are fetched `fetchConcurrency` at a time and checked in order: a block whose
      // parent is not the one before it (the chain changed mid-tick) ends the tick as before.
      window: for (let from = next; from <= upto && !signal.aborted; from += fetchConcurrency) {
        const to = Math.min(upto, from + fetchConcurrency - 1)
        const fetched = await Promise.allSettled(Array.from({ length: to - from + 1 }, (_, i) => fetchOne(from + i)))
        for (let i = 0; i < fetched.length; i++) {
          const n = from + i
          const f = fetched[i] as PromiseSettledResult<Awaited<ReturnType<typeof fetchOne>>>
          if (f.status === 'rejected') throw f.reason
          if (f.value === null) break window // the head moved back since safeHead(); the next tick sees it
          const { block, bytes, ref } = f.value
          if (prev !== undefined && block.parentHash !== prev) {
            if (pending.length === 0) {
              await rewind(`block ${n}'s parentHash ${block.parentHash} is not the emitted block ${n - 1} (${prev})`)
            }
            // Blocks fetched in this tick may be orphaned already: drop them and start over.
            return AGAIN
          }
          const gasUsed = hexToSafeNumber(block.gasUsed, 'gasUsed')
          const txCount = block.transactions.length
          pending.push({
            hash: block.hash,
            msg: {
              number: n,
              hash: block.hash,
              parentHash: block.parentHash,
              timestamp: hexToSafeNumber(block.timestamp, 'timestamp'),
              gasUsed,
              txCount,
              cost: estimateCost(cost, { gasUsed, txCount, traceBytes: bytes.byteLength }),
              trace: ref,
            },
          })
          prev = block.hash
        }
      }
    } catch (err) {
      // Keep the blocks this tick completed, so a flaky node still makes progress; the
      // original error is what the loop sees (and backs off on).
      if (pending.length > 0 && !signal.aborted) await emitPending(pending).catch(() => undefined)
      throw err
    }
    if (pending.length === 0) return false
    await emitPending(pending)
    return true
  }

  async function emitPending(pending: { msg: BlockMessage; hash: Hex }[]): Promise<void> {
    await sink.emit(pending.map((p) => p.msg))
    hashes = [...hashes, ...pending.map((p) => p.hash)].slice(-maxDepth)
    next += pending.length
    stats.next = next
    stats.emitted += pending.length
    await saveCursor()
  }

  async function run(): Promise<void> {
    let failures = 0
    let loaded = false
    while (!signal.aborted) {
      try {
        if (!loaded) {
          await loadCursor()
          loaded = true
        }
        if (opts.untilBlock !== undefined && next > opts.untilBlock) {
          state = 'finished'
          log.info({ untilBlock: opts.untilBlock }, 'watcher reached untilBlock')
          return
        }
        if (!cursorSaved) await saveCursor()
        const progressed = await tick()
        failures = 0
        if (progressed === false) await sleep(pollIntervalMs)
      } catch (err) {
        if (signal.aborted) return
        if (!isRetryable(err)) throw err
        failures++
        stats.errors++
        const base = Math.min(retryMaxMs, retryInitialMs * 2 ** Math.min(failures - 1, 20))
        const delayMs = Math.round(base * (0.8 + 0.4 * Math.random()))
        log.warn({ err: errorMessage(err), failures, delayMs, next }, 'watcher tick failed; retrying')
        await sleep(delayMs)
      }
    }
  }

  return {
    finished,
    start() {
      if (state !== 'idle') return
      state = 'running'
      loop = run().then(
        () => {
          if (state === 'running') state = 'stopped'
          settle.resolve()
        },
        (err: unknown) => {
          state = 'failed'
          log.error({ err: errorMessage(err), code: err instanceof ProoflineError ? err.code : undefined }, 'watcher stopped on an error')
          settle.reject(err)
        },
      )
    },
    async stop() {
      abort.abort(new Error('watcher stopped'))
      if (loop === undefined) {
        if (state === 'idle') state = 'stopped'
        settle.resolve()
        return
      }
      await loop
    },
    stats: () => ({ ...stats }),
    state: () => state,
  }
}

function checkOptions(opts: L2WatcherOptions, maxPerTick: number, maxDepth: number): void {
  const bad = (key: string, why: string): WatcherError => new WatcherError('WATCHER_BAD_OPTIONS', `watcher option '${key}' ${why}`, { key })
  if (!Number.isSafeInteger(opts.startBlock) || opts.startBlock < 0) throw bad('startBlock', 'must be a non-negative integer')
  if (opts.untilBlock !== undefined && (!Number.isSafeInteger(opts.untilBlock) || opts.untilBlock < opts.startBlock)) throw bad('untilBlock', 'must be an integer ≥ startBlock')
  if (!Number.isSafeInteger(maxPerTick) || maxPerTick < 1) throw bad('maxBlocksPerTick', 'must be a positive integer')
  if (!Number.isSafeInteger(maxDepth) || maxDepth < 1) throw bad('maxReorgDepth', 'must be a positive integer')
  if (opts.fetchConcurrency !== undefined && (!Number.isSafeInteger(opts.fetchConcurrency) || opts.fetchConcurrency < 1)) throw bad('fetchConcurrency', 'must be a positive integer')
  if (opts.safety.kind === 'latest' && (!Number.isSafeInteger(opts.safety.confirmations) || opts.safety.confirmations < 0)) {
    throw bad('safety.confirmations', 'must be a non-negative integer')
  }
}
