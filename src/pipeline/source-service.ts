import type { SourceConfig } from '../config/schema.js'
import { crashPoint } from '../core/crash.js'
import { errorMessage, isRetryable } from '../core/errors.js'
import type { BlockMessage } from '../core/types.js'
import type { ReorgNotice } from '../sources/types.js'
import { syntheticBlock } from '../sources/synthetic.js'
import type { PipelineContext } from './context.js'
import { BLOCKS_SUBJECT } from './messages.js'

const CURSOR = 'source.next'

type SyntheticSourceConfig = Extract<SourceConfig, { type: 'synthetic' }>

/** Publishes source blocks on `blocks`; resumes from its stored cursor after a restart. */
export interface SourceService {
  start(): void
  stop(): Promise<void>
  /** Resolves when the source has published its last block (never, without a limit). */
  readonly finished: Promise<void>
  /** Last block number this run will produce. */
  readonly endBlock: number
}

export interface SourceServiceOptions {
  /** Stop after this many blocks in total (counted from `startBlock`, across restarts). */
  untilBlocks?: number
  /** Reorg handling (the L2 watcher): invalidate downstream work before replacements come. */
  onReorg?: (notice: ReorgNotice) => Promise<void>
  /** Pause while this many published blocks are not yet recorded by the first collector. @default 5000 */
  maxAhead?: number
}

/**
 * The synthetic source as a service. Each block is published with id
 * `block:<number>:<hash>`, so re-publishing after a restart is deduplicated, while a
 * different block at the same height (a reorg) is a new message.
 */
export function syntheticSourceService(ctx: PipelineContext, cfg: SyntheticSourceConfig, opts: SourceServiceOptions = {}): SourceService {
  const endBlock = opts.untilBlocks !== undefined ? cfg.startBlock + opts.untilBlocks - 1 : Number.MAX_SAFE_INTEGER
  const maxAhead = opts.maxAhead ?? 5_000
  const abort = new AbortController()
  const log = ctx.log.child({ part: 'source' })
  let resolveFinished: () => void = () => {}
  const finished = new Promise<void>((r) => (resolveFinished = r))
  let loop: Promise<void> | undefined

  const sleep = (ms: number): Promise<void> =>
    new Promise((r) => {
      const t = setTimeout(r, ms)
      abort.signal.addEventListener('abort', () => { clearTimeout(t); r() }, { once: true })
    })

  async function run(): Promise<void> {
    let next = Number((await ctx.state.getMeta(CURSOR)) ?? cfg.startBlock)
    const t0 = Date.now()
    const n0 = next
    // Blocks per tick; at 0 blocks/s the source runs as fast as backpressure allows.
    const batch = cfg.blocksPerSecond === 0 ? 200 : Math.max(1, Math.ceil(cfg.blocksPerSecond / 20))

    /** Publishes one tick of blocks from `from`; returns the next block number. */
    async function tick(from: number): Promise<number> {
      // The highest block stored (an index lookup, not a count of every block row: this runs every tick).
      const latest = await ctx.state.latestBlock()
      if (latest !== undefined && from - 1 - latest > maxAhead) {
        await sleep(50)
        return from
      }
      const upto = Math.min(endBlock, from + batch - 1)
      // Publishing a tick's blocks at once lets the bus commit them together; the cursor
      // moves only after all of them are stored, so a crash re-publishes (deduplicated).
      const publishes: Promise<unknown>[] = []
      for (let n = from; n <= upto; n++) {
        const block: BlockMessage = syntheticBlock(cfg, n)
        publishes.push(ctx.bus.publish<BlockMessage>(BLOCKS_SUBJECT, { id: `block:${n}:${block.hash}`, data: block }))
      }
      await Promise.all(publishes)
      crashPoint('source.after-publish')
      await ctx.state.setMeta(CURSOR, String(upto + 1))
      if (cfg.blocksPerSecond > 0) {
        const wait = t0 + ((upto + 1 - n0) / cfg.blocksPerSecond) * 1000 - Date.now()
        if (wait > 0) await sleep(wait)
      }
      return upto + 1
    }

    let failures = 0
    while (!abort.signal.aborted && next <= endBlock) {
      try {
        next = await tick(next)
        failures = 0
      } catch (err) {
        // A bus or database outage: retry the same blocks (publishes are deduplicated);
        // anything not retryable stops the run.
        if (!isRetryable(err)) throw err
        failures++
        const delay = Math.min(5_000, 100 * 2 ** Math.min(failures, 6))
        log.warn({ err: errorMessage(err), next, retryInMs: delay }, 'source publish failed; retrying')
        await sleep(delay)
      }
    }
    if (next > endBlock) {
      log.info({ endBlock }, 'source finished')
      resolveFinished()
    }
  }

  return {
    endBlock,
    finished,
    start() {
      loop = run().catch((err: unknown) => ctx.fatal(err, 'source'))
    },
    async stop() {
      abort.abort()
      await loop
    },
  }
}
