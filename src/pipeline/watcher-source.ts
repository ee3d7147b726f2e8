import { l2Watcher } from '../chain/watcher.js'
import { httpChainRpc } from '../chain/traces.js'
import type { SourceConfig } from '../config/schema.js'
import { errorMessage } from '../core/errors.js'
import type { BlockMessage } from '../core/types.js'
import type { PipelineContext } from './context.js'
import { BLOCKS_SUBJECT } from './messages.js'
import type { SourceService, SourceServiceOptions } from './source-service.js'

type L2SourceConfig = Extract<SourceConfig, { type: 'l2' }>

const CURSOR = 'source.watcher'

/**
 * The L2 watcher as the pipeline's block source: blocks are published on `blocks` (id
 * `block:<number>:<hash>`, so a re-emit is deduplicated and a replaced block is new); a reorg
 * first invalidates downstream work (`onReorg`), then the replacement blocks follow. The
 * watcher's cursor (next block and recent hashes) lives in the state store.
 */
export function watcherSourceService(ctx: PipelineContext, cfg: L2SourceConfig, opts: SourceServiceOptions = {}): SourceService & { stats(): ReturnType<ReturnType<typeof l2Watcher>['stats']> } {
  const endBlock = opts.untilBlocks !== undefined ? cfg.startBlock + opts.untilBlocks - 1 : Number.MAX_SAFE_INTEGER
  const log = ctx.log.child({ part: 'watcher' })
  const watcher = l2Watcher({
    client: httpChainRpc(cfg.rpcUrl),
    artifacts: ctx.artifacts,
    safety: cfg.safety,
    startBlock: cfg.startBlock,
    pollIntervalMs: cfg.pollIntervalMs,
    maxBlocksPerTick: cfg.maxBlocksPerTick,
    traces: cfg.traces,
    maxReorgDepth: cfg.maxReorgDepth,
    cost: cfg.cost,
    ...(opts.untilBlocks !== undefined ? { untilBlock: endBlock } : {}),
    log,
    sink: {
      async emit(blocks: BlockMessage[]) {
        await Promise.all(blocks.map((b) => ctx.bus.publish<BlockMessage>(BLOCKS_SUBJECT, { id: `block:${b.number}:${b.hash}`, data: b })))
      },
      async reorg(notice) {
        log.warn({ fromBlock: notice.fromBlock, depth: notice.depth }, 'L2 reorg: invalidating downstream work')
        await opts.onReorg?.(notice)
      },
      getCursor: () => ctx.state.getMeta(CURSOR),
      setCursor: (value) => ctx.state.setMeta(CURSOR, value),
    },
  })
  let resolveFinished: () => void = () => {}
  const finished = new Promise<void>((r) => (resolveFinished = r))
  return {
    endBlock,
    finished,
    stats: () => watcher.stats(),
    start() {
      watcher.start()
      watcher.finished.then(
        () => {
          if (watcher.state() === 'finished') resolveFinished()
        },
        (err: unknown) => ctx.fatal(err, `watcher: ${errorMessage(err)}`),
      )
    },
    stop: () => watcher.stop(),
  }
}
