import type { ResolvedConfig } from '../config/load.js'
import { crashPoint } from '../core/crash.js'
import { errorMessage } from '../core/errors.js'
import type { BlockMessage } from '../core/types.js'
import { syntheticBlock } from '../sources/synthetic.js'
import type { PipelineContext } from './context.js'
import { BLOCKS_SUBJECT } from './messages.js'

const CURSOR = 'source.next'

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
  /** Pause while this many published blocks are not yet recorded by the first collector. @default 5000 */
  maxAhead?: number
}

/**
 * The synthetic source as a service. Each block is published with id
 * `block:<number>:<hash>`, so re-publishing after a restart is deduplicated, while a
 * different block at the same height (a reorg) is a new message.
 */
export function sourceService(ctx: PipelineContext, opts: SourceServiceOptions = {}): SourceService {
  const cfg: ResolvedConfig['source'] = ctx.config.source
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
    while (!abort.signal.aborted && next <= endBlock) {
      const stats = await ctx.state.blockStats()
      if (stats && next - 1 - stats.max > maxAhead) {
        await sleep(50)
        continue
      }
      const upto = Math.min(endBlock, next + batch - 1)
      // Publishing a tick's blocks at once lets the bus commit them together; the cursor
      // moves only after all of them are stored, so a crash re-publishes (deduplicated).
      const publishes: Promise<unknown>[] = []
      for (let n = next; n <= upto; n++) {
        const block: BlockMessage = syntheticBlock(cfg, n)
        publishes.push(ctx.bus.publish<BlockMessage>(BLOCKS_SUBJECT, { id: `block:${n}:${block.hash}`, data: block }))
      }
      await Promise.all(publishes)
      crashPoint('source.after-publish')
      next = upto + 1
      await ctx.state.setMeta(CURSOR, String(next))
      if (cfg.blocksPerSecond > 0) {
        const due = t0 + ((next - n0) / cfg.blocksPerSecond) * 1000
        const wait = due - Date.now()
        if (wait > 0) await sleep(wait)
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
