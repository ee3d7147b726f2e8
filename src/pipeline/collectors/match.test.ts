import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { ConfigError } from '../../core/errors.js'
import { canonicalJson } from '../../core/ids.js'
import { matchCollector, type MatchCollectorOptions } from './match.js'
import type { ClosedGroup, Collector, CollectorItem } from './types.js'

function result(id: string, data: Record<string, unknown>, receivedAt = 0, start = 0, end = start, cost = 1): CollectorItem {
  return { id, start, end, cost, data, receivedAt }
}

const ids = (groups: ClosedGroup[]): string[][] => groups.map((g) => g.items.map((i) => i.id))

describe('matchCollector: closing rules', () => {
  it('inputs: closes once `inputs` items share the field values', () => {
    const c = matchCollector({ fields: ['range'], inputs: 2 })
    c.add(result('a', { range: '0-9', prover: 'x' }, 0, 0, 9, 5), 0)
    c.add(result('b', { range: '10-19', prover: 'x' }), 0)
    expect(c.poll(0)).toEqual([])
    c.add(result('c', { range: '0-9', prover: 'y' }, 0, 0, 9, 7), 0)
    const groups = c.poll(0)
    expect(ids(groups)).toEqual([['a', 'c']])
    expect(groups[0]).toMatchObject({ reason: 'inputs', partial: false, cost: 12, first: 0, last: 9, overCapacity: false })
    expect(c.size()).toBe(1)
    expect(c.cursor()).toBeUndefined()
  })

  it('inputs: fields are compared as canonical JSON, so nested objects with other key order match', () => {
    const c = matchCollector({ fields: ['range'], inputs: 2 })
    c.add(result('a', { range: { first: 0, last: 9 } }), 0)
    c.add(result('b', { range: { last: 9, first: 0 } }), 0)
    expect(ids(c.poll(0))).toEqual([['a', 'b']])
  })

  it('inputs: items that differ in any field do not join', () => {
    const c = matchCollector({ fields: ['range', 'program'], inputs: 2 })
    c.add(result('a', { range: 1, program: 'p' }), 0)
    c.add(result('b', { range: 1, program: 'q' }), 0)
    c.add(result('c', { range: 2, program: 'p' }), 0)
    expect(c.poll(0)).toEqual([])
    expect(c.size()).toBe(3)
  })

  it('inputs: a dotted field reads a nested value', () => {
    const c = matchCollector({ fields: ['output.root'], inputs: 2 })
    c.add(result('a', { output: { root: '0xab', other: 1 } }), 0)
    c.add(result('b', { output: { root: '0xab', other: 2 } }), 0)
    expect(ids(c.poll(0))).toEqual([['a', 'b']])
  })

  it('inputs: more than `inputs` items before a poll close as full groups in arrival order (ties by id), the rest stays open', () => {
    const c = matchCollector({ fields: ['k'], inputs: 2 })
    for (const id of ['a', 'b', 'c', 'd', 'e']) c.add(result(id, { k: 1 }), 0)
    expect(ids(c.poll(0))).toEqual([
      ['a', 'b'],
      ['c', 'd'],
    ])
    expect(c.size()).toBe(1)
  })

  it('inputs: groups closed in one poll come out in key order (first, last)', () => {
    const c = matchCollector({ fields: ['k'], inputs: 1 })
    c.add(result('late', { k: 'b' }, 0, 20, 29), 0)
    c.add(result('early', { k: 'a' }, 0, 0, 9), 0)
    c.add(result('mid', { k: 'c' }, 0, 10, 19), 0)
    expect(ids(c.poll(0))).toEqual([['early'], ['mid'], ['late']])
  })

  it('first/last: a group spans the lowest start to the highest end of its items', () => {
    const c = matchCollector({ fields: ['k'], inputs: 2 })
    c.add(result('a', { k: 1 }, 0, 5, 9), 0)
    c.add(result('b', { k: 1 }, 0, 3, 7), 0)
    expect(c.poll(0)).toMatchObject([{ first: 3, last: 9 }])
  })

  it('sourceField: items are distinct by source; a later item from the same source replaces the earlier', () => {
    const c = matchCollector({ fields: ['range'], inputs: 2, sourceField: 'prover' })
    const first = result('a1', { range: 1, prover: 'x' })
    c.add(first, 0)
    expect(c.add(result('a2', { range: 1, prover: 'x' }), 1)).toEqual({ accepted: true, replaced: first })
    expect(c.poll(1)).toEqual([])
    c.add(result('b', { range: 1, prover: 'y' }), 2)
    expect(ids(c.poll(2))).toEqual([['a2', 'b']])
  })

  it('sourceField: once a group closed, an item from one of its sources starts a new group and replaces nothing', () => {
    const c = matchCollector({ fields: ['range'], inputs: 2, sourceField: 'prover' })
    for (const [id, prover] of [['a', 'x'], ['b', 'y'], ['c', 'z']]) c.add(result(id!, { range: 1, prover }), 0)
    expect(ids(c.poll(0))).toEqual([['a', 'b']])
    expect(c.add(result('d', { range: 1, prover: 'x' }), 1)).toEqual({ accepted: true })
    expect(ids(c.poll(1))).toEqual([['c', 'd']])
    expect(c.size()).toBe(0)
  })

  it('timeout: closes a group with fewer than `inputs` items as partial once its oldest item waited timeoutMs', () => {
    const c = matchCollector({ fields: ['k'], inputs: 3, timeoutMs: 100 })
    c.add(result('a', { k: 1 }, 10), 10)
    c.add(result('b', { k: 1 }, 50), 50)
    c.add(result('c', { k: 2 }, 30), 30)
    expect(c.nextDeadline()).toBe(110)
    expect(c.poll(109)).toEqual([])
    const groups = c.poll(110)
    expect(ids(groups)).toEqual([['a', 'b']])
    expect(groups[0]).toMatchObject({ reason: 'timeout', partial: true })
    expect(c.nextDeadline()).toBe(130)
  })

  it('timeout: without timeoutMs a group waits for its inputs forever', () => {
    const c = matchCollector({ fields: ['k'], inputs: 2 })
    c.add(result('a', { k: 1 }), 0)
    expect(c.nextDeadline()).toBeUndefined()
    expect(c.poll(Number.MAX_SAFE_INTEGER)).toEqual([])
  })

  it('nextDeadline: ignores groups that are complete and counts only their leftovers', () => {
    const c = matchCollector({ fields: ['k'], inputs: 2, timeoutMs: 100 })
    c.add(result('a', { k: 1 }, 0), 0)
    c.add(result('b', { k: 1 }, 5), 5)
    expect(c.nextDeadline()).toBeUndefined()
    c.add(result('c', { k: 1 }, 7), 7)
    expect(c.nextDeadline()).toBe(107)
  })
})

