import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { ConfigError, ProoflineError } from '../../core/errors.js'
import { sequentialCollector, type SequentialCollectorOptions } from './sequential.js'
import type { ClosedGroup, Collector, CollectorItem } from './types.js'

function item(start: number, end = start, cost = 1, receivedAt = 0, id = `b${start}-${end}`): CollectorItem {
  return { id, start, end, cost, data: { start, end }, receivedAt }
}

const starts = (groups: ClosedGroup[]): number[][] => groups.map((g) => g.items.map((i) => i.start))

describe('sequentialCollector: closing rules', () => {
  it('count: closes a group once it holds maxCount contiguous items', () => {
    const c = sequentialCollector({ startKey: 0, maxCount: 3 })
    for (const n of [0, 1, 2, 3, 4]) c.add(item(n), 0)
    const groups = c.poll(0)
    expect(starts(groups)).toEqual([[0, 1, 2]])
    expect(groups[0]).toMatchObject({ reason: 'count', first: 0, last: 2, cost: 3, overCapacity: false })
    expect(c.cursor()).toBe('3')
    expect(c.size()).toBe(2)
  })

  it('capacity: stays open while the next item could still fit', () => {
    const c = sequentialCollector({ startKey: 0, capacity: 10 })
    c.add(item(0, 0, 4), 0)
    c.add(item(1, 1, 4), 0)
    expect(c.poll(1_000_000)).toEqual([])
    expect(c.size()).toBe(2)
  })

  it('capacity: closes when the next contiguous item is present and would not fit', () => {
    const c = sequentialCollector({ startKey: 0, capacity: 10 })
    c.add(item(0, 0, 4), 0)
    c.add(item(1, 1, 4), 0)
    c.add(item(2, 2, 3), 0)
    const groups = c.poll(0)
    expect(starts(groups)).toEqual([[0, 1]])
    expect(groups[0]).toMatchObject({ reason: 'capacity', cost: 8, overCapacity: false })
    expect(c.cursor()).toBe('2')
  })

  it('capacity: closes when the summed cost equals capacity exactly, without waiting for the next item', () => {
    const c = sequentialCollector({ startKey: 5, capacity: 10 })
    c.add(item(5, 5, 6), 0)
    c.add(item(6, 6, 4), 0)
    const groups = c.poll(0)
    expect(starts(groups)).toEqual([[5, 6]])
    expect(groups[0]).toMatchObject({ reason: 'capacity', cost: 10 })
  })

  it('timeout: closes the contiguous run present once its oldest item has waited timeoutMs', () => {
    const c = sequentialCollector({ startKey: 0, capacity: 100, timeoutMs: 1000 })
    c.add(item(1, 1, 1, 50), 50)
    c.add(item(0, 0, 1, 200), 200)
    c.add(item(3, 3, 1, 60), 60) // beyond the gap at 2
    expect(c.nextDeadline()).toBe(1050)
    expect(c.poll(1049)).toEqual([])
    const groups = c.poll(1050)
    expect(starts(groups)).toEqual([[0, 1]])
    expect(groups[0]).toMatchObject({ reason: 'timeout', first: 0, last: 1 })
    expect(c.cursor()).toBe('2')
  })

  it('timeout: never closes past a gap, however long items beyond it wait', () => {
    const c = sequentialCollector({ startKey: 0, maxCount: 10, timeoutMs: 10 })
    for (const n of [1, 2, 3]) c.add(item(n), 0)
    expect(c.nextDeadline()).toBeUndefined()
    expect(c.poll(Number.MAX_SAFE_INTEGER)).toEqual([])
    c.add(item(0, 0, 1, 500), 500)
    // The run 0..3 is now present; its oldest item (1..3) waited long enough.
    expect(starts(c.poll(500))).toEqual([[0, 1, 2, 3]])
  })

  it('over-capacity: the run before the big item closes by capacity, then the item alone is flagged', () => {
    const c = sequentialCollector({ startKey: 0, capacity: 10, timeoutMs: 1000 })
    c.add(item(0, 0, 3), 0)
    c.add(item(1, 1, 25), 0)
    c.add(item(2, 2, 3), 0)
    const groups = c.poll(0)
    expect(starts(groups)).toEqual([[0], [1]])
    expect(groups[0]).toMatchObject({ reason: 'capacity', overCapacity: false, cost: 3 })
    expect(groups[1]).toMatchObject({ reason: 'over-capacity', overCapacity: true, cost: 25 })
    expect(c.cursor()).toBe('2')
    expect(c.size()).toBe(1)
  })

  it('over-capacity: an oversized item at the cursor closes alone at once', () => {
    const c = sequentialCollector({ startKey: 0, capacity: 10 })
    c.add(item(0, 0, 11), 0)
    expect(c.poll(0)).toMatchObject([{ reason: 'over-capacity', overCapacity: true, first: 0, last: 0 }])
  })

  it('ranges: groups items covering first..last and moves the cursor past the last key', () => {
    const c = sequentialCollector({ startKey: 100, maxCount: 2 })
    c.add(item(100, 109), 0)
    c.add(item(110, 119), 0)
    const groups = c.poll(0)
    expect(groups).toMatchObject([{ first: 100, last: 119, reason: 'count' }])
    expect(c.cursor()).toBe('120')
  })

  it('closes several groups in one poll, in key order', () => {
    const c = sequentialCollector({ startKey: 0, maxCount: 2, timeoutMs: 5 })
    for (const n of [4, 2, 0, 3, 1]) c.add(item(n), 0)
    const groups = c.poll(5)
    expect(starts(groups)).toEqual([[0, 1], [2, 3], [4]])
    expect(groups.map((g) => g.reason)).toEqual(['count', 'count', 'timeout'])
    expect(c.cursor()).toBe('5')
    expect(c.size()).toBe(0)
  })
})

