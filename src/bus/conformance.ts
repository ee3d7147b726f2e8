/**
 * The conformance suite of the `Bus` port. Every adapter runs it against the real thing
 * (memory, the local bus on Postgres, NATS JetStream). It tests only what `types.ts`
 * promises, with timings short enough to be quick and loose enough for a loaded 2-core box:
 * a "was not delivered early" check allows a few ms of clock rounding, and every "eventually"
 * waits up to {@link EVENTUALLY_MS}.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { BusError } from '../core/errors.js'
import { DEAD_LETTER_HEADERS, deadLetterId, deadLetterSubject, type Bus, type ConsumeOptions, type Delivery, type Handler } from './types.js'

/** What `open` returns for one test: a fresh bus in its own namespace. */
export interface BusUnderTest {
  bus: Bus
  /**
   * Opens a new bus on the same storage, as a restarted process would (given only by durable
   * adapters). The suite closes `bus` first, without acking what it holds.
   */
  reopen?: () => Promise<Bus>
  /** Removes the namespace; called after every bus of the test is closed. */
  cleanup: () => Promise<void>
}

/** How long the suite waits for something that must happen. */
export const EVENTUALLY_MS = 10_000
/** The lease used by tests that wait for a redelivery. */
const ACK_WAIT_MS = 500
/** Clock rounding allowed when checking "not before" (adapters' clocks and timers round to ms). */
const EARLY_TOLERANCE_MS = 5

interface Seen {
  consumer: string
  id: string
  data: unknown
  headers: Readonly<Record<string, string>>
  deliveryCount: number
  at: number
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))

async function eventually(what: string, cond: () => boolean, timeoutMs = EVENTUALLY_MS): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await sleep(5)
  }
}

/** A promise resolved by the test (or by the suite's cleanup, so no handler hangs forever). */
interface Gate {
  promise: Promise<void>
  open(): void
}

