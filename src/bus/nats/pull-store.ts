/**
 * A {@link GroupStore} over one JetStream durable pull consumer, so the shared consume loop
 * (`../consumer.ts`) drives NATS the way it drives the other adapters.
 *
 * Flow control: a message is pulled only for a free handler slot. `claim(max)` keeps at most
 * `max` messages requested or buffered (JetStream starts the lease, `ack_wait`, when it sends a
 * message, so prefetching more than the free slots would burn leases of messages nobody works
 * on). Each pull is a `fetch` of the missing count with a short expiry; a claim returns as soon
 * as one message is in, and what the same fetch brings later waits in a small buffer for the
 * next claim.
 */
import type { Consumer, ConsumerMessages, JsMsg } from '@nats-io/jetstream'
import { BusError, errorMessage } from '../../core/errors.js'
import type { BusLogger, Claimed, GroupStore } from '../consumer.js'
import { isNatsHeader, NOT_BEFORE_HEADER, portId } from './names.js'

/** A delivery held by this process. */
export interface NatsClaim extends Claimed {
  readonly msg: JsMsg
  /** The payload as stored, republished unchanged by dead-lettering. */
  readonly payload: Uint8Array
  /** Key of the message in the hold counter. */
  readonly holdKey: string
}

/**
 * Counts, per message, the deliveries JetStream made before the message's `notBefore` (each
 * was `nak`ed with the remaining delay and never reached a handler), so `deliveryCount`
 * counts handler deliveries only. Process-local: a message held in one process and handled in
 * another reports one delivery more (see docs/bus-nats.md).
 */
export class HoldCounter {
  readonly #holds = new Map<string, number>()
  readonly #max: number

  constructor(max = 10_000) {
    this.#max = max
  }

  get(key: string): number {
    return this.#holds.get(key) ?? 0
  }

  add(key: string): void {
    this.#holds.set(key, this.get(key) + 1)
    // Entries of messages settled elsewhere are never deleted here: bound the map.
    if (this.#holds.size > this.#max) {
      const oldest = this.#holds.keys().next()
      if (oldest.done !== true) this.#holds.delete(oldest.value)
    }
  }

  delete(key: string): void {
    this.#holds.delete(key)
  }
}

/** What a {@link PullStore} needs from the bus. */
export interface PullStoreParams {
  /** Port subject and group, for deliveries and logs. */
  subject: string
  group: string
  /** Name of the durable consumer (the hold counter's key space). */
  consumerName: string
  /** Returns the consumer; `recreate` after it was reported missing (deleted, server state lost). */
  open(recreate: boolean): Promise<Consumer>
  /** Publishes the dead letter of `c` and terminates it. */
  deadLetter(c: NatsClaim, reason: string, deliveredCount: number): Promise<void>
  holds: HoldCounter
  /** Stop pulling when any of these aborts. */
  signals: AbortSignal[]
  /** Expiry of one pull request. At least 1000 (the client's minimum). */
  pullExpiresMs: number
  logger: BusLogger
}

const decoder = new TextDecoder()
const encoder = new TextEncoder()
/** A pull that ends this fast with nothing and no error is treated as a failure (no hot loop). */
const EARLY_END_MS = 100
/** Grace after a pull's expiry before it is abandoned (heartbeats lost with the connection). */
const PULL_GRACE_MS = 10_000

/** The port's view of a message's headers: the publisher's, without NATS's and the adapter's own. */
export function userHeaders(msg: JsMsg): Record<string, string> {
  const out: Record<string, string> = {}
  const h = msg.headers
  if (h === undefined) return out
  for (const k of h.keys()) {
    if (isNatsHeader(k) || k.toLowerCase() === NOT_BEFORE_HEADER.toLowerCase()) continue
    out[k] = h.get(k)
  }
  return out
}

function notBeforeOf(msg: JsMsg): number | null {
  const v = msg.headers?.get(NOT_BEFORE_HEADER)
  if (v === undefined || v === '') return null
  const n = Number(v)
  return Number.isFinite(n) ? n : null
}