describe('sequentialCollector: add outcomes', () => {
  it('duplicate: the same id twice is rejected', () => {
    const c = sequentialCollector({ startKey: 0, maxCount: 5 })
    expect(c.add(item(1), 0)).toEqual({ accepted: true })
    expect(c.add(item(1), 0)).toEqual({ accepted: false, reason: 'duplicate' })
    expect(c.size()).toBe(1)
  })

  it('behind-cursor: an item starting before the cursor is rejected (already grouped)', () => {
    const c = sequentialCollector({ startKey: 10, maxCount: 1 })
    expect(c.add(item(9), 0)).toEqual({ accepted: false, reason: 'behind-cursor' })
    c.add(item(10), 0)
    c.poll(0)
    expect(c.add(item(10), 0)).toEqual({ accepted: false, reason: 'behind-cursor' })
    expect(c.add(item(10, 10, 1, 0, 'other'), 0), 'a reorged block behind the cursor').toEqual({ accepted: false, reason: 'behind-cursor' })
  })

  it('invalid: end before start, non-integer keys, bad cost or timestamp are rejected', () => {
    const c = sequentialCollector({ startKey: 0, maxCount: 5 })
    const bad: CollectorItem[] = [
      item(3, 2),
      item(1.5, 2),
      item(1, 1.5),
      { ...item(1), cost: -1 },
      { ...item(1), cost: Number.NaN },
      { ...item(1), cost: Infinity },
      { ...item(1), receivedAt: Number.NaN },
      item(Number.MAX_SAFE_INTEGER),
    ]
    for (const b of bad) expect(c.add(b, 0)).toEqual({ accepted: false, reason: 'invalid' })
    expect(c.size()).toBe(0)
  })

  it('replaced: an item at the start of an open item with another id replaces it (reorg)', () => {
    const c = sequentialCollector({ startKey: 0, maxCount: 2 })
    const old = item(0, 0, 1, 0, 'old')
    c.add(old, 0)
    expect(c.add(item(0, 0, 2, 1, 'new'), 1)).toEqual({ accepted: true, replaced: old })
    expect(c.size()).toBe(1)
    expect(c.add(old, 2), 'the old id is no longer held, so it would win again: the state store dedupes it').toEqual({
      accepted: true,
      replaced: item(0, 0, 2, 1, 'new'),
    })
  })

  it('superseded: an open range overlapping a closed group is dropped with that group', () => {
    const c = sequentialCollector({ startKey: 0, maxCount: 1 })
    c.add(item(0, 9), 0)
    c.add(item(5, 14), 0) // e.g. a range from before a split
    c.add(item(10, 19), 0)
    const groups = c.poll(0)
    expect(groups.map((g) => [g.first, g.last])).toEqual([
      [0, 9],
      [10, 19],
    ])
    expect(groups[0]!.superseded).toEqual([item(5, 14)])
    expect(groups[1]!.superseded).toBeUndefined()
    expect(c.size()).toBe(0)
  })

  it('superseded: overlapping leftovers are attached to the group covering each, in key order', () => {
    const c = sequentialCollector({ startKey: 0, maxCount: 1 })
    c.add(item(12, 20), 0)
    c.add(item(11, 11), 0)
    c.add(item(2, 3), 0)
    c.add(item(0, 9), 0)
    c.add(item(10, 19), 0)
    const groups = c.poll(0)
    expect(groups.map((g) => (g.superseded ?? []).map((i) => i.start))).toEqual([[2], [11, 12]])
  })
})

