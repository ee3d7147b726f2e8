/**
 * The consume loop shared by the memory and local adapters. An adapter supplies a
 * {@link GroupStore} (claim, settle, lease) for one (subject, group); this module owns
 * concurrency, wake-ups, handler outcomes, `maxDeliver` and draining on abort.
 */
import { setMaxListeners } from 'node:events'
import { errorMessage, isRetryable, ProoflineError } from '../core/errors.js'
import type { Delivery, Handler } from './types.js'
import type { ResolvedConsumeOptions } from './validate.js'

/** The subset of a logger (pino's signature) the bus writes background failures to. */
export interface BusLogger {
  warn(obj: Record<string, unknown>, msg: string): void
}

/** Writes warnings to stderr; used when an adapter is given no logger. */
export const consoleLogger: BusLogger = {
  warn(obj, msg) {
    console.warn(`[proofline bus] ${msg}`, obj)
  },
}

/** A delivery claimed from a store; this consumer holds its lease. */
export interface Claimed {
  readonly subject: string
  readonly id: string
  readonly data: unknown
  readonly headers: Readonly<Record<string, string>>
  /** Deliveries so far including this one; it fences settles against a newer claim. */
  readonly deliveryCount: number
}

/**
 * Storage operations of one (subject, group). Settles of a claim whose lease was taken over by
 * a newer claim (a higher delivery count) must do nothing, except `ack`, which always marks
 * the message done (the work was done; at-least-once allows the other attempt to finish too).
 */
export interface GroupStore<C extends Claimed = Claimed> {
  /** Leases up to `max` available deliveries in publish order, incrementing their delivery count. */
  claim(max: number, ackWaitMs: number): Promise<C[]>
  ack(c: C): Promise<void>
  /** Makes the delivery available again after `delayMs`. */
  retry(c: C, delayMs: number): Promise<void>
  /** Removes the delivery and publishes its dead letter, atomically. */
  deadLetter(c: C, reason: string, deliveredCount: number): Promise<void>
  /** Extends the lease to `ackWaitMs` from now. */
  extend(c: C, ackWaitMs: number): Promise<void>
  /** Undoes a claim whose handler never ran (consumer stopping): available now, count restored. */
  release(c: C): Promise<void>
  /** Ms until some delivery of the group may become claimable (<= 0: now), or null if none is pending. */
  nextDueInMs(): Promise<number | null>
}

/** What `runConsumer` needs besides the store. */
export interface ConsumerParams<C extends Claimed> {
  store: GroupStore<C>
  handler: Handler<unknown>
  options: ResolvedConsumeOptions
  /** Aborts when the bus closes. */
  closed: AbortSignal
  /** Registers a callback for in-process publishes to the subject; returns the unregister function. */
  subscribe: (wake: () => void) => () => void
  /** Longest idle sleep before asking the store again (catches other processes' publishes). Null: no polling. */
  pollIntervalMs: number | null
  logger: BusLogger
  subject: string
  group: string
}

const MAX_BACKOFF_MS = 5_000

/** Runs until `options.signal` or `closed` aborts, then waits for in-flight handlers. */
export async function runConsumer<C extends Claimed>(p: ConsumerParams<C>): Promise<void> {
  const { store, options, closed } = p
  const stopped = () => options.signal.aborted || closed.aborted
  const running = new Set<Promise<void>>()
  let inFlight = 0
  let woken = false
  let waiter: (() => void) | null = null
  const wake = () => {
    woken = true
    const w = waiter
    waiter = null
    w?.()
  }
  const sleep = (ms: number) =>
    new Promise<void>((resolve) => {
      if (woken || stopped()) return resolve()
      const timer = Number.isFinite(ms) ? setTimeout(wake, Math.max(1, ms)) : null
      waiter = () => {
        if (timer !== null) clearTimeout(timer)
        resolve()
      }
    })

  const unsubscribe = p.subscribe(wake)
  options.signal.addEventListener('abort', wake)
  // Every consumer of a bus listens on its close signal; a pipeline has many (not a leak).
  setMaxListeners(0, closed)
  closed.addEventListener('abort', wake)
  let failures = 0
  try {
    while (!stopped()) {
      const free = options.concurrency - inFlight
      if (free <= 0) {
        woken = false
        await sleep(Infinity)
        continue
      }
      woken = false
      let claimed: C[]
      try {
        claimed = await store.claim(free, options.ackWaitMs)
        failures = 0
      } catch (err) {
        if (stopped()) break
        failures++
        const backoff = Math.min(MAX_BACKOFF_MS, 100 * 2 ** Math.min(failures, 6))
        p.logger.warn({ err, subject: p.subject, group: p.group, retryInMs: backoff }, 'bus: claiming deliveries failed; retrying')
        woken = false
        await sleep(backoff)
        continue
      }
      if (stopped()) {
        await Promise.all(claimed.map((c) => store.release(c).catch(() => {})))
        break
      }
      for (const c of claimed) {
        inFlight++
        let freed = false
        // The slot is free once the handler returns; the settle (a round trip) overlaps the next claim.
        const freeSlot = () => {
          if (freed) return
          freed = true
          inFlight--
          wake()
        }
        const task = handle(p, c, freeSlot).finally(() => {
          freeSlot()
          running.delete(task)
        })
        running.add(task)
      }
      if (claimed.length === free || woken) continue
      let dueMs: number | null = null
      try {
        dueMs = await store.nextDueInMs()
      } catch {
        dueMs = null
      }
      if (woken) continue
      let wait = dueMs === null ? Infinity : Math.max(dueMs, 2)
      if (p.pollIntervalMs !== null) wait = Math.min(wait, p.pollIntervalMs)
      await sleep(wait)
    }
  } finally {
    unsubscribe()
    options.signal.removeEventListener('abort', wake)
    closed.removeEventListener('abort', wake)
  }
  while (running.size > 0) await Promise.all(running)
}