describe('matchCollector: add outcomes, restore and options', () => {
  it('duplicate: the same id twice is rejected', () => {
    const c = matchCollector({ fields: ['k'], inputs: 2 })
    expect(c.add(result('a', { k: 1 }), 0)).toEqual({ accepted: true })
    expect(c.add(result('a', { k: 1 }), 0)).toEqual({ accepted: false, reason: 'duplicate' })
    expect(c.add(result('a', { k: 2 }), 0), 'same id, other content').toEqual({ accepted: false, reason: 'duplicate' })
    expect(c.size()).toBe(1)
  })

  it('invalid: a missing field, a missing source field, non-object data or bad keys are rejected', () => {
    const c = matchCollector({ fields: ['k', 'n.m'], inputs: 2, sourceField: 'src' })
    const bad: CollectorItem[] = [
      result('1', { n: { m: 1 }, src: 's' }),
      result('2', { k: 1, src: 's' }),
      result('3', { k: 1, n: { m: 1 } }),
      result('4', { k: 1, n: 5, src: 's' }),
      { ...result('5', {}), data: 'text' },
      { ...result('6', {}), data: null },
      result('7', { k: 1, n: { m: 1 }, src: 's' }, 0, 5, 4),
      { ...result('8', { k: 1, n: { m: 1 }, src: 's' }), cost: -1 },
    ]
    for (const b of bad) expect(c.add(b, 0), b.id).toEqual({ accepted: false, reason: 'invalid' })
    expect(c.add(result('ok', { k: 1, n: { m: 1 }, src: 's' }), 0)).toEqual({ accepted: true })
  })

  it('restore rebuilds the open groups from persisted items, ignoring the cursor', () => {
    const c = matchCollector({ fields: ['k'], inputs: 2, sourceField: 's' })
    const a = result('a', { k: 1, s: 'x' }, 1)
    const a2 = result('a2', { k: 1, s: 'x' }, 2)
    expect(c.restore([a2, a], 'ignored')).toEqual([a])
    expect(c.size()).toBe(1)
    c.add(result('b', { k: 1, s: 'y' }, 3), 3)
    expect(ids(c.poll(3))).toEqual([['a2', 'b']])
  })

  it('options: invalid values are ConfigErrors', () => {
    const bad = [
      { fields: 'k', inputs: 2 },
      { fields: [''], inputs: 2 },
      { fields: ['k'], inputs: 0 },
      { fields: ['k'], inputs: 1.5 },
      { fields: ['k'] },
      { fields: ['k'], inputs: 2, timeoutMs: -1 },
      { fields: ['k'], inputs: 2, sourceField: '' },
    ] as unknown as MatchCollectorOptions[]
    for (const opts of bad) expect(() => matchCollector(opts), JSON.stringify(opts)).toThrow(ConfigError)
  })
})