describe('sequentialCollector: restore and options', () => {
  it('restore resumes from the decimal cursor and returns the items it did not keep', () => {
    const c = sequentialCollector({ startKey: 0, maxCount: 2 })
    const dropped = c.restore([item(3), item(5), item(6), item(4)], '5')
    expect(dropped).toEqual([item(3), item(4)])
    expect(c.cursor()).toBe('5')
    expect(starts(c.poll(0))).toEqual([[5, 6]])
  })

  it('restore starts at startKey when no cursor was persisted', () => {
    const c = sequentialCollector({ startKey: 7, maxCount: 1 })
    c.restore([], undefined)
    expect(c.cursor()).toBe('7')
  })

  it('restore keeps the last received of two items at the same start, as add would', () => {
    const c = sequentialCollector({ startKey: 0, maxCount: 1 })
    const first = item(0, 0, 1, 10, 'first')
    const second = item(0, 0, 1, 20, 'second')
    expect(c.restore([second, first], undefined)).toEqual([first])
    expect(c.poll(0)[0]!.items).toEqual([second])
  })

  it('restore rejects a malformed cursor with COLLECTOR_CURSOR_INVALID', () => {
    const c = sequentialCollector({ startKey: 0, maxCount: 1 })
    for (const bad of ['', 'x', '-1', '1.5', '01', '1e3', '99999999999999999999']) {
      expect(() => c.restore([], bad)).toThrow(ProoflineError)
      try {
        c.restore([], bad)
      } catch (err) {
        expect((err as ProoflineError).code).toBe('COLLECTOR_CURSOR_INVALID')
        expect((err as ProoflineError).retryable).toBe(false)
      }
    }
  })

  it('options: invalid values and a config with no closing rule are ConfigErrors', () => {
    const bad: SequentialCollectorOptions[] = [
      { startKey: 0 },
      { startKey: -1, maxCount: 1 },
      { startKey: 1.5, maxCount: 1 },
      { startKey: 0, maxCount: 0 },
      { startKey: 0, capacity: 0 },
      { startKey: 0, timeoutMs: -1 },
      { startKey: 0, timeoutMs: Infinity },
    ]
    for (const opts of bad) expect(() => sequentialCollector(opts), JSON.stringify(opts)).toThrow(ConfigError)
  })

  it('nextDeadline: undefined without a timeout, else the oldest item of the pending run plus timeoutMs', () => {
    expect(sequentialCollector({ startKey: 0, maxCount: 2 }).nextDeadline()).toBeUndefined()
    const c = sequentialCollector({ startKey: 0, maxCount: 2, timeoutMs: 100 })
    expect(c.nextDeadline()).toBeUndefined()
    c.add(item(0, 0, 1, 10), 10)
    c.add(item(1, 1, 1, 20), 20)
    c.add(item(2, 2, 1, 30), 30)
    // 0..1 closes by count at the next poll; 2 is the pending run.
    expect(c.nextDeadline()).toBe(130)
  })
})