function missingResource(err: unknown): boolean {
  return /consumer (not found|deleted)|stream (not found|deleted)/i.test(errorMessage(err))
}

/** Runs a fire-and-forget client call (ack, nak, term, working) as a promise. */
function send(what: string, op: () => void): Promise<void> {
  try {
    op()
    return Promise.resolve()
  } catch (err) {
    return Promise.reject(new BusError('BUS_UNAVAILABLE', `nats bus: ${what} failed: ${errorMessage(err)}`, { retryable: true, cause: err }))
  }
}

/** One (subject, group) member's view of its durable consumer. Call {@link stop} when done. */
export class PullStore implements GroupStore<NatsClaim> {
  readonly #p: PullStoreParams
  #consumer: Consumer | null = null
  #recreate = false
  readonly #buffer: JsMsg[] = []
  /** Messages asked for by open pulls and not received yet. */
  #requested = 0
  readonly #pulls = new Set<ConsumerMessages>()
  readonly #readers = new Set<Promise<void>>()
  readonly #background = new Set<Promise<void>>()
  #error: unknown = null
  #wake: (() => void) | null = null
  #stopped = false

  constructor(p: PullStoreParams) {
    this.#p = p
    for (const s of p.signals) {
      if (s.aborted) this.#halt()
      else s.addEventListener('abort', this.#halt)
    }
  }

  /** Stops pulling at once: open pulls are cancelled (their inbox unsubscribed) synchronously. */
  readonly #halt = (): void => {
    this.#stopped = true
    for (const pull of this.#pulls) pull.stop()
    this.#notify()
  }

  #notify(): void {
    const w = this.#wake
    this.#wake = null
    w?.()
  }