// ---- property tests ---------------------------------------------------------------------

interface Scenario {
  opts: MatchCollectorOptions
  items: { range: number; tag: string; source: string; cost: number; broken: boolean }[]
  steps: { dt: number; poll: boolean; crash: 'none' | 'restart' | 'lost-poll'; redeliver: boolean }[]
}

const scenarioArb: fc.Arbitrary<Scenario> = fc
  .record({
    opts: fc
      .record({
        fields: fc.constantFrom(['range'], ['range', 'tag'], ['tag']),
        inputs: fc.integer({ min: 1, max: 4 }),
        timeoutMs: fc.option(fc.integer({ min: 0, max: 100 }), { nil: undefined }),
        bySource: fc.boolean(),
      })
      .map(({ bySource, timeoutMs, ...o }) => {
        const opts: MatchCollectorOptions = { ...o, fields: [...o.fields] }
        if (timeoutMs !== undefined) opts.timeoutMs = timeoutMs
        if (bySource) opts.sourceField = 'source'
        return opts
      }),
    items: fc.array(
      fc.record({
        range: fc.nat({ max: 4 }),
        tag: fc.constantFrom('a', 'b'),
        source: fc.constantFrom('p1', 'p2', 'p3', 'p4'),
        cost: fc.nat({ max: 10 }),
        broken: fc.integer({ min: 0, max: 9 }).map((n) => n === 0),
      }),
      { minLength: 1, maxLength: 40 },
    ),
  })
  .chain((s) =>
    fc.record({
      opts: fc.constant(s.opts),
      items: fc.constant(s.items),
      steps: fc.array(
        fc.record({
          dt: fc.integer({ min: 0, max: 40 }),
          poll: fc.boolean(),
          crash: fc.constantFrom('none', 'none', 'none', 'restart', 'lost-poll'),
          redeliver: fc.boolean(),
        }),
        { minLength: s.items.length, maxLength: s.items.length },
      ),
    }),
  )

function toItem(x: Scenario['items'][number], i: number, receivedAt: number): CollectorItem {
  const data: Record<string, unknown> = { range: { first: x.range * 10, last: x.range * 10 + 9 }, tag: x.tag, source: x.source }
  if (x.broken) delete data.range
  return { id: `r${i}`, start: x.range * 10, end: x.range * 10 + 9, cost: x.cost, data, receivedAt }
}

/** A model of the orchestrator around a match collector (see the sequential tests). */
class Sim {
  collector: Collector
  readonly open = new Map<string, CollectorItem>()
  readonly seen = new Set<string>()
  readonly closed: { group: ClosedGroup; at: number }[] = []
  readonly fate = new Map<string, string[]>()

  constructor(private readonly make: () => Collector) {
    this.collector = make()
  }

  private mark(id: string, what: string): void {
    this.fate.set(id, [...(this.fate.get(id) ?? []), what])
  }

  deliver(item: CollectorItem, now: number): void {
    if (this.seen.has(item.id)) {
      // Redelivered: the store ignores it; the collector itself also calls it a duplicate while open.
      if (this.open.has(item.id)) expect(this.collector.add(item, now)).toEqual({ accepted: false, reason: 'duplicate' })
      return
    }
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
    for (const group of this.collector.poll(now)) {
      for (const i of group.items) {
        this.open.delete(i.id)
        this.mark(i.id, 'grouped')
      }
      this.closed.push({ group, at: now })
    }
    expect(this.collector.size()).toBe(this.open.size)
  }

  restart(): void {
    this.collector = this.make()
    const stored = [...this.open.values()].sort((a, b) => a.start - b.start || (a.id < b.id ? -1 : 1))
    expect(this.collector.restore(stored, undefined)).toEqual([])
    expect(this.collector.size()).toBe(this.open.size)
  }
}

const FOREVER = 1e12