// ---- property tests ---------------------------------------------------------------------

/** A chain of contiguous spans from startKey, plus noise items at random keys. */
interface Scenario {
  opts: SequentialCollectorOptions
  chain: { len: number; cost: number }[]
  /** Extra items: reorg rivals (same start) and overlapping ranges. */
  noise: { at: number; len: number; cost: number }[]
  /** Delivery order: indexes into chain ++ noise. */
  order: number[]
  steps: { dt: number; poll: boolean; crash: 'none' | 'restart' | 'lost-poll' }[]
}

/** Mostly costs that fit, sometimes one that alone exceeds any capacity. */
const costArb = fc.oneof({ arbitrary: fc.integer({ min: 0, max: 8 }), weight: 6 }, { arbitrary: fc.integer({ min: 0, max: 30 }), weight: 1 })

const optsArb: fc.Arbitrary<SequentialCollectorOptions> = fc
  .record({
    startKey: fc.nat({ max: 50 }),
    maxCount: fc.option(fc.integer({ min: 1, max: 6 }), { nil: undefined }),
    capacity: fc.option(fc.integer({ min: 4, max: 20 }), { nil: undefined }),
    timeoutMs: fc.option(fc.integer({ min: 0, max: 100 }), { nil: undefined }),
  })
  .map((o) => {
    const opts: SequentialCollectorOptions = { startKey: o.startKey }
    if (o.maxCount !== undefined) opts.maxCount = o.maxCount
    if (o.capacity !== undefined) opts.capacity = o.capacity
    if (o.timeoutMs !== undefined) opts.timeoutMs = o.timeoutMs
    if (o.maxCount === undefined && o.capacity === undefined && o.timeoutMs === undefined) opts.maxCount = 3
    return opts
  })

function scenarioArb(opts: { noise: boolean; crashes: boolean; timeout?: 'keep' | 'none' | 'always' }): fc.Arbitrary<Scenario> {
  return fc
    .record({
      opts: optsArb.map((o) => {
        const { timeoutMs, ...rest } = o
        if (opts.timeout === 'none') return rest.maxCount === undefined && rest.capacity === undefined ? { ...rest, maxCount: 3 } : rest
        if (opts.timeout === 'always') return { ...rest, timeoutMs: timeoutMs ?? 50 }
        return o
      }),
      chain: fc.array(fc.record({ len: fc.integer({ min: 1, max: 3 }), cost: costArb }), { minLength: 1, maxLength: 30 }),
      noise: opts.noise
        ? fc.array(fc.record({ at: fc.nat({ max: 60 }), len: fc.integer({ min: 1, max: 4 }), cost: costArb }), { maxLength: 8 })
        : fc.constant<Scenario['noise']>([]),
    })
    .chain(({ opts: o, chain, noise }) => {
      const n = chain.length + noise.length
      const indexes = Array.from({ length: n }, (_, i) => i)
      return fc.record({
        opts: fc.constant(o),
        chain: fc.constant(chain),
        noise: fc.constant(noise),
        order: fc.shuffledSubarray(indexes, { minLength: n, maxLength: n }),
        steps: fc.array(
          fc.record({
            dt: fc.integer({ min: 0, max: 40 }),
            poll: fc.boolean(),
            crash: opts.crashes ? fc.constantFrom('none', 'none', 'none', 'restart', 'lost-poll') : fc.constant('none' as const),
          }),
          { minLength: n, maxLength: n },
        ),
      })
    })
}

/** The items of a scenario, without `receivedAt` (set when delivered). */
function scenarioItems(s: Scenario): Omit<CollectorItem, 'receivedAt'>[] {
  const out: Omit<CollectorItem, 'receivedAt'>[] = []
  let key = s.opts.startKey
  for (const [i, span] of s.chain.entries()) {
    out.push({ id: `c${i}`, start: key, end: key + span.len - 1, cost: span.cost, data: null })
    key += span.len
  }
  for (const [i, x] of s.noise.entries()) {
    const start = s.opts.startKey + x.at
    out.push({ id: `n${i}`, start, end: start + x.len - 1, cost: x.cost, data: null })
  }
  return out
}

