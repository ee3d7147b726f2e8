/**
 * The message bus port. Delivery is at-least-once; every consumer must be idempotent
 * (the state store decides what is done, the bus only delivers work).
 */

/** A message as published. `id` is content-derived; the same id twice is stored once. */
export interface OutgoingMessage<T = unknown> {
  id: string
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
  /** Marks the message done for this group. Idempotent. */
  ack(): Promise<void>
  /** Redeliver to this group (to any member) after `delayMs`. Counts as a delivery. */
  retryLater(delayMs: number): Promise<void>
  /** Never redeliver to this group; the message is copied to `dlq.<subject>` with the reason. */
  giveUp(reason: string): Promise<void>
  /** Extends the lease (ack deadline) by the consumer's ack wait. Call it while long work runs. */
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
   * every message still retained). Messages of one subject are delivered in publish order
   * to a group with concurrency 1, except for redeliveries. A message whose `notBefore` is in
   * the future is not handed to the handler before that time.
   */
  consume<T>(subject: string, group: string, handler: Handler<T>, opts: ConsumeOptions): Promise<void>
  /** Releases connections. Pending publishes are finished first. */
  close(): Promise<void>
}

/** The subject that receives messages a group gave up on. */
export function deadLetterSubject(subject: string): string {
  return `dlq.${subject}`
}
