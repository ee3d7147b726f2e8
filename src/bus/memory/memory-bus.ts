import { runConsumer, consoleLogger, type BusLogger, type Claimed, type GroupStore } from '../consumer.js'
import { DEAD_LETTER_HEADERS, deadLetterId, deadLetterSubject, type Bus, type ConsumeOptions, type Handler, type OutgoingMessage } from '../types.js'
import { abortError, checkGroup, checkSubject, closedError, encodeMessage, resolveConsumeOptions } from '../validate.js'

/** Options of {@link memoryBus}. */
export interface MemoryBusOptions {
  /** How long a published id is remembered for dedupe (and a done message retained for new groups). @default 600000 */
  dedupeWindowMs?: number
  /** Where background failures are reported. @default console */
  logger?: BusLogger
}

interface StoredMessage {
  readonly seq: number
  readonly subject: string
  readonly id: string
  /** The data as JSON: each delivery decodes its own copy, as over a wire. */
  readonly json: string
  readonly headers: Readonly<Record<string, string>>
  readonly availableAt: number
  readonly publishedAt: number
  /** Deliveries of this message not yet acked or dead-lettered, over all groups. */
  pending: number
}

interface MemoryDelivery {
  readonly msg: StoredMessage
  count: number
  /** When it may be claimed: notBefore, retry time, or lease expiry. */
  availableAt: number
  leased: boolean
}

interface MemoryClaim extends Claimed {
  readonly seq: number
}

interface SubjectState {
  /** id → publish time, in publish order (a re-published id is moved to the end). */
  readonly ids: Map<string, number>
  /** Messages a new group still receives, in publish order. */
  readonly retained: Map<number, StoredMessage>
  readonly groups: Map<string, Map<number, MemoryDelivery>>
  readonly wakers: Set<() => void>
}

/**
 * An in-process bus: fast and not durable (everything is lost with the process). For unit
 * tests and benchmarks; it keeps the port's semantics (groups, dedupe, leases, dead letters).
 */