function run(s: Scenario, crashes: boolean): Sim {
  const sim = new Sim(() => matchCollector(s.opts))
  let now = 1000
  for (const [i, x] of s.items.entries()) {
    const step = s.steps[i]!
    now += step.dt
    sim.deliver(toItem(x, i, now), now)
    if (step.redeliver && i > 0) sim.deliver(toItem(s.items[i - 1]!, i - 1, now), now)
    if (step.poll) {
      sim.poll(now)
      const deadline = sim.collector.nextDeadline()
      if (deadline !== undefined) expect(deadline).toBeGreaterThan(now)
    }
    if (crashes && step.crash === 'restart') sim.restart()
    if (crashes && step.crash === 'lost-poll') {
      sim.collector.poll(now + step.dt)
      sim.restart()
    }
  }
  sim.poll(FOREVER)
  return sim
}

function checkSafety(s: Scenario, sim: Sim): void {
  const { inputs, timeoutMs, fields, sourceField } = s.opts
  const key = (i: CollectorItem): string => canonicalJson(fields.map((f) => (i.data as Record<string, unknown>)[f]))
  for (const { group, at } of sim.closed) {
    expect(new Set(group.items.map(key)).size, 'items share the field values').toBe(1)
    expect(group.items.length).toBeLessThanOrEqual(inputs)
    const sources = group.items.map((i) => (sourceField === undefined ? i.id : (i.data as Record<string, unknown>)[sourceField]))
    expect(new Set(sources).size, 'items are distinct').toBe(group.items.length)
    expect(group.first).toBe(Math.min(...group.items.map((i) => i.start)))
    expect(group.last).toBe(Math.max(...group.items.map((i) => i.end)))
    expect(group.cost).toBe(group.items.reduce((sum, i) => sum + i.cost, 0))
    expect(group.overCapacity).toBe(false)
    if (group.reason === 'inputs') {
      expect(group.items.length).toBe(inputs)
      expect(group.partial).toBe(false)
    } else {
      expect(group.reason).toBe('timeout')
      expect(group.partial).toBe(true)
      expect(group.items.length).toBeLessThan(inputs)
      expect(Math.min(...group.items.map((i) => i.receivedAt)) + timeoutMs!).toBeLessThanOrEqual(at)
    }
  }
  // None lost or duplicated: every stored item has exactly one fate, or is still open.
  for (const id of sim.seen) {
    const fate = sim.fate.get(id) ?? []
    expect(fate.length + (sim.open.has(id) ? 1 : 0), `${id}: ${fate.join(',')}`).toBe(1)
    if (fate[0]?.startsWith('rejected')) expect(fate[0]).toBe('rejected:invalid')
  }
  if (timeoutMs !== undefined) expect(sim.open.size, 'with a timeout and enough time nothing stays open').toBe(0)
}

describe('matchCollector: properties', () => {
  it('property: groups share field values, hold at most `inputs` distinct items, and lose or duplicate none, under any poll times and crashes', () => {
    fc.assert(
      fc.property(scenarioArb, (s) => {
        checkSafety(s, run(s, true))
      }),
      { numRuns: 300 },
    )
  })

  it('property: restarting from the persisted open items at any point yields the same groups as no restart', () => {
    fc.assert(
      fc.property(scenarioArb, (s) => {
        const clean = { ...s, steps: s.steps.map((st) => ({ ...st, crash: st.crash === 'lost-poll' ? ('restart' as const) : st.crash })) }
        const steady = run(clean, false)
        const restarted = run(clean, true)
        expect(restarted.closed).toEqual(steady.closed)
        expect([...restarted.open.keys()].sort()).toEqual([...steady.open.keys()].sort())
      }),
      { numRuns: 200 },
    )
  })

  it('property: without a timeout, a group closes exactly when its `inputs`-th distinct item arrives', () => {
    fc.assert(
      fc.property(scenarioArb, (s) => {
        const { timeoutMs: _, ...opts } = s.opts
        const sim = new Sim(() => matchCollector(opts))
        for (const [i, x] of s.items.entries()) {
          sim.deliver(toItem(x, i, i), i)
          const before = sim.closed.length
          sim.poll(i)
          // The only group that can complete is the one the new item joined.
          const closed = sim.closed.slice(before)
          expect(closed.length).toBeLessThanOrEqual(1)
          if (closed.length === 1) expect(closed[0]!.group.items.at(-1)!.id).toBe(`r${i}`)
        }
        checkSafety({ ...s, opts }, sim)
      }),
      { numRuns: 200 },
    )
  })
})
