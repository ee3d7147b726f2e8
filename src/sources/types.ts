import type { BlockMessage } from '../core/types.js'

/** What a block source reports when the chain it follows reorganised. */
export interface ReorgNotice {
  /** The lowest block number whose block was replaced; every block ≥ it is orphaned. */
  fromBlock: number
  /** Hashes of the orphaned blocks the source had published, by number. */
  orphaned: { number: number; hash: string }[]
  depth: number
}

/**
 * Where blocks come from: the synthetic generator, or the L2 watcher. A source publishes
 * `BlockMessage`s through `emit` in increasing block order (after a reorg it re-emits from
 * the fork point), resumes from its own durable cursor after a restart, and reports reorgs
 * before re-emitting the replacement blocks.
 */
export interface BlockSourceSink {
  /** Publishes blocks durably (resolves when stored on the bus). */
  emit(blocks: BlockMessage[]): Promise<void>
  /** Called before replacement blocks are emitted; resolves when downstream work is invalidated. */
  reorg(notice: ReorgNotice): Promise<void>
  /** Durable key-value storage for the source's cursor. */
  getCursor(): Promise<string | undefined>
  setCursor(value: string): Promise<void>
}
