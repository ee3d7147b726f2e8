/** Helpers shared by the collector strategies (internal; not re-exported). */
import { ConfigError, ProoflineError } from '../../core/errors.js'
import type { ClosedGroup, CloseReason, CollectorItem } from './types.js'

/** Whether `item` has well-formed keys, cost and timestamp. */
export function isWellFormed(item: CollectorItem): boolean {
  return (
    typeof item.id === 'string' &&
    Number.isSafeInteger(item.start) &&
    Number.isSafeInteger(item.end) &&
    item.end >= item.start &&
    Number.isSafeInteger(item.end + 1) &&
    typeof item.cost === 'number' &&
    Number.isFinite(item.cost) &&
    item.cost >= 0 &&
    typeof item.receivedAt === 'number' &&
    Number.isFinite(item.receivedAt)
  )
}

/**
 * Orders persisted items the way they arrived: by `receivedAt`, ties in their given order.
 * Replaying them through `add` in this order rebuilds the state `add` built the first time.
 */
export function byArrival(items: readonly CollectorItem[]): CollectorItem[] {
  return items
    .map((item, i) => ({ item, i }))
    .sort((a, b) => a.item.receivedAt - b.item.receivedAt || a.i - b.i)
    .map(({ item }) => item)
}

/** Builds a group from its items (non-empty). */
export function group(items: CollectorItem[], reason: CloseReason, overCapacity: boolean): ClosedGroup {
  let cost = 0
  let first = Infinity
  let last = -Infinity
  for (const item of items) {
    cost += item.cost
    if (item.start < first) first = item.start
    if (item.end > last) last = item.end
  }
  return { items, reason, cost, overCapacity, first, last }
}

/** Throws ConfigError unless `value` is undefined or a number accepted by `ok`. */
export function checkOption(collector: string, name: string, value: unknown, ok: (n: number) => boolean, want: string): void {
  if (value === undefined) return
  if (typeof value !== 'number' || !ok(value)) {
    throw new ConfigError(`${collector} collector: \`${name}\` must be ${want} (got ${String(value)}); fix it in the stage's collector config`, {
      collector,
      option: name,
      value,
    })
  }
}

/** The error `restore` throws for a cursor it cannot parse. */
export function cursorError(collector: string, cursor: string): ProoflineError {
  return new ProoflineError(
    'COLLECTOR_CURSOR_INVALID',
    `${collector} collector: persisted cursor ${JSON.stringify(cursor)} is not a block number; inspect the collector's cursor in the state store`,
    { retryable: false, details: { collector, cursor } },
  )
}