interface Closed {
  group: ClosedGroup
  at: number
  /** Open items (by start) right before the poll that closed it. */
  before: Map<number, CollectorItem>
}

/**
 * A model of the orchestrator: a state store (open items, every id ever stored, cursor) written
 * exactly as the orchestrator would, and a collector rebuilt from it after each crash.
 */
class Sim {
  collector: Collector
  readonly open = new Map<string, CollectorItem>()
  readonly seen = new Set<string>()
  persistedCursor: string | undefined
  readonly closed: Closed[] = []
  readonly fate = new Map<string, string[]>()

  constructor(private readonly make: () => Collector) {
    this.collector = make()
  }

  private mark(id: string, what: string): void {
    this.fate.set(id, [...(this.fate.get(id) ?? []), what])
  }

  deliver(item: CollectorItem, now: number): void {
    if (this.seen.has(item.id)) return // the state store dedupes ids; the orchestrator just acks
    this.seen.add(item.id)
    this.open.set(item.id, item)
    const outcome = this.collector.add(item, now)
    if (!outcome.accepted) {
      this.open.delete(item.id)
      this.mark(item.id, `rejected:${outcome.reason}`)
    } else if (outcome.replaced !== undefined) {
      this.open.delete(outcome.replaced.id)
      this.mark(outcome.replaced.id, 'replaced')
    }
    expect(this.collector.size()).toBe(this.open.size)
  }

  poll(now: number): void {
    const before = new Map([...this.open.values()].map((i) => [i.start, i]))
    const groups = this.collector.poll(now)
    for (const group of groups) {
      for (const i of group.items) {
        this.open.delete(i.id)
        this.mark(i.id, 'grouped')
      }
      for (const i of group.superseded ?? []) {
        this.open.delete(i.id)
        this.mark(i.id, 'superseded')
      }
      this.closed.push({ group, at: now, before })
    }
    this.persistedCursor = this.collector.cursor()
    expect(this.collector.size()).toBe(this.open.size)
  }

  /** A crash: the in-memory collector is lost and rebuilt from the store. */
  restart(): void {
    this.collector = this.make()
    const stored = [...this.open.values()].sort((a, b) => a.start - b.start)
    for (const i of this.collector.restore(stored, this.persistedCursor)) {
      this.open.delete(i.id)
      this.mark(i.id, 'dropped-on-restore')
    }
    expect(this.collector.size()).toBe(this.open.size)
  }

  /** A crash after `poll` but before its groups were persisted. */
  lostPoll(now: number): void {
    this.collector.poll(now)
    this.restart()
  }
}

const FOREVER = 1e12

function run(s: Scenario, opts: { crashes: boolean; checkDeadlines?: boolean }): Sim {
  const sim = new Sim(() => sequentialCollector(s.opts))
  const items = scenarioItems(s)
  let now = 1000
  for (const [k, idx] of s.order.entries()) {
    const step = s.steps[k]!
    now += step.dt
    sim.deliver({ ...items[idx]!, receivedAt: now }, now)
    if (opts.checkDeadlines === true) checkDeadline(sim, s.opts)
    if (step.poll) {
      sim.poll(now)
      checkNothingOverdue(sim, s.opts, now)
    }
    if (opts.crashes && step.crash === 'restart') sim.restart()
    if (opts.crashes && step.crash === 'lost-poll') sim.lostPoll(now + step.dt)
  }
  sim.poll(FOREVER)
  return sim
}

/** nextDeadline() is exact: a poll just before it closes nothing by timeout, a poll at it does. */
function checkDeadline(sim: Sim, opts: SequentialCollectorOptions): void {
  const deadline = sim.collector.nextDeadline()
  if (deadline === undefined) return
  const clone = (): Collector => {
    const c = sequentialCollector(opts)
    c.restore([...sim.open.values()], sim.collector.cursor())
    return c
  }
  expect(clone().poll(deadline - 1).some((g) => g.reason === 'timeout')).toBe(false)
  expect(clone().poll(deadline).some((g) => g.reason === 'timeout')).toBe(true)
}