export function memoryBus(opts: MemoryBusOptions = {}): Bus {
  const dedupeWindowMs = opts.dedupeWindowMs ?? 600_000
  const logger = opts.logger ?? consoleLogger
  const subjects = new Map<string, SubjectState>()
  const closing = new AbortController()
  let nextSeq = 1

  const subjectState = (subject: string): SubjectState => {
    let s = subjects.get(subject)
    if (s === undefined) {
      s = { ids: new Map(), retained: new Map(), groups: new Map(), wakers: new Set() }
      subjects.set(subject, s)
    }
    return s
  }

  const prune = (s: SubjectState, now: number) => {
    const horizon = now - dedupeWindowMs
    for (const [id, at] of s.ids) {
      if (at > horizon) break
      s.ids.delete(id)
    }
    // Messages on a subject nobody consumes yet are kept for the first group.
    if (s.groups.size === 0) return
    for (const [seq, m] of s.retained) {
      if (m.publishedAt > horizon || m.pending > 0) break
      s.retained.delete(seq)
    }
  }

  const store = (subject: string, id: string, json: string, headers: Record<string, string>, notBefore: number | undefined): boolean => {
    const s = subjectState(subject)
    const now = Date.now()
    prune(s, now)
    if (s.ids.has(id)) return false
    s.ids.set(id, now)
    const msg: StoredMessage = { seq: nextSeq++, subject, id, json, headers, availableAt: Math.max(now, notBefore ?? 0), publishedAt: now, pending: 0 }
    s.retained.set(msg.seq, msg)
    for (const deliveries of s.groups.values()) {
      deliveries.set(msg.seq, { msg, count: 0, availableAt: msg.availableAt, leased: false })
      msg.pending++
    }
    for (const wake of s.wakers) wake()
    return true
  }

  const done = (deliveries: Map<number, MemoryDelivery>, seq: number) => {
    const d = deliveries.get(seq)
    if (d === undefined) return
    deliveries.delete(seq)
    d.msg.pending--
  }

  const groupStore = (subject: string, group: string, deliveries: Map<number, MemoryDelivery>): GroupStore<MemoryClaim> => {
    const current = (c: MemoryClaim) => {
      const d = deliveries.get(c.seq)
      return d !== undefined && d.count === c.deliveryCount ? d : undefined
    }
    return {
      claim(max, ackWaitMs) {
        const now = Date.now()
        const out: MemoryClaim[] = []
        for (const [seq, d] of deliveries) {
          if (out.length >= max) break
          if (d.availableAt > now) continue
          d.count++
          d.leased = true
          d.availableAt = now + ackWaitMs
          out.push({ seq, subject, id: d.msg.id, data: JSON.parse(d.msg.json) as unknown, headers: { ...d.msg.headers }, deliveryCount: d.count })
        }
        return Promise.resolve(out)
      },
      ack(c) {
        done(deliveries, c.seq)
        return Promise.resolve()
      },
      retry(c, delayMs) {
        const d = current(c)
        if (d !== undefined) {
          d.leased = false
          d.availableAt = Date.now() + delayMs
        }
        return Promise.resolve()
      },
      deadLetter(c, reason, deliveredCount) {
        const d = current(c)
        if (d === undefined) return Promise.resolve()
        done(deliveries, c.seq)
        const headers = {
          ...d.msg.headers,
          [DEAD_LETTER_HEADERS.reason]: reason,
          [DEAD_LETTER_HEADERS.subject]: subject,
          [DEAD_LETTER_HEADERS.group]: group,
          [DEAD_LETTER_HEADERS.id]: d.msg.id,
          [DEAD_LETTER_HEADERS.deliveryCount]: String(deliveredCount),
        }
        store(deadLetterSubject(subject), deadLetterId(group, d.msg.id), d.msg.json, headers, undefined)
        return Promise.resolve()
      },
      extend(c, ackWaitMs) {
        const d = current(c)
        if (d?.leased === true) d.availableAt = Date.now() + ackWaitMs
        return Promise.resolve()
      },
      release(c) {
        const d = current(c)
        if (d !== undefined) {
          d.count--
          d.leased = false
          d.availableAt = Date.now()
        }
        return Promise.resolve()
      },
      nextDueInMs() {
        let min = Infinity
        for (const d of deliveries.values()) if (d.availableAt < min) min = d.availableAt
        return Promise.resolve(min === Infinity ? null : min - Date.now())
      },
    }
  }

  return {
    publish<T>(subject: string, msg: OutgoingMessage<T>, popts?: { signal?: AbortSignal }): Promise<{ duplicate: boolean }> {
      try {
        if (closing.signal.aborted) throw closedError()
        if (popts?.signal?.aborted === true) throw abortError(popts.signal)
        const json = encodeMessage(subject, msg)
        return Promise.resolve({ duplicate: !store(subject, msg.id, json, { ...msg.headers }, msg.notBefore) })
      } catch (err) {
        return Promise.reject(err as Error)
      }
    },

    async consume<T>(subject: string, group: string, handler: Handler<T>, copts: ConsumeOptions): Promise<void> {
      const options = resolveConsumeOptions(copts)
      checkSubject(subject)
      checkGroup(group)
      if (closing.signal.aborted) throw closedError()
      if (options.signal.aborted) return
      const s = subjectState(subject)
      let deliveries = s.groups.get(group)
      if (deliveries === undefined) {
        deliveries = new Map()
        for (const msg of s.retained.values()) {
          deliveries.set(msg.seq, { msg, count: 0, availableAt: msg.availableAt, leased: false })
          msg.pending++
        }
        s.groups.set(group, deliveries)
      }
      await runConsumer({
        store: groupStore(subject, group, deliveries),
        handler: handler as Handler<unknown>,
        options,
        closed: closing.signal,
        subscribe: (wake) => {
          s.wakers.add(wake)
          return () => s.wakers.delete(wake)
        },
        pollIntervalMs: null,
        logger,
        subject,
        group,
      })
    },

    close(): Promise<void> {
      closing.abort()
      return Promise.resolve()
    },
  }
}