  async claim(max: number): Promise<NatsClaim[]> {
    for (;;) {
      if (this.#stopped) return []
      const out: NatsClaim[] = []
      while (out.length < max && this.#buffer.length > 0) {
        const c = this.#accept(this.#buffer.shift() as JsMsg)
        if (c !== null) out.push(c)
      }
      if (out.length > 0) return out
      if (this.#error !== null) {
        const err = this.#error
        this.#error = null
        throw err
      }
      const want = max - this.#requested
      if (want > 0) await this.#pull(want)
      if (this.#buffer.length === 0 && this.#error === null && !this.#stopped) {
        await new Promise<void>((resolve) => (this.#wake = resolve))
      }
    }
  }

  async #pull(want: number): Promise<void> {
    if (this.#consumer === null || this.#recreate) {
      const recreate = this.#recreate
      this.#recreate = false
      try {
        this.#consumer = await this.#p.open(recreate)
      } catch (err) {
        this.#recreate = recreate
        throw err
      }
    }
    if (this.#stopped) return
    let pull: ConsumerMessages
    try {
      pull = await this.#consumer.fetch({ max_messages: want, expires: this.#p.pullExpiresMs })
    } catch (err) {
      throw new BusError('BUS_UNAVAILABLE', `nats bus: pulling from ${this.#p.consumerName} failed: ${errorMessage(err)}`, { retryable: true, cause: err })
    }
    this.#requested += want
    this.#pulls.add(pull)
    if (this.#stopped) pull.stop()
    const started = Date.now()
    let received = 0
    const watchdog = setTimeout(() => pull.stop(), this.#p.pullExpiresMs + PULL_GRACE_MS)
    const reader = (async () => {
      try {
        for await (const m of pull) {
          received++
          this.#requested--
          if (this.#stopped) {
            // Arrived after the consumer stopped: hand it back at once rather than at lease expiry.
            this.#release(m)
            continue
          }
          this.#buffer.push(m)
          this.#notify()
        }
      } catch (err) {
        if (!this.#stopped) {
          if (missingResource(err)) this.#recreate = true
          this.#error = new BusError('BUS_UNAVAILABLE', `nats bus: pull from ${this.#p.consumerName} failed: ${errorMessage(err)}`, { retryable: true, cause: err })
        }
      } finally {
        clearTimeout(watchdog)
        this.#pulls.delete(pull)
        this.#requested -= want - received
        if (!this.#stopped && received === 0 && this.#error === null && Date.now() - started < EARLY_END_MS) {
          this.#error = new BusError('BUS_UNAVAILABLE', `nats bus: a pull from ${this.#p.consumerName} ended at once without messages`, { retryable: true })
        }
        this.#notify()
      }
    })()
    this.#readers.add(reader)
    void reader.then(() => this.#readers.delete(reader))
  }

  /** Turns a received message into a claim, or holds it back (notBefore) / dead-letters it (not JSON). */
  #accept(msg: JsMsg): NatsClaim | null {
    const holdKey = `${this.#p.consumerName}:${msg.seq}`
    const notBefore = notBeforeOf(msg)
    const now = Date.now()
    if (notBefore !== null && notBefore > now) {
      this.#p.holds.add(holdKey)
      this.#nak(msg, Math.ceil(notBefore - now))
      return null
    }
    const deliveryCount = Math.max(1, msg.info.deliveryCount - this.#p.holds.get(holdKey))
    const msgId = msg.headers?.get('Nats-Msg-Id') ?? ''
    const base = {
      msg,
      payload: msg.data,
      holdKey,
      subject: this.#p.subject,
      id: msgId === '' ? `seq-${msg.seq}` : portId(this.#p.subject, msgId),
      headers: userHeaders(msg),
      deliveryCount,
    }
    try {
      return { ...base, data: msg.data.length === 0 ? null : (JSON.parse(decoder.decode(msg.data)) as unknown) }
    } catch (err) {
      // The dead letter carries the text as a JSON string, so a dead-letter reader can take it.
      const text = decoder.decode(msg.data)
      const letter = { ...base, data: text, payload: encoder.encode(JSON.stringify(text)) }
      const task = this.#p.deadLetter(letter, `payload is not JSON (${errorMessage(err)}); the dead letter's data is the payload as a string`, deliveryCount).catch((e: unknown) => {
        this.#p.logger.warn({ err: e, subject: this.#p.subject, group: this.#p.group, seq: msg.seq }, 'bus: dead-lettering a non-JSON message failed; it will be redelivered')
      })
      this.#background.add(task)
      void task.then(() => this.#background.delete(task))
      return null
    }
  }

  #nak(msg: JsMsg, delayMs?: number): void {
    try {
      msg.nak(delayMs)
    } catch {
      // Connection closed: the lease runs out and the message is redelivered.
    }
  }

  #release(msg: JsMsg): void {
    this.#nak(msg)
  }

  ack(c: NatsClaim): Promise<void> {
    this.#p.holds.delete(c.holdKey)
    return send('ack', () => c.msg.ack())
  }

  retry(c: NatsClaim, delayMs: number): Promise<void> {
    // nak(0) is a plain NAK: redeliver now.
    return send('nak', () => c.msg.nak(delayMs))
  }

  async deadLetter(c: NatsClaim, reason: string, deliveredCount: number): Promise<void> {
    await this.#p.deadLetter(c, reason, deliveredCount)
    this.#p.holds.delete(c.holdKey)
  }

  extend(c: NatsClaim): Promise<void> {
    return send('working', () => c.msg.working())
  }

  /** JetStream cannot un-count a delivery: a released message comes back with its count increased. */
  release(c: NatsClaim): Promise<void> {
    return send('nak', () => c.msg.nak())
  }

  /** Claims long-poll the server, so there is never a reason to sleep between them. */
  nextDueInMs(): Promise<number | null> {
    return Promise.resolve(0)
  }

  /** Cancels open pulls, hands back buffered messages, and waits for background work. */
  async stop(): Promise<void> {
    this.#halt()
    for (const s of this.#p.signals) s.removeEventListener('abort', this.#halt)
    while (this.#readers.size > 0) await Promise.all([...this.#readers])
    for (const m of this.#buffer.splice(0)) this.#release(m)
    while (this.#background.size > 0) await Promise.all([...this.#background])
  }
}