async function handle<C extends Claimed>(p: ConsumerParams<C>, c: C, handlerDone: () => void): Promise<void> {
  const { maxDeliver } = p.options
  const delivery = new SettleOnce(p, c)
  try {
    if (c.deliveryCount > maxDeliver) {
      // The previous delivery (number maxDeliver) timed out: nothing is left to try.
      await delivery.settle(() => p.store.deadLetter(c, `maximum deliveries (${maxDeliver}) reached; the last lease expired`, c.deliveryCount - 1))
      return
    }
    try {
      await p.handler(delivery)
    } catch (err) {
      handlerDone()
      if (delivery.settled) return
      if (isRetryable(err)) await delivery.retry(p.options.retryDelayMs, `last error: ${describe(err)}`)
      else await delivery.giveUp(`non-retryable error: ${describe(err)}`)
      return
    }
    handlerDone()
    if (!delivery.settled) await delivery.ack()
  } catch (err) {
    if (p.closed.aborted) return
    p.logger.warn({ err, subject: c.subject, group: p.group, id: c.id }, 'bus: settling a delivery failed; it will be redelivered when its lease expires')
  }
}

function describe(err: unknown): string {
  return err instanceof ProoflineError ? `${err.code}: ${err.message}` : errorMessage(err)
}

/** A delivery whose first settle wins; later settles return the first one's promise. */
class SettleOnce<C extends Claimed> implements Delivery<unknown> {
  readonly subject: string
  readonly id: string
  readonly data: unknown
  readonly headers: Readonly<Record<string, string>>
  readonly deliveryCount: number
  #settled: Promise<void> | null = null
  readonly #p: ConsumerParams<C>
  readonly #c: C

  constructor(p: ConsumerParams<C>, c: C) {
    this.#p = p
    this.#c = c
    this.subject = c.subject
    this.id = c.id
    this.data = c.data
    this.headers = c.headers
    this.deliveryCount = c.deliveryCount
  }

  get settled(): boolean {
    return this.#settled !== null
  }

  settle(op: () => Promise<void>): Promise<void> {
    if (this.#settled === null) {
      // After close the store may be gone; the lease runs out and the message is redelivered.
      this.#settled = this.#p.closed.aborted ? Promise.resolve() : op()
    }
    return this.#settled
  }

  ack(): Promise<void> {
    return this.settle(() => this.#p.store.ack(this.#c))
  }

  retry(delayMs: number, why: string): Promise<void> {
    const max = this.#p.options.maxDeliver
    if (this.#c.deliveryCount >= max) {
      return this.settle(() => this.#p.store.deadLetter(this.#c, `maximum deliveries (${max}) reached; ${why}`, this.#c.deliveryCount))
    }
    return this.settle(() => this.#p.store.retry(this.#c, delayMs))
  }

  retryLater(delayMs: number): Promise<void> {
    const delay = Number.isFinite(delayMs) ? Math.max(0, Math.ceil(delayMs)) : this.#p.options.retryDelayMs
    return this.retry(delay, 'the handler asked to retry later')
  }

  giveUp(reason: string): Promise<void> {
    return this.settle(() => this.#p.store.deadLetter(this.#c, String(reason), this.#c.deliveryCount))
  }

  working(): Promise<void> {
    if (this.#settled !== null || this.#p.closed.aborted) return Promise.resolve()
    return this.#p.store.extend(this.#c, this.#p.options.ackWaitMs)
  }
}