/** Registers the suite. `open` is called before each test, `cleanup` after it. */
export function busConformance(name: string, open: () => Promise<BusUnderTest>): void {
  describe(`Bus conformance: ${name}`, () => {
    let t: BusUnderTest
    let buses: Bus[]
    let closedBuses: Set<Bus>
    let consumers: Array<{ stop: AbortController; done: Promise<void>; error: unknown[] }>
    let gates: Gate[]
    let subject: string

    beforeEach(async () => {
      t = await open()
      buses = [t.bus]
      closedBuses = new Set()
      consumers = []
      gates = []
      // Unique per test, in case an adapter's namespaces are coarser than one test.
      subject = `conf${Math.random().toString(36).slice(2, 10)}.work`
    })

    afterEach(async () => {
      for (const g of gates) g.open()
      for (const c of consumers) c.stop.abort()
      const settled = Promise.all(consumers.map((c) => c.done))
      const timedOut = await Promise.race([settled.then(() => false), sleep(EVENTUALLY_MS).then(() => true)])
      for (const b of buses) if (!closedBuses.has(b)) await b.close()
      await t.cleanup()
      expect(timedOut, 'consume did not resolve after abort').toBe(false)
      for (const c of consumers) expect(c.error, 'consume rejected').toEqual([])
    })

    const gate = (): Gate => {
      let open!: () => void
      const promise = new Promise<void>((r) => (open = r))
      const g = { promise, open }
      gates.push(g)
      return g
    }

    const closeBus = async (b: Bus) => {
      closedBuses.add(b)
      await b.close()
    }

    /** Starts a consumer and records every delivery in `seen` before calling `handler`. */
    const consume = (
      opts: { bus?: Bus; subject?: string; group: string; consumer?: string; seen: Seen[] } & Omit<ConsumeOptions, 'signal'>,
      handler: Handler = async () => {},
    ) => {
      const stop = new AbortController()
      const error: unknown[] = []
      const { bus = t.bus, subject: subj = subject, group, consumer = group, seen, ...rest } = opts
      const done = bus
        .consume(
          subj,
          group,
          async (d: Delivery) => {
            seen.push({ consumer, id: d.id, data: d.data, headers: d.headers, deliveryCount: d.deliveryCount, at: Date.now() })
            await handler(d)
          },
          { ...rest, signal: stop.signal },
        )
        .catch((err: unknown) => {
          error.push(err)
        })
      const c = { stop, done, error }
      consumers.push(c)
      return c
    }

    const publishAll = async (ids: string[], bus: Bus = t.bus) => {
      for (const id of ids) await bus.publish(subject, { id, data: { id } })
    }

    const ids = (n: number, prefix = 'm') => Array.from({ length: n }, (_, i) => `${prefix}${String(i).padStart(3, '0')}`)

    it('behavior: a published message is delivered with its data and headers, and acked when the handler resolves', async () => {
      const seen: Seen[] = []
      consume({ group: 'g', seen, ackWaitMs: ACK_WAIT_MS })
      const data = { n: 1, s: 'text', list: [1, { a: null }], flag: true }
      await expect(t.bus.publish(subject, { id: 'm1', data, headers: { trace: 'abc' } })).resolves.toEqual({ duplicate: false })
      await eventually('the delivery', () => seen.length === 1)
      expect(seen[0]).toMatchObject({ id: 'm1', data, deliveryCount: 1 })
      expect(seen[0]?.headers.trace).toBe('abc')
      await sleep(ACK_WAIT_MS * 2)
      expect(seen).toHaveLength(1)
    })

    it('behavior: publishing the same id twice stores it once', async () => {
      await expect(t.bus.publish(subject, { id: 'dup', data: { v: 1 } })).resolves.toEqual({ duplicate: false })
      await expect(t.bus.publish(subject, { id: 'dup', data: { v: 2 } })).resolves.toEqual({ duplicate: true })
      await expect(t.bus.publish(subject, { id: 'other', data: { v: 3 } })).resolves.toEqual({ duplicate: false })
      const seen: Seen[] = []
      consume({ group: 'g', seen })
      await eventually('two deliveries', () => seen.length === 2)
      await sleep(300)
      expect(seen.map((s) => [s.id, s.data])).toEqual([
        ['dup', { v: 1 }],
        ['other', { v: 3 }],
      ])
    })

    it('behavior: consumers sharing a group split the messages, each message to exactly one', async () => {
      const seen: Seen[] = []
      const slow = () => sleep(20)
      consume({ group: 'shared', consumer: 'a', seen }, slow)
      consume({ group: 'shared', consumer: 'b', seen }, slow)
      const all = ids(20)
      await publishAll(all)
      await eventually('20 deliveries', () => seen.length >= 20)
      await sleep(300)
      expect(seen.map((s) => s.id).sort()).toEqual(all)
      expect(seen.filter((s) => s.consumer === 'a').length).toBeGreaterThan(0)
      expect(seen.filter((s) => s.consumer === 'b').length).toBeGreaterThan(0)
    })

    it('behavior: distinct groups each receive every message (fan-out)', async () => {
      const seen: Seen[] = []
      consume({ group: 'one', seen })
      consume({ group: 'two', seen })
      // Let both groups exist before publishing (a consume may create its group asynchronously).
      await sleep(300)
      const all = ids(10)
      await publishAll(all)
      await eventually('10 deliveries per group', () => seen.length >= 20)
      await sleep(300)
      expect(seen.filter((s) => s.consumer === 'one').map((s) => s.id)).toEqual(all)
      expect(seen.filter((s) => s.consumer === 'two').map((s) => s.id)).toEqual(all)
    })

    it('behavior: a group created after publishing receives the retained messages', async () => {
      const all = ids(3)
      await publishAll(all)
      const seen: Seen[] = []
      consume({ group: 'late', seen })
      await eventually('3 deliveries', () => seen.length === 3)
      expect(seen.map((s) => s.id)).toEqual(all)
    })

    it('behavior: a handler that throws a retryable error is redelivered with deliveryCount 2', async () => {
      const seen: Seen[] = []
      consume({ group: 'g', seen, retryDelayMs: 50, ackWaitMs: ACK_WAIT_MS }, async (d) => {
        if (d.deliveryCount === 1) throw new Error('transient: node unreachable')
      })
      await t.bus.publish(subject, { id: 'r1', data: { x: 1 } })
      await eventually('the redelivery', () => seen.length === 2)
      expect(seen.map((s) => [s.id, s.deliveryCount])).toEqual([
        ['r1', 1],
        ['r1', 2],
      ])
      expect(seen[1]?.data).toEqual({ x: 1 })
      await sleep(ACK_WAIT_MS * 2)
      expect(seen).toHaveLength(2)
    })

    it('behavior: a handler that throws a non-retryable error dead-letters the message to dlq.<subject> and it is never redelivered', async () => {
      const seen: Seen[] = []
      const dead: Seen[] = []
      consume({ group: 'g', seen, retryDelayMs: 50, ackWaitMs: ACK_WAIT_MS }, async () => {
        throw new BusError('TEST_UNPROVABLE', 'input can never be proven', { retryable: false })
      })
      consume({ subject: deadLetterSubject(subject), group: 'dlq-reader', seen: dead })
      await t.bus.publish(subject, { id: 'bad', data: { block: 7 }, headers: { origin: 'test' } })
      await eventually('the dead letter', () => dead.length === 1)
      const letter = dead[0]
      expect(letter?.id).toBe(deadLetterId('g', 'bad'))
      expect(letter?.data).toEqual({ block: 7 })
      expect(letter?.headers).toMatchObject({
        origin: 'test',
        [DEAD_LETTER_HEADERS.subject]: subject,
        [DEAD_LETTER_HEADERS.group]: 'g',
        [DEAD_LETTER_HEADERS.id]: 'bad',
        [DEAD_LETTER_HEADERS.deliveryCount]: '1',
      })
      expect(letter?.headers[DEAD_LETTER_HEADERS.reason]).toContain('input can never be proven')
      await sleep(ACK_WAIT_MS * 2)
      expect(seen).toHaveLength(1)
      expect(dead).toHaveLength(1)
    })

    it('behavior: giveUp dead-letters the message with the reason and it is never redelivered', async () => {
      const seen: Seen[] = []
      const dead: Seen[] = []
      consume({ group: 'g', seen, ackWaitMs: ACK_WAIT_MS }, async (d) => {
        await d.giveUp('range is unprovable')
        // Settling again does nothing.
        await d.ack()
      })
      await t.bus.publish(subject, { id: 'gu', data: { n: 1 } })
      consume({ subject: deadLetterSubject(subject), group: 'dlq-reader', seen: dead })
      await eventually('the dead letter', () => dead.length === 1)
      expect(dead[0]?.headers[DEAD_LETTER_HEADERS.reason]).toBe('range is unprovable')
      expect(dead[0]?.data).toEqual({ n: 1 })
      await sleep(ACK_WAIT_MS * 2)
      expect(seen).toHaveLength(1)
      expect(dead).toHaveLength(1)
    })

    it('behavior: retryLater(delay) is not redelivered before the delay', async () => {
      const seen: Seen[] = []
      let askedAt = 0
      consume({ group: 'g', seen, ackWaitMs: 5_000 }, async (d) => {
        if (d.deliveryCount === 1) {
          askedAt = Date.now()
          await d.retryLater(600)
        }
      })
      await t.bus.publish(subject, { id: 'later', data: null })
      await eventually('the redelivery', () => seen.length === 2)
      expect(seen[1]?.deliveryCount).toBe(2)
      expect(seen[1]?.data).toBeNull()
      expect((seen[1]?.at ?? 0) - askedAt).toBeGreaterThanOrEqual(600 - EARLY_TOLERANCE_MS)
    })

    it('behavior: a message whose notBefore is in the future is not delivered early, and does not hold back later messages', async () => {
      const seen: Seen[] = []
      consume({ group: 'g', seen, ackWaitMs: 5_000 })
      const notBefore = Date.now() + 700
      await t.bus.publish(subject, { id: 'delayed', data: 1, notBefore })
      await t.bus.publish(subject, { id: 'now', data: 2 })
      await eventually('both deliveries', () => seen.some((s) => s.id === 'delayed'))
      expect(seen.map((s) => s.id)).toEqual(['now', 'delayed'])
      expect(seen[1]?.at).toBeGreaterThanOrEqual(notBefore - EARLY_TOLERANCE_MS)
    })

    it('behavior: a message that fails maxDeliver times is dead-lettered', async () => {
      const seen: Seen[] = []
      const dead: Seen[] = []
      consume({ group: 'g', seen, maxDeliver: 3, retryDelayMs: 30, ackWaitMs: ACK_WAIT_MS }, async () => {
        throw new Error('still failing')
      })
      consume({ subject: deadLetterSubject(subject), group: 'dlq-reader', seen: dead })
      await t.bus.publish(subject, { id: 'flaky', data: {} })
      await eventually('the dead letter', () => dead.length === 1)
      expect(seen.map((s) => s.deliveryCount)).toEqual([1, 2, 3])
      expect(dead[0]?.headers[DEAD_LETTER_HEADERS.deliveryCount]).toBe('3')
      expect(dead[0]?.headers[DEAD_LETTER_HEADERS.reason]).toContain('still failing')
      await sleep(ACK_WAIT_MS * 2)
      expect(seen).toHaveLength(3)
    })

    it('behavior: an unsettled delivery is redelivered after ackWaitMs', async () => {
      const seen: Seen[] = []
      const hold = gate()
      consume({ group: 'g', seen, ackWaitMs: ACK_WAIT_MS, concurrency: 2 }, async (d) => {
        if (d.deliveryCount === 1) await hold.promise
      })
      await t.bus.publish(subject, { id: 'stuck', data: {} })
      await eventually('the redelivery', () => seen.length === 2)
      expect(seen[1]?.deliveryCount).toBe(2)
      // The lease starts when the adapter hands the message out, a little before the handler
      // sees it (and records `at`), so allow for that delivery latency.
      expect((seen[1]?.at ?? 0) - (seen[0]?.at ?? 0)).toBeGreaterThanOrEqual(ACK_WAIT_MS - 100)
    })

    it('behavior: working() extends the lease so a long handler is not redelivered', async () => {
      const seen: Seen[] = []
      let finished = false
      consume({ group: 'g', seen, ackWaitMs: ACK_WAIT_MS, concurrency: 2 }, async (d) => {
        for (let i = 0; i < 10; i++) {
          await sleep(ACK_WAIT_MS / 5)
          await d.working()
        }
        finished = true
      })
      await t.bus.publish(subject, { id: 'long', data: {} })
      await eventually('the handler to finish', () => finished)
      await sleep(ACK_WAIT_MS * 2)
      expect(seen).toHaveLength(1)
    })

    it('behavior: a delivery whose lease expires maxDeliver times is dead-lettered', async () => {
      const seen: Seen[] = []
      const dead: Seen[] = []
      const hold = gate()
      consume({ group: 'g', seen, ackWaitMs: 300, maxDeliver: 2, concurrency: 3 }, () => hold.promise)
      consume({ subject: deadLetterSubject(subject), group: 'dlq-reader', seen: dead })
      await t.bus.publish(subject, { id: 'hang', data: {} })
      await eventually('the dead letter', () => dead.length === 1)
      expect(seen.map((s) => s.deliveryCount)).toEqual([1, 2])
      expect(dead[0]?.headers[DEAD_LETTER_HEADERS.deliveryCount]).toBe('2')
      await sleep(600)
      expect(seen).toHaveLength(2)
    })

    it('behavior: messages are delivered in publish order to a group with concurrency 1', async () => {
      const seen: Seen[] = []
      let active = 0
      let maxActive = 0
      const before = ids(15, 'a')
      const after = ids(15, 'b')
      await publishAll(before)
      consume({ group: 'ordered', seen, concurrency: 1 }, async () => {
        active++
        maxActive = Math.max(maxActive, active)
        await sleep(Math.random() * 5)
        active--
      })
      await publishAll(after)
      await eventually('30 deliveries', () => seen.length >= 30)
      expect(seen.map((s) => s.id)).toEqual([...before, ...after])
      expect(maxActive).toBe(1)
    })

    it('behavior: concurrency bounds the handlers running at once', async () => {
      const seen: Seen[] = []
      let active = 0
      let maxActive = 0
      consume({ group: 'par', seen, concurrency: 4 }, async () => {
        active++
        maxActive = Math.max(maxActive, active)
        await sleep(100)
        active--
      })
      await publishAll(ids(12))
      await eventually('12 deliveries', () => seen.length >= 12)
      expect(maxActive).toBeLessThanOrEqual(4)
      expect(maxActive).toBeGreaterThan(1)
    })

    it('behavior: consume resolves after abort only once in-flight handlers have settled, and takes no new messages', async () => {
      const seen: Seen[] = []
      const hold = gate()
      const c = consume({ group: 'g', seen, ackWaitMs: 5_000 }, async (d) => {
        if (d.id === 'first') await hold.promise
      })
      let resolved = false
      void c.done.then(() => (resolved = true))
      await t.bus.publish(subject, { id: 'first', data: {} })
      await eventually('the first delivery', () => seen.length === 1)
      c.stop.abort()
      await t.bus.publish(subject, { id: 'second', data: {} })
      await sleep(300)
      expect(resolved).toBe(false)
      hold.open()
      await eventually('consume to resolve', () => resolved)
      expect(seen.map((s) => s.id)).toEqual(['first'])
      // The handler finished after the abort, so 'first' was acked: a new member gets only 'second'.
      const next: Seen[] = []
      consume({ group: 'g', seen: next })
      await eventually('the second message', () => next.length === 1)
      await sleep(300)
      expect(next.map((s) => [s.id, s.deliveryCount])).toEqual([['second', 1]])
    })

    it('behavior: a message published but not acked before close is delivered after reopening', async (ctx) => {
      if (t.reopen === undefined) {
        ctx.skip()
        return
      }
      const seen: Seen[] = []
      const hold = gate()
      consume({ group: 'g', seen, ackWaitMs: ACK_WAIT_MS }, () => hold.promise)
      await t.bus.publish(subject, { id: 'in-flight', data: { k: 1 } })
      await eventually('the first delivery', () => seen.length === 1)
      await t.bus.publish(subject, { id: 'queued', data: { k: 2 } })
      // A crash, as far as the bus can tell: the handler never settles, the bus goes away.
      await closeBus(t.bus)
      const bus2 = await t.reopen()
      buses.push(bus2)
      const after: Seen[] = []
      consume({ bus: bus2, group: 'g', seen: after, ackWaitMs: ACK_WAIT_MS })
      await eventually('both messages after reopening', () => after.length >= 2)
      hold.open()
      await sleep(300)
      expect(after.map((s) => s.id).sort()).toEqual(['in-flight', 'queued'])
      expect(after.find((s) => s.id === 'in-flight')).toMatchObject({ data: { k: 1 }, deliveryCount: 2 })
      expect(after.find((s) => s.id === 'queued')).toMatchObject({ data: { k: 2 }, deliveryCount: 1 })
    })
  })
}