/** After a poll at `now`, the pending run is not overdue and its deadline is its oldest item's plus timeoutMs. */
function checkNothingOverdue(sim: Sim, opts: SequentialCollectorOptions, now: number): void {
  const byStart = new Map([...sim.open.values()].map((i) => [i.start, i]))
  const run: CollectorItem[] = []
  for (let i = byStart.get(Number(sim.persistedCursor)); i !== undefined; i = byStart.get(i.end + 1)) run.push(i)
  const deadline = sim.collector.nextDeadline()
  if (opts.timeoutMs === undefined || run.length === 0) return expect(deadline).toBeUndefined()
  expect(deadline).toBe(Math.min(...run.map((i) => i.receivedAt)) + opts.timeoutMs)
  expect(deadline).toBeGreaterThan(now)
}

/** The safety properties every run must satisfy. */
function checkSafety(s: Scenario, sim: Sim): void {
  const { startKey, maxCount = Infinity, capacity = Infinity, timeoutMs } = s.opts
  let key = startKey
  for (const { group, at, before } of sim.closed) {
    // Contiguous from startKey: no gap, no overlap, no duplicate, across and within groups.
    expect(group.first).toBe(key)
    for (const i of group.items) {
      expect(i.start).toBe(key)
      key = i.end + 1
    }
    expect(group.last).toBe(key - 1)
    expect(group.items.length).toBeLessThanOrEqual(maxCount)
    expect(group.cost).toBe(group.items.reduce((sum, i) => sum + i.cost, 0))
    expect(group.overCapacity).toBe(group.items.length === 1 && group.items[0]!.cost > capacity)
    if (!group.overCapacity) expect(group.cost).toBeLessThanOrEqual(capacity)
    const next = before.get(group.last + 1)
    switch (group.reason) {
      case 'count':
        expect(group.items.length).toBe(maxCount)
        break
      case 'capacity':
        // Full: it could not have taken the next contiguous item.
        if (group.cost !== capacity) {
          expect(next).toBeDefined()
          expect(group.cost + next!.cost).toBeGreaterThan(capacity)
        }
        break
      case 'timeout':
        expect(timeoutMs).toBeDefined()
        expect(Math.min(...group.items.map((i) => i.receivedAt)) + timeoutMs!).toBeLessThanOrEqual(at)
        expect(next, 'a timeout closes the whole run present').toBeUndefined()
        break
      case 'over-capacity':
        expect(group.overCapacity).toBe(true)
        break
      default:
        expect.unreachable(`reason ${group.reason}`)
    }
    for (const i of group.superseded ?? []) {
      expect(i.start, 'a superseded item is attached to the group covering its start').toBeGreaterThanOrEqual(group.first)
      expect(i.start).toBeLessThanOrEqual(group.last)
    }
  }
  expect(sim.persistedCursor).toBe(String(key))
  // Nothing lost or duplicated: every delivered item has exactly one fate, or is still open.
  for (const id of sim.seen) {
    const fate = sim.fate.get(id) ?? []
    expect(fate.length + (sim.open.has(id) ? 1 : 0), `${id}: ${fate.join(',')}`).toBe(1)
  }
}

