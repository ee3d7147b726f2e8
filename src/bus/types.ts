/**
 * The message bus port. Delivery is at-least-once; every consumer must be idempotent
 * (the state store decides what is done, the bus only delivers work).
 *
 * Subjects are dot-separated tokens of `[A-Za-z0-9_-]` (`jobs.range`), group names a single
 * such token (`dispatcher-range`), so that every adapter can map them to NATS unchanged.
 */

/** A message as published. `id` is content-derived; the same id twice is stored once. */
export interface OutgoingMessage<T = unknown> {
  id: string
  /** A JSON value. It is delivered as it reads after a JSON round trip (`undefined` becomes `null`). */
  data: T
  headers?: Record<string, string>
  /**
   * Earliest delivery time (ms since epoch). Adapters that cannot delay a publish deliver
   * it early and the consumer side re-queues it until then (see `consume`).
   */
  notBefore?: number
}

/** A message as delivered to a handler. */
export interface Delivery<T = unknown> {
  readonly subject: string
  readonly id: string
  readonly data: T
  readonly headers: Readonly<Record<string, string>>
  /** 1 on the first delivery to this consumer group, then 2, 3, … */
  readonly deliveryCount: number
  /**
   * Marks the message done for this group. Idempotent. The first of `ack`, `retryLater` and
   * `giveUp` settles the delivery; later calls return the first call's result and do nothing.
   */
  ack(): Promise<void>
  /**
   * Redeliver to this group (to any member) after `delayMs`. Counts as a delivery: when this
   * was delivery number `maxDeliver`, the message is dead-lettered instead (see `giveUp`).
   */
  retryLater(delayMs: number): Promise<void>
  /**
   * Never redeliver to this group; the message is copied to `dlq.<subject>` with the reason.
   * The copy has id `<group>:<id>` (so each group dead-letters a message once), the original
   * data, and the original headers plus {@link DEAD_LETTER_HEADERS}.
   */
  giveUp(reason: string): Promise<void>
  /**
   * Extends the lease (ack deadline) by the consumer's ack wait. Call it while long work runs.
   * Does nothing once the delivery is settled, or when the lease already expired and the
   * message was handed to another delivery attempt.
   */
  working(): Promise<void>
}

/**
 * Handles one delivery. If it resolves without settling the delivery, the delivery is acked.
 * If it throws, the delivery is retried later when the error is retryable (see
 * `isRetryable`) and given up otherwise.
 */
export type Handler<T = unknown> = (delivery: Delivery<T>) => Promise<void>

export interface ConsumeOptions {
  /** Consumption stops when this aborts; `consume` resolves once in-flight handlers settle. */
  signal: AbortSignal
  /** Handlers run at once in this process. @default 1 */
  concurrency?: number
  /** Lease: an unsettled delivery is redelivered after this long without `working()`. @default 30000 */
  ackWaitMs?: number
  /** After this many deliveries the message is given up (dead-lettered). @default 10 */
  maxDeliver?: number
  /** Delay before redelivering when a handler throws a retryable error. @default 1000 */
  retryDelayMs?: number
}

/** Durable delivery of pipeline messages between stages. */
export interface Bus {
  /**
   * Resolves once the message is durably stored. Publishing an id that was already
   * published to the subject (within the adapter's dedupe window, at least 10 minutes)
   * stores nothing and returns `{ duplicate: true }`.
   */
  publish<T>(subject: string, msg: OutgoingMessage<T>, opts?: { signal?: AbortSignal }): Promise<{ duplicate: boolean }>
  /**
   * Delivers messages of `subject` to `handler` until `opts.signal` aborts. Consumers that
   * share `group` split the messages (each delivered to one of them); distinct groups each
   * get every message published after the group was first created (and, for a new group,
   * every message still retained). Groups are durable: messages published while no member
   * of a group is consuming wait for it. Messages of one subject are delivered in publish
   * order to a group with concurrency 1, except for redeliveries and messages held back by
   * `notBefore` (they do not hold back the messages behind them). A message whose
   * `notBefore` is in the future is not handed to the handler before that time.
   * Rejects only when consumption cannot start (invalid arguments, store unreachable);
   * later store failures are retried until `signal` aborts.
   */
  consume<T>(subject: string, group: string, handler: Handler<T>, opts: ConsumeOptions): Promise<void>
  /**
   * Releases connections. Pending publishes are finished first. Consumers of this bus stop
   * taking new messages; settling a delivery after `close` has no effect (it is redelivered).
   */
  close(): Promise<void>
}

/** The subject that receives messages a group gave up on. */
export function deadLetterSubject(subject: string): string {
  return `dlq.${subject}`
}

/** The id of the dead letter of message `id` given up by `group`. */
export function deadLetterId(group: string, id: string): string {
  return `${group}:${id}`
}

/** Headers a dead letter carries on top of the original message's headers. */
export const DEAD_LETTER_HEADERS = {
  /** The reason passed to `giveUp`, or why the bus gave up (max deliveries, non-retryable error). */
  reason: 'dead-letter-reason',
  /** The subject the message was published to. */
  subject: 'dead-letter-subject',
  /** The group that gave up. */
  group: 'dead-letter-group',
  /** The original message id. */
  id: 'dead-letter-id',
  /** How many times the group had the message delivered. */
  deliveryCount: 'dead-letter-delivery-count',
} as const
