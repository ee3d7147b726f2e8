/**
 * The collector port: a pure, deterministic, in-memory state machine that groups items into
 * jobs. It does no I/O and never reads the clock (`now` is passed in, in ms), so the
 * orchestrator can persist its inputs and outputs and rebuild it after a crash:
 *
 * 1. persist the item, ack its bus message, then `add` it;
 * 2. `poll(now)`; persist each closed group (job + consumed items + superseded items +
 *    `cursor()`) in one transaction;
 * 3. after a crash, `restore(openItems, cursor)` from what was persisted.
 *
 * Given the same calls, a collector restored from its persisted state behaves exactly like one
 * that never stopped.
 */
import type { CollectorItem } from '../../state/types.js'

export type { CollectorItem } from '../../state/types.js'

/** Why a group closed. */
export type CloseReason = 'count' | 'capacity' | 'timeout' | 'over-capacity' | 'inputs'

/** A group of items that becomes one job. */
export interface ClosedGroup {
  /** The items, in key order (sequential) or in (receivedAt, id) order (match). */
  items: CollectorItem[]
  reason: CloseReason
  /** Summed `cost` of the items. */
  cost: number
  /** True only for a group of one item whose own cost exceeds the capacity. */
  overCapacity: boolean
  /** Lowest `start` of the items. */
  first: number
  /** Highest `end` of the items. */
  last: number
  /** Match only: true when the group closed by timeout with fewer than `inputs` items. */
  partial?: boolean
  /**
   * Open items dropped because this group now covers their start (an overlapping alternative
   * range, e.g. from before a split or a reorg). Persist them as consumed in the same
   * transaction as the group, or `restore` will drop them again. Absent when none.
   */
  superseded?: CollectorItem[]
}

/** The result of `add`. */
export type AddOutcome =
  | {
      accepted: true
      /** The open item this one replaced (same start, or same source in a match group); mark it consumed. */
      replaced?: CollectorItem
    }
  | {
      accepted: false
      /**
       * - `duplicate`: an open item (or one it replaced) has the same id.
       * - `behind-cursor`: the key is already covered by a closed group.
       * - `invalid`: malformed keys, cost or timestamp, or missing match fields.
       */
      reason: 'duplicate' | 'behind-cursor' | 'invalid'
    }

/** Groups items into jobs by a strategy. Implementations are pure and synchronous. */
export interface Collector {
  readonly strategy: 'sequential' | 'match'
  /**
   * Replaces in-memory state with what was persisted. Items are applied in `receivedAt` order
   * (ties keep their given order), so the last-received of two rival items wins, as with `add`.
   * Returns the items it did not keep (behind the cursor, superseded, duplicate or invalid):
   * the orchestrator may mark them consumed.
   * @throws ProoflineError `COLLECTOR_CURSOR_INVALID` (not retryable) for a malformed cursor.
   */
  restore(openItems: CollectorItem[], cursor: string | undefined): CollectorItem[]
  /** Holds an item. Never closes a group (only `poll` does), never throws. */
  add(item: CollectorItem, now: number): AddOutcome
  /** Closes and removes every group that is ready at `now`, in key order; advances the cursor. */
  poll(now: number): ClosedGroup[]
  /** The durable cursor to persist with the groups just closed (undefined when the strategy has none). */
  cursor(): string | undefined
  /**
   * Earliest time at which `poll` could close a group by timeout, assuming no further `add`;
   * undefined when no timeout is pending. A group that is ready by count, capacity or inputs is
   * closed by the next `poll` whatever its time.
   */
  nextDeadline(): number | undefined
  /** Items held (open). */
  size(): number
}
