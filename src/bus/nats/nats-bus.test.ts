import { randomBytes } from 'node:crypto'
import { jetstream, jetstreamManager, RetentionPolicy, type JetStreamManager } from '@nats-io/jetstream'
import type { NatsConnection } from '@nats-io/nats-core'
import { connect } from '@nats-io/transport-node'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import type { BusLogger } from '../consumer.js'
import { busConformance } from '../conformance.js'
import { DEAD_LETTER_HEADERS, deadLetterSubject, type Bus, type ConsumeOptions, type Delivery } from '../types.js'
import { consumerName, natsMsgId, portId } from './names.js'
import { natsBus, type NatsBusOptions } from './nats-bus.js'
import { privateNatsServer, type PrivateNatsServer } from './nats-server.fixture.js'

const NATS_URL = process.env.PROOFLINE_TEST_NATS_URL ?? 'nats://127.0.0.1:4222'
const quiet: BusLogger = process.env.PROOFLINE_TEST_VERBOSE === '1' ? { warn: (o, m) => console.warn(m, o) } : { warn: () => {} }

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))

async function until(what: string, cond: () => boolean, ms = 20_000): Promise<void> {
  const end = Date.now() + ms
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`)
    await sleep(5)
  }
}

/** A fresh stream and subject prefix, so tests never see each other's messages. */
function namespace(): Pick<NatsBusOptions, 'stream' | 'subjectPrefix'> & { stream: string; subjectPrefix: string } {
  const suffix = randomBytes(5).toString('hex')
  return { stream: `PLTEST_${suffix}`, subjectPrefix: `pltest${suffix}` }
}

let admin: { nc: NatsConnection; jsm: JetStreamManager } | null = null
async function adminJsm(): Promise<JetStreamManager> {
  if (admin === null) {
    const nc = await connect({ servers: NATS_URL })
    admin = { nc, jsm: await jetstreamManager(nc) }
  }
  return admin.jsm
}

async function deleteStream(name: string): Promise<void> {
  const jsm = await adminJsm()
  await jsm.streams.delete(name).catch((err: unknown) => {
    if (!/not found/i.test(String(err))) throw err
  })
}

afterAll(async () => {
  await admin?.nc.close()
})

busConformance('nats', async () => {
  const opts: NatsBusOptions = { servers: NATS_URL, ...namespace(), logger: quiet }
  const bus = await natsBus(opts)
  return {
    bus,
    reopen: () => natsBus(opts),
    cleanup: () => deleteStream(opts.stream as string),
  }
})

describe('natsBus names', () => {
  it('behavior: consumer names are legal in NATS and distinct for pairs that read alike', () => {
    const a = consumerName('a.b_c', 'g')
    const b = consumerName('a_b.c', 'g')
    expect(a).not.toBe(b)
    for (const n of [a, b, consumerName('jobs.range', 'dispatcher-range'), consumerName('x'.repeat(255), 'y'.repeat(255))]) {
      expect(n).toMatch(/^[A-Za-z0-9_-]+$/)
      expect(n.length).toBeLessThanOrEqual(140)
    }
    expect(consumerName('jobs.range', 'dispatcher-range')).toMatch(/^dispatcher-range__jobs_range_[0-9a-f]{10}$/)
  })

  it('behavior: message ids are scoped by subject and read back unchanged', () => {
    expect(natsMsgId('jobs.range', 'r1')).toBe('jobs.range/r1')
    expect(portId('jobs.range', natsMsgId('jobs.range', 'a/b'))).toBe('a/b')
    expect(portId('jobs.range', 'foreign-id')).toBe('foreign-id')
  })
})

describe('natsBus', () => {
  const cleanups: Array<() => Promise<void>> = []
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c()
  })

  const open = async (extra: Partial<NatsBusOptions> = {}) => {
    const ns = namespace()
    cleanups.push(() => deleteStream(ns.stream))
    const bus = await natsBus({ servers: NATS_URL, ...ns, logger: quiet, ...extra })
    cleanups.push(() => bus.close())
    return { bus, ...ns }
  }

  const collect = (bus: Bus, subject: string, group: string, opts: Omit<ConsumeOptions, 'signal'> = {}, onDelivery?: (d: Delivery) => Promise<void>) => {
    const stop = new AbortController()
    const got: Delivery[] = []
    const done = bus.consume(subject, group, async (d) => {
      got.push(d)
      if (onDelivery !== undefined) await onDelivery(d)
    }, { signal: stop.signal, ...opts })
    cleanups.push(async () => {
      stop.abort()
      await done
    })
    return { got, stop, done }
  }

  it('behavior: the stream uses limits retention and file storage over <prefix>.>, with one durable explicit-ack pull consumer per (subject, group)', async () => {
    const { bus, stream, subjectPrefix } = await open()
    const c = collect(bus, 'jobs.range', 'dispatcher', { ackWaitMs: 7_000 })
    await bus.publish('jobs.range', { id: 'j1', data: 1 })
    await until('the delivery', () => c.got.length === 1)
    const jsm = await adminJsm()
    const si = await jsm.streams.info(stream)
    expect(si.config).toMatchObject({ subjects: [`${subjectPrefix}.>`], retention: 'limits', storage: 'file', num_replicas: 1, duplicate_window: 600_000_000_000 })
    const ci = await jsm.consumers.info(stream, consumerName('jobs.range', 'dispatcher'))
    expect(ci.config).toMatchObject({
      durable_name: consumerName('jobs.range', 'dispatcher'),
      filter_subject: `${subjectPrefix}.jobs.range`,
      ack_policy: 'explicit',
      deliver_policy: 'all',
      ack_wait: 7_000_000_000,
    })
    expect(ci.config.deliver_subject).toBeUndefined()
    expect(ci.config.max_deliver).toBe(-1)
    expect(ci.config.max_ack_pending).toBe(-1)
    const raw = await jsm.streams.getMessage(stream, { seq: 1 })
    expect(raw?.subject).toBe(`${subjectPrefix}.jobs.range`)
    expect(raw?.header.get('Nats-Msg-Id')).toBe('jobs.range/j1')
  })

  it('behavior: opening again updates the explicitly given stream settings and keeps the rest', async () => {
    const { bus, stream, subjectPrefix } = await open({ duplicateWindowMs: 120_000 })
    await bus.close()
    const again = await natsBus({ servers: NATS_URL, stream, subjectPrefix, logger: quiet, maxAgeMs: 3_600_000 })
    cleanups.push(() => again.close())
    const si = await (await adminJsm()).streams.info(stream)
    expect(si.config.duplicate_window).toBe(120_000_000_000)
    expect(si.config.max_age).toBe(3_600_000_000_000)
  })

  it('behavior: opening refuses a stream with work-queue retention, saying what to do', async () => {
    const ns = namespace()
    const jsm = await adminJsm()
    await jsm.streams.add({ name: ns.stream, subjects: [`${ns.subjectPrefix}.>`], retention: RetentionPolicy.Workqueue })
    cleanups.push(() => deleteStream(ns.stream))
    await expect(natsBus({ servers: NATS_URL, ...ns, logger: quiet })).rejects.toMatchObject({
      code: 'BUS_MISCONFIGURED',
      retryable: false,
      message: expect.stringContaining('limits retention') as unknown,
    })
  })

  it('behavior: opening rejects with a retryable BUS_UNAVAILABLE when no server listens', async () => {
    const server = await privateNatsServer()
    cleanups.push(() => server.dispose())
    const started = Date.now()
    await expect(natsBus({ servers: server.url, ...namespace(), logger: quiet, timeoutMs: 1_000 })).rejects.toMatchObject({ code: 'BUS_UNAVAILABLE', retryable: true })
    expect(Date.now() - started).toBeLessThan(10_000)
  })

  it('behavior: invalid options and reserved headers are refused with BUS_INVALID_ARGUMENT', async () => {
    await expect(natsBus({ servers: NATS_URL, stream: 'a.b' })).rejects.toMatchObject({ code: 'BUS_INVALID_ARGUMENT' })
    await expect(natsBus({ servers: NATS_URL, subjectPrefix: 'p.*' })).rejects.toMatchObject({ code: 'BUS_INVALID_ARGUMENT' })
    await expect(natsBus({ servers: NATS_URL, duplicateWindowMs: 600_000, maxAgeMs: 1_000 })).rejects.toMatchObject({ code: 'BUS_INVALID_ARGUMENT' })
    const { bus } = await open()
    await expect(bus.publish('s', { id: 'a', data: 1, headers: { 'Nats-Expected-Stream': 'x' } })).rejects.toMatchObject({ code: 'BUS_INVALID_ARGUMENT' })
    await expect(bus.publish('s', { id: 'a', data: 1, headers: { 'bad key': 'x' } })).rejects.toMatchObject({ code: 'BUS_INVALID_ARGUMENT' })
    await expect(bus.publish('s', { id: 'a', data: 1, headers: { k: 'line\nbreak' } })).rejects.toMatchObject({ code: 'BUS_INVALID_ARGUMENT' })
    await expect(bus.publish('s', { id: 'a\nb', data: 1 })).rejects.toMatchObject({ code: 'BUS_INVALID_ARGUMENT' })
    await expect(bus.publish('s', { id: 'a', data: 'x'.repeat(2 * 1024 * 1024) })).rejects.toMatchObject({ code: 'BUS_INVALID_ARGUMENT', retryable: false })
  })

  it('behavior: dedupe is per subject: the same id on two subjects is stored twice', async () => {
    const { bus } = await open()
    await expect(bus.publish('blocks', { id: 'same', data: 1 })).resolves.toEqual({ duplicate: false })
    await expect(bus.publish('jobs.range', { id: 'same', data: 2 })).resolves.toEqual({ duplicate: false })
    await expect(bus.publish('jobs.range', { id: 'same', data: 3 })).resolves.toEqual({ duplicate: true })
    const a = collect(bus, 'blocks', 'g')
    const b = collect(bus, 'jobs.range', 'g')
    await until('both', () => a.got.length === 1 && b.got.length === 1)
    expect([a.got[0]?.id, a.got[0]?.data, b.got[0]?.id, b.got[0]?.data]).toEqual(['same', 1, 'same', 2])
  })

  it('behavior: a message held back by notBefore is handed over once, as delivery 1', async () => {
    const { bus } = await open()
    const c = collect(bus, 's', 'g', { ackWaitMs: 5_000 })
    const notBefore = Date.now() + 400
    await bus.publish('s', { id: 'later', data: {}, notBefore, headers: { h: 'v' } })
    await until('the delivery', () => c.got.length === 1)
    expect(Date.now()).toBeGreaterThanOrEqual(notBefore)
    expect(c.got[0]).toMatchObject({ id: 'later', deliveryCount: 1, headers: { h: 'v' } })
    await sleep(300)
    expect(c.got).toHaveLength(1)
  })

  it('behavior: more than 1000 messages waiting on notBefore do not stall the group', async () => {
    const { bus } = await open()
    const notBefore = Date.now() + 60_000
    await Promise.all(Array.from({ length: 1_100 }, (_, i) => bus.publish('s', { id: `later${i}`, data: i, notBefore })))
    await bus.publish('s', { id: 'now', data: 0 })
    const c = collect(bus, 's', 'g', { concurrency: 32 })
    await until('the message behind the delayed ones', () => c.got.length === 1, 30_000)
    expect(c.got[0]?.id).toBe('now')
  })

  it('behavior: a group whose consumer an operator deleted is recreated and consumption goes on', async () => {
    const { bus, stream } = await open()
    const c = collect(bus, 's', 'g')
    await bus.publish('s', { id: 'before', data: 1 })
    await until('the first delivery', () => c.got.length === 1)
    await sleep(200)
    await (await adminJsm()).consumers.delete(stream, consumerName('s', 'g'))
    await bus.publish('s', { id: 'after', data: 2 })
    await until('the message published after the deletion', () => c.got.some((d) => d.id === 'after'), 30_000)
  })

  it('behavior: lease: a handler longer than ackWait that calls working() is not redelivered; one that does not call it is', async () => {
    const { bus } = await open()
    const ackWaitMs = 1_000
    const withWorking = collect(bus, 'lease.a', 'g', { ackWaitMs, concurrency: 2 }, async (d) => {
      for (let i = 0; i < 6; i++) {
        await sleep(ackWaitMs / 2)
        await d.working()
      }
    })
    let release!: () => void
    const hold = new Promise<void>((r) => (release = r))
    const without = collect(bus, 'lease.b', 'g', { ackWaitMs, concurrency: 2 }, async (d) => {
      if (d.deliveryCount === 1) await hold
    })
    // Cleanups run last-first: open the gate before stopping the consumer that waits on it.
    cleanups.push(async () => release())
    await bus.publish('lease.a', { id: 'long', data: {} })
    await bus.publish('lease.b', { id: 'long', data: {} })
    await until('the redelivery without working()', () => without.got.length === 2)
    expect(without.got.map((d) => d.deliveryCount)).toEqual([1, 2])
    await sleep(ackWaitMs * 3 + 500)
    expect(withWorking.got.map((d) => d.deliveryCount)).toEqual([1])
  })

  it('behavior: a payload that is not JSON (another client published it) is dead-lettered, its text as the data', async () => {
    const { bus, subjectPrefix, stream } = await open()
    const nc = await connect({ servers: NATS_URL })
    cleanups.push(() => nc.close())
    await jetstream(nc).publish(`${subjectPrefix}.s`, 'not json {', { msgID: 'raw' })
    const seen = collect(bus, 's', 'g')
    const dead = collect(bus, deadLetterSubject('s'), 'reader')
    await bus.publish('s', { id: 'fine', data: 1 })
    await until('the dead letter and the good message', () => dead.got.length === 1 && seen.got.length === 1)
    expect(seen.got[0]?.id).toBe('fine')
    expect(dead.got[0]?.headers[DEAD_LETTER_HEADERS.reason]).toContain('not JSON')
    expect(dead.got[0]).toMatchObject({ data: 'not json {', headers: { [DEAD_LETTER_HEADERS.id]: 'raw', [DEAD_LETTER_HEADERS.group]: 'g' } })
    await sleep(500)
    expect(dead.got).toHaveLength(1)
    const stored = await (await adminJsm()).streams.info(stream)
    // raw, fine, and one dead letter (none of the dead letter itself).
    expect(stored.state.messages).toBe(3)
  })

  it('behavior: 10k messages are published and consumed exactly once each (throughput, logged)', async () => {
    const { bus } = await open()
    const n = 10_000
    const ids = Array.from({ length: n }, (_, i) => `m${i}`)
    const window = 256
    let next = 0
    const t0 = performance.now()
    await Promise.all(
      Array.from({ length: window }, async () => {
        while (next < n) {
          const id = ids[next++] as string
          await bus.publish('bench', { id, data: { i: id, pad: 'x'.repeat(100) } })
        }
      }),
    )
    const publishMs = performance.now() - t0
    const seen = new Set<string>()
    let deliveries = 0
    const t1 = performance.now()
    collect(bus, 'bench', 'g', { concurrency: 64 }, async (d) => {
      deliveries++
      seen.add(d.id)
    })
    await until('10k deliveries', () => seen.size === n, 50_000)
    const consumeMs = performance.now() - t1
    const t2 = performance.now()
    for (let i = 0; i < 1_000; i++) await bus.publish('bench.seq', { id: `s${i}`, data: { i } })
    const seqMs = performance.now() - t2
    console.log(
      `nats bus on ${NATS_URL}: publish ${Math.round(n / (publishMs / 1000))}/s (${window} in flight), ` +
        `sequential publish ${Math.round(1_000 / (seqMs / 1000))}/s, consume ${Math.round(n / (consumeMs / 1000))}/s (concurrency 64)`,
    )
    await sleep(500)
    expect(deliveries).toBe(n)
  })
})

describe('natsBus across a nats-server restart', () => {
  let server: PrivateNatsServer
  beforeAll(async () => {
    server = await privateNatsServer()
    await server.start()
  })
  afterAll(async () => {
    await server.dispose()
  })

  it('behavior: after SIGKILL and restart, consumption resumes by itself, unacked messages are redelivered, and publishes during the outage fail with a retryable BUS_UNAVAILABLE', async () => {
    const bus = await natsBus({ servers: server.url, stream: 'RESTART', subjectPrefix: 'restart', logger: quiet })
    const stop = new AbortController()
    let release!: () => void
    const hold = new Promise<void>((r) => (release = r))
    const got: Array<[string, number]> = []
    const consuming = bus.consume(
      'work',
      'g',
      async (d) => {
        got.push([d.id, d.deliveryCount])
        if (d.id === 'a' && d.deliveryCount === 1) await hold
      },
      { signal: stop.signal, ackWaitMs: 2_000, concurrency: 4 },
    )
    try {
      await bus.publish('work', { id: 'a', data: { n: 1 } })
      await bus.publish('work', { id: 'b', data: { n: 2 } })
      await until('a and b', () => got.length === 2)
      await server.kill()
      await sleep(300)
      await expect(bus.publish('work', { id: 'x', data: {} })).rejects.toMatchObject({ code: 'BUS_UNAVAILABLE', retryable: true })
      await server.start()
      // Publishing works again once the client has reconnected.
      const deadline = Date.now() + 30_000
      for (;;) {
        try {
          await bus.publish('work', { id: 'c', data: { n: 3 } })
          break
        } catch (err) {
          expect(err).toMatchObject({ code: 'BUS_UNAVAILABLE', retryable: true })
          if (Date.now() > deadline) throw err
          await sleep(200)
        }
      }
      await until('c, and a redelivered after its lease', () => got.some(([id]) => id === 'c') && got.some(([id, n]) => id === 'a' && n === 2), 30_000)
      // A group created after the restart gets everything the stream kept, and not the failed publish.
      const late: string[] = []
      const lateStop = new AbortController()
      const lateDone = bus.consume('work', 'late', async (d) => void late.push(d.id), { signal: lateStop.signal })
      await until('the retained messages', () => late.length >= 3, 30_000)
      await sleep(300)
      lateStop.abort()
      await lateDone
      expect(late).toEqual(['a', 'b', 'c'])
    } finally {
      release()
      stop.abort()
      await consuming
      await bus.close()
    }
  })
})
