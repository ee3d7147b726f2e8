/**
 * The `sequential` strategy: groups items keyed by consecutive integers (blocks, or ranges of
 * blocks) into contiguous runs starting at the cursor. See docs/collectors.md.
 */
import { ConfigError } from '../../core/errors.js'
import { byArrival, checkOption, cursorError, group, isWellFormed } from './items.js'
import type { AddOutcome, ClosedGroup, CloseReason, Collector, CollectorItem } from './types.js'

/** Options of `sequentialCollector`. At least one of `maxCount`, `capacity`, `timeoutMs` must be set. */
export interface SequentialCollectorOptions {
  /** The first key to collect (e.g. the first block to prove) when no cursor was persisted. */
  startKey: number
  /** Most items in one group. @default Infinity (no count limit) */
  maxCount?: number
  /** Most summed `cost` in one group, in the stage's cost unit. @default Infinity (no capacity limit) */
  capacity?: number
  /** Close the run present once its oldest item (by `receivedAt`) has waited this long. @default undefined (never) */
  timeoutMs?: number
}

/** What `plan` would do at some time: the groups to close, the cursor after them, the pending timeout. */
interface Plan {
  groups: ClosedGroup[]
  next: number
  deadline: number | undefined
}

const CURSOR = /^(0|[1-9][0-9]*)$/

/**
 * A collector that only ever groups a contiguous run of items beginning at the cursor (the next
 * expected key): never a gap, an overlap or a duplicate, whatever the arrival order. A group
 * closes on `maxCount` items, when it is full by `capacity`, or by timeout; an item that alone
 * exceeds `capacity` becomes a group of its own flagged `overCapacity`.
 * @throws ConfigError for invalid options.
 */
export function sequentialCollector(opts: SequentialCollectorOptions): Collector {
  const name = 'sequential'
  if (opts.startKey === undefined) throw new ConfigError('sequential collector: `startKey` is required', { collector: name, option: 'startKey' })
  checkOption(name, 'startKey', opts.startKey, (n) => Number.isSafeInteger(n) && n >= 0, 'a non-negative integer')
  checkOption(name, 'maxCount', opts.maxCount, (n) => n === Infinity || (Number.isSafeInteger(n) && n >= 1), 'a positive integer')
  checkOption(name, 'capacity', opts.capacity, (n) => n > 0, 'a positive number')
  checkOption(name, 'timeoutMs', opts.timeoutMs, (n) => Number.isFinite(n) && n >= 0, 'a non-negative number of milliseconds')
  const maxCount = opts.maxCount ?? Infinity
  const capacity = opts.capacity ?? Infinity
  const timeoutMs = opts.timeoutMs
  if (maxCount === Infinity && capacity === Infinity && timeoutMs === undefined) {
    throw new ConfigError('sequential collector: no closing rule; set at least one of `maxCount`, `capacity`, `timeoutMs`', {
      collector: name,
    })
  }

  /** The next expected key: everything below it is in a closed group. */
  let next = opts.startKey
  /** Open items by `start`; at most one per start (a later one replaces it). */
  let byStart = new Map<number, CollectorItem>()
  /** Ids of open items. */
  let ids = new Set<string>()

  /** Walks the run from the cursor and decides which groups close at `now` (no mutation). */
  function plan(now: number): Plan {
    const groups: ClosedGroup[] = []
    let key = next
    let deadline: number | undefined
    for (let head = byStart.get(key); head !== undefined; head = byStart.get(key)) {
      if (head.cost > capacity) {
        groups.push(group([head], 'over-capacity', true))
        key = head.end + 1
        continue
      }
      const taken: CollectorItem[] = []
      let cost = 0
      let oldest = Infinity
      let at = key
      let reason: CloseReason | undefined
      for (;;) {
        if (taken.length >= maxCount) {
          reason = 'count'
          break
        }
        if (taken.length > 0 && cost >= capacity) {
          reason = 'capacity'
          break
        }
        const item = byStart.get(at)
        if (item === undefined) break
        // The next contiguous item is here and does not fit: the group is as full as it gets.
        if (cost + item.cost > capacity) {
          reason = 'capacity'
          break
        }
        taken.push(item)
        cost += item.cost
        if (item.receivedAt < oldest) oldest = item.receivedAt
        at = item.end + 1
      }
      if (reason === undefined) {
        // The whole run present fits and could still grow: only a timeout closes it.
        if (timeoutMs === undefined) break
        if (oldest + timeoutMs > now) {
          deadline = oldest + timeoutMs
          break
        }
        reason = 'timeout'
      }
      groups.push(group(taken, reason, false))
      key = at
    }
    return { groups, next: key, deadline }
  }

  function remove(item: CollectorItem): void {
    byStart.delete(item.start)
    ids.delete(item.id)
  }

  const collector: Collector = {
    strategy: 'sequential',

    restore(openItems, cursor) {
      let restored = opts.startKey
      if (cursor !== undefined) {
        if (!CURSOR.test(cursor) || !Number.isSafeInteger(Number(cursor))) throw cursorError(name, cursor)
        restored = Number(cursor)
      }
      next = restored
      byStart = new Map()
      ids = new Set()
      const dropped: CollectorItem[] = []
      for (const item of byArrival(openItems)) {
        const outcome = collector.add(item, item.receivedAt)
        if (!outcome.accepted) dropped.push(item)
        else if (outcome.replaced !== undefined) dropped.push(outcome.replaced)
      }
      return dropped
    },

    add(item, _now): AddOutcome {
      if (!isWellFormed(item)) return { accepted: false, reason: 'invalid' }
      if (ids.has(item.id)) return { accepted: false, reason: 'duplicate' }
      if (item.start < next) return { accepted: false, reason: 'behind-cursor' }
      const rival = byStart.get(item.start)
      if (rival !== undefined) remove(rival)
      byStart.set(item.start, item)
      ids.add(item.id)
      return rival === undefined ? { accepted: true } : { accepted: true, replaced: rival }
    },

    poll(now) {
      const { groups, next: after } = plan(now)
      if (groups.length === 0) return groups
      for (const g of groups) for (const item of g.items) remove(item)
      next = after
      // Open items whose start the closed groups now cover are overlapping alternatives
      // (e.g. a range from before a split or a reorg): drop them with the group that covers them.
      const stale = [...byStart.values()].filter((item) => item.start < next).sort((a, b) => a.start - b.start || (a.id < b.id ? -1 : 1))
      let g = 0
      for (const item of stale) {
        remove(item)
        while (groups[g]!.last < item.start) g++
        const covering = groups[g]!
        ;(covering.superseded ??= []).push(item)
      }
      return groups
    },

    cursor() {
      return String(next)
    },

    nextDeadline() {
      return plan(-Infinity).deadline
    },

    size() {
      return byStart.size
    },
  }
  return collector
}