describe('sequentialCollector: properties', () => {
  it('property: groups are contiguous from startKey, within maxCount and capacity, and full when closed by capacity, under any arrival order, poll times and crashes', () => {
    fc.assert(
      fc.property(scenarioArb({ noise: true, crashes: true }), (s) => {
        checkSafety(s, run(s, { crashes: true }))
      }),
      { numRuns: 300 },
    )
  })

  it('property: with a timeout and enough time, every item of the chain ends in exactly one group', () => {
    fc.assert(
      fc.property(scenarioArb({ noise: false, crashes: true, timeout: 'always' }), (s) => {
        const sim = run(s, { crashes: true })
        checkSafety(s, sim)
        expect(sim.open.size).toBe(0)
        const grouped = sim.closed.flatMap((c) => c.group.items.map((i) => i.id))
        expect(grouped).toEqual(s.chain.map((_, i) => `c${i}`))
      }),
      { numRuns: 200 },
    )
  })

  it('property: restarting from the persisted open items and cursor at any point yields the same groups as no restart', () => {
    fc.assert(
      fc.property(scenarioArb({ noise: true, crashes: true }), (s) => {
        const steady = run(s, { crashes: false })
        const restarted = run({ ...s, steps: s.steps.map((st) => ({ ...st, crash: st.crash === 'lost-poll' ? 'restart' : st.crash })) }, { crashes: true })
        expect(restarted.closed.map((c) => [c.group, c.at])).toEqual(steady.closed.map((c) => [c.group, c.at]))
        expect(restarted.persistedCursor).toBe(steady.persistedCursor)
        expect([...restarted.open.keys()].sort()).toEqual([...steady.open.keys()].sort())
      }),
      { numRuns: 200 },
    )
  })

  it('property: without a timeout, groups do not depend on arrival order or poll times (greedy packing of the chain)', () => {
    fc.assert(
      fc.property(scenarioArb({ noise: false, crashes: true, timeout: 'none' }), (s) => {
        const sim = run(s, { crashes: true })
        const { maxCount = Infinity, capacity = Infinity } = s.opts
        // Reference: greedy packing of the chain, in key order.
        const expected: string[][] = []
        let current: string[] = []
        let cost = 0
        const chain = s.chain.map((span, i) => ({ id: `c${i}`, cost: span.cost }))
        for (const x of chain) {
          if (x.cost > capacity) {
            if (current.length > 0) expected.push(current)
            expected.push([x.id])
            current = []
            cost = 0
            continue
          }
          if (current.length > 0 && cost + x.cost > capacity) {
            expected.push(current)
            current = []
            cost = 0
          }
          current.push(x.id)
          cost += x.cost
          if (current.length === maxCount || cost === capacity) {
            expected.push(current)
            current = []
            cost = 0
          }
        }
        // The last run stays open: more could still fit.
        expect(sim.closed.map((c) => c.group.items.map((i) => i.id))).toEqual(expected)
        expect([...sim.open.keys()].sort()).toEqual([...current].sort())
      }),
      { numRuns: 200 },
    )
  })

  it('property: out-of-order arrival never closes past a gap, even after timeouts', () => {
    fc.assert(
      fc.property(scenarioArb({ noise: false, crashes: true, timeout: 'always' }), fc.nat(), (s, pick) => {
        const items = scenarioItems(s)
        const gap = items[pick % items.length]!
        const sim = new Sim(() => sequentialCollector(s.opts))
        let now = 1000
        for (const [k, idx] of s.order.entries()) {
          const step = s.steps[k]!
          now += step.dt
          if (items[idx] !== gap) sim.deliver({ ...items[idx]!, receivedAt: now }, now)
          if (step.poll) sim.poll(now + FOREVER)
          if (step.crash !== 'none') sim.restart()
        }
        sim.poll(FOREVER)
        checkSafety(s, sim)
        for (const c of sim.closed) expect(c.group.last).toBeLessThan(gap.start)
        expect(sim.persistedCursor).toBe(String(gap.start))
        expect([...sim.open.values()].every((i) => i.start > gap.start)).toBe(true)
        // Once the gap is filled, everything closes.
        sim.deliver({ ...gap, receivedAt: FOREVER }, FOREVER)
        sim.poll(2 * FOREVER)
        checkSafety(s, sim)
        expect(sim.open.size).toBe(0)
      }),
      { numRuns: 200 },
    )
  })

  it('property: nextDeadline is the exact time a poll first closes the pending run by timeout', () => {
    fc.assert(
      fc.property(scenarioArb({ noise: true, crashes: false, timeout: 'always' }), (s) => {
        run(s, { crashes: false, checkDeadlines: true })
      }),
      { numRuns: 100 },
    )
  })
})
