/**
 * The `match` strategy: joins items whose `data` share the values of some fields (e.g. the
 * results of several provers for the same range). See docs/collectors.md.
 */
import { ConfigError } from '../../core/errors.js'
import { canonicalJson } from '../../core/ids.js'
import { byArrival, checkOption, group, isWellFormed } from './items.js'
import type { AddOutcome, ClosedGroup, Collector, CollectorItem } from './types.js'

/** Options of `matchCollector`. */
export interface MatchCollectorOptions {
  /**
   * Fields of `data` whose values (compared as canonical JSON) must be equal for items to join.
   * A dotted name reads a nested field (`output.root`). Every item must have every field.
   */
  fields: string[]
  /** Distinct items that make a complete group. */
  inputs: number
  /** Close a group with fewer than `inputs` items (`partial`) once its oldest item has waited this long. @default undefined (never) */
  timeoutMs?: number
  /**
   * Field of `data` that tells items apart (e.g. the prover that produced a result): a later item
   * with the same value replaces the earlier one in its group. @default undefined (items are told apart by id)
   */
  sourceField?: string
}

/** An open group: its items in arrival order (see `insert`), indexed by source. */
interface OpenGroup {
  key: string
  items: CollectorItem[]
  bySource: Map<string, CollectorItem>
}

const MISSING = Symbol('missing')

/** Reads a dotted path of a JSON value, or MISSING. */
function read(data: unknown, path: string): unknown {
  let value: unknown = data
  for (const part of path.split('.')) {
    if (value === null || typeof value !== 'object' || !Object.hasOwn(value, part)) return MISSING
    value = (value as Record<string, unknown>)[part]
  }
  return value === undefined ? MISSING : value
}

/**
 * Inserts `item` in (receivedAt, id) order. Arrival order with ties broken by id, rather than
 * call order, so a collector restored from items listed in any order holds them in the same
 * order, and closes the same chunks, as the one that received them.
 */
function insert(items: CollectorItem[], item: CollectorItem): void {
  let i = items.length
  while (i > 0 && before(item, items[i - 1]!)) i--
  items.splice(i, 0, item)
}

function before(a: CollectorItem, b: CollectorItem): boolean {
  return a.receivedAt < b.receivedAt || (a.receivedAt === b.receivedAt && a.id < b.id)
}

/**
 * A collector that joins items sharing the values of `fields`; a group closes when `inputs`
 * distinct items have arrived ('inputs'), or by timeout with fewer (`partial: true`).
 * @throws ConfigError for invalid options.
 */
export function matchCollector(opts: MatchCollectorOptions): Collector {
  const name = 'match'
  if (!Array.isArray(opts.fields) || !opts.fields.every((f) => typeof f === 'string' && f.length > 0)) {
    throw new ConfigError('match collector: `fields` must be a list of field names of the message data; fix it in the stage\'s collector config', {
      collector: name,
      option: 'fields',
      value: opts.fields,
    })
  }
  if (opts.inputs === undefined) throw new ConfigError('match collector: `inputs` is required', { collector: name, option: 'inputs' })
  checkOption(name, 'inputs', opts.inputs, (n) => Number.isSafeInteger(n) && n >= 1, 'a positive integer')
  checkOption(name, 'timeoutMs', opts.timeoutMs, (n) => Number.isFinite(n) && n >= 0, 'a non-negative number of milliseconds')
  if (opts.sourceField !== undefined && (typeof opts.sourceField !== 'string' || opts.sourceField.length === 0)) {
    throw new ConfigError('match collector: `sourceField` must be a field name', { collector: name, option: 'sourceField', value: opts.sourceField })
  }
  const fields = [...opts.fields]
  const { inputs, timeoutMs, sourceField } = opts

  let groups = new Map<string, OpenGroup>()
  /** Open item id → its group key. */
  let ids = new Map<string, string>()

  /** Items left open in `g` after its complete chunks close. */
  const leftover = (g: OpenGroup): CollectorItem[] => g.items.slice(g.items.length - (g.items.length % inputs))

  /** What tells items of one group apart, or undefined when the source field is missing. */
  function sourceOf(item: CollectorItem): string | undefined {
    if (sourceField === undefined) return item.id
    const value = read(item.data, sourceField)
    return value === MISSING ? undefined : canonicalJson(value)
  }

  function oldest(items: readonly CollectorItem[]): number {
    let min = Infinity
    for (const item of items) if (item.receivedAt < min) min = item.receivedAt
    return min
  }

  const collector: Collector = {
    strategy: 'match',

    restore(openItems, _cursor) {
      groups = new Map()
      ids = new Map()
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
      const values = fields.map((f) => read(item.data, f))
      if (values.includes(MISSING)) return { accepted: false, reason: 'invalid' }
      const source = sourceOf(item)
      if (source === undefined) return { accepted: false, reason: 'invalid' }
      if (ids.has(item.id)) return { accepted: false, reason: 'duplicate' }
      const key = canonicalJson(values)
      let g = groups.get(key)
      if (g === undefined) {
        g = { key, items: [], bySource: new Map() }
        groups.set(key, g)
      }
      const rival = g.bySource.get(source)
      if (rival !== undefined) {
        g.items.splice(g.items.indexOf(rival), 1)
        ids.delete(rival.id)
      }
      insert(g.items, item)
      g.bySource.set(source, item)
      ids.set(item.id, key)
      return rival === undefined ? { accepted: true } : { accepted: true, replaced: rival }
    },

    poll(now) {
      const closed: { key: string; group: ClosedGroup }[] = []
      for (const g of groups.values()) {
        const take = (items: CollectorItem[], full: boolean): void => {
          for (const item of items) {
            ids.delete(item.id)
            g.bySource.delete(sourceOf(item) ?? item.id)
          }
          closed.push({ key: g.key, group: { ...group(items, full ? 'inputs' : 'timeout', false), partial: !full } })
        }
        while (g.items.length >= inputs) take(g.items.splice(0, inputs), true)
        if (g.items.length > 0 && timeoutMs !== undefined && oldest(g.items) + timeoutMs <= now) take(g.items.splice(0), false)
        if (g.items.length === 0) groups.delete(g.key)
      }
      // Key order: by range, then by field values; chunks of one key keep their order (stable sort).
      closed.sort((a, b) => a.group.first - b.group.first || a.group.last - b.group.last || (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))
      return closed.map((c) => c.group)
    },

    cursor() {
      return undefined
    },

    nextDeadline() {
      if (timeoutMs === undefined) return undefined
      let min: number | undefined
      for (const g of groups.values()) {
        const rest = leftover(g)
        if (rest.length === 0) continue
        const deadline = oldest(rest) + timeoutMs
        if (min === undefined || deadline < min) min = deadline
      }
      return min
    },

    size() {
      return ids.size
    },
  }
  return collector
}
