import { sql } from 'kysely'
import { BusError, errorMessage } from '../../core/errors.js'
import type { SqlDatabase } from '../../state/sql/database.js'
import { GroupCommit } from '../batcher.js'
import { consoleLogger, runConsumer, type BusLogger, type Claimed, type GroupStore } from '../consumer.js'
import { DEAD_LETTER_HEADERS, deadLetterId, deadLetterSubject, type Bus, type ConsumeOptions, type Handler, type OutgoingMessage } from '../types.js'
import { abortError, checkGroup, checkSubject, closedError, encodeMessage, resolveConsumeOptions } from '../validate.js'
import { migrateBus } from './schema.js'

/** Options of {@link localBus}. */
export interface LocalBusOptions {
  /** The SQL database (the state store's); the bus creates its `bus_*` tables in its schema. Not closed by the bus. */
  database: SqlDatabase
  /**
   * Longest a consumer waits before looking for messages it was not woken for: publishes by
   * other processes sharing the database. In-process publishes wake consumers at once. @default 500
   */
  pollIntervalMs?: number
  /**
   * Make every leased delivery available again on open. Only for a single process owning the
   * database (the embedded mode): the leases can only be a crashed predecessor's. @default false
   */
  reclaimOnOpen?: boolean
  /** How long a published id is remembered for dedupe (done messages are purged after it). @default 600000 */
  dedupeWindowMs?: number
  /** How often done messages older than the dedupe window are deleted. @default 60000 */
  purgeIntervalMs?: number
  /** Where background failures are reported. @default console */
  logger?: BusLogger
}

/** The local bus: the port plus maintenance operations. */
export interface LocalBus extends Bus {
  /** Deletes done messages older than the dedupe window now; returns how many. Runs every `purgeIntervalMs` anyway. */
  purge(): Promise<number>
}

interface LocalClaim extends Claimed {
  readonly seq: string
}

interface PublishItem {
  subject: string
  id: string
  /** The message as one JSON object for `bus_publish`. */
  json: string
  signal: AbortSignal | undefined
  resolve(r: { duplicate: boolean }): void
  reject(err: unknown): void
}

interface AckItem {
  subject: string
  group: string
  seq: string
  resolve(): void
  reject(err: unknown): void
}

const PUBLISH_BATCH = 500
const ACK_BATCH = 1000
const PURGE_BATCH = 5000

function unavailable(what: string, err: unknown): BusError {
  return new BusError('BUS_UNAVAILABLE', `local bus: ${what} failed: ${errorMessage(err)}; check that the database is reachable`, { retryable: true, cause: err })
}

/**
 * The embedded bus: in-process delivery, durable in the SQL database. A resolved `publish` is
 * committed (synchronous commit) and survives SIGKILL. Several processes may share one database:
 * claims use `FOR UPDATE SKIP LOCKED`, and other processes' publishes are seen within
 * `pollIntervalMs`. See docs/bus.md for the tables and limits.
 */
export async function localBus(opts: LocalBusOptions): Promise<LocalBus> {
  const { db } = opts.database
  const pollIntervalMs = opts.pollIntervalMs ?? 500
  const dedupeWindowMs = opts.dedupeWindowMs ?? 600_000
  const purgeIntervalMs = opts.purgeIntervalMs ?? 60_000
  const logger = opts.logger ?? consoleLogger
  for (const [name, v] of [['pollIntervalMs', pollIntervalMs], ['dedupeWindowMs', dedupeWindowMs], ['purgeIntervalMs', purgeIntervalMs]] as const) {
    if (!Number.isFinite(v) || v < 0) throw new BusError('BUS_INVALID_ARGUMENT', `localBus option ${name} must be a number >= 0, got ${v}`, { retryable: false })
  }

  try {
    await migrateBus(db)
    if (opts.reclaimOnOpen === true) {
      await sql`update bus_deliveries set state = 'ready', available_at = now() where state = 'leased'`.execute(db)
    }
  } catch (err) {
    throw unavailable('creating the bus tables', err)
  }

  const closing = new AbortController()
  let closed = false
  let closeOnce: Promise<void> | null = null
  /** In-process consumers to wake per subject. */
  const wakers = new Map<string, Set<() => void>>()
  /** Database operations in progress, awaited by close(). */
  const inflight = new Set<Promise<unknown>>()

  const wakeSubject = (subject: string) => {
    for (const wake of wakers.get(subject) ?? []) wake()
  }

  /** Runs a database operation that close() waits for. */
  const run = <R>(what: string, op: () => Promise<R>): Promise<R> => {
    if (closed) return Promise.reject(closedError())
    const p = op().catch((err: unknown) => {
      throw err instanceof BusError ? err : unavailable(what, err)
    })
    inflight.add(p)
    const forget = () => inflight.delete(p)
    p.then(forget, forget)
    return p
  }

  const publisher = new GroupCommit<PublishItem>(async (items) => {
    const send: PublishItem[] = []
    const firstOf = new Set<string>()
    /** Later items with an id already in this batch: duplicates of the first once it is stored. */
    const followers: PublishItem[] = []
    for (const item of items) {
      if (item.signal?.aborted === true) {
        item.reject(abortError(item.signal))
        continue
      }
      const key = `${item.subject} ${item.id}`
      if (firstOf.has(key)) {
        followers.push(item)
      } else {
        firstOf.add(key)
        send.push(item)
      }
    }
    if (send.length === 0) return
    let stored: Set<string>
    try {
      const payload = `[${send.map((i) => i.json).join(',')}]`
      const res = await run('publishing', () => sql<{ bus_publish: string }>`select bus_publish(${payload}::jsonb)`.execute(db))
      stored = new Set(res.rows.map((r) => r.bus_publish))
    } catch (err) {
      for (const item of items) item.reject(err)
      return
    }
    const subjects = new Set<string>()
    for (const item of send) {
      const isNew = stored.has(`${item.subject} ${item.id}`)
      if (isNew) subjects.add(item.subject)
      item.resolve({ duplicate: !isNew })
    }
    for (const item of followers) item.resolve({ duplicate: true })
    for (const s of subjects) wakeSubject(s)
  }, PUBLISH_BATCH)

  const acker = new GroupCommit<AckItem>(async (items) => {
    const byGroup = new Map<string, { subject: string; group: string; seqs: string[] }>()
    for (const item of items) {
      const k = `${item.subject} ${item.group}`
      let g = byGroup.get(k)
      if (g === undefined) byGroup.set(k, (g = { subject: item.subject, group: item.group, seqs: [] }))
      g.seqs.push(item.seq)
    }
    // One statement, so one transaction and one round trip for every group's acks.
    const calls = [...byGroup.values()].map((g) => sql`bus_ack(${g.subject}, ${g.group}, ${g.seqs}::bigint[])`)
    await run('acking', () => sql`select ${sql.join(calls)}`.execute(db))
    for (const item of items) item.resolve()
  }, ACK_BATCH)

  const groupStore = (subject: string, group: string): GroupStore<LocalClaim> => {
    const key = (c: LocalClaim) => sql`subject = ${subject} and group_name = ${group} and seq = ${c.seq} and delivery_count = ${c.deliveryCount}`
    return {
      async claim(max, ackWaitMs) {
        const res = await run('claiming', () =>
          sql<{ seq: string; id: string; data: unknown; headers: Record<string, string>; delivery_count: number }>`
            select * from bus_claim(${subject}, ${group}, ${max}, ${ackWaitMs})`.execute(db),
        )
        return res.rows.map((r) => ({ seq: r.seq, subject, id: r.id, data: r.data, headers: r.headers, deliveryCount: r.delivery_count }))
      },
      ack(c) {
        if (closed) return Promise.reject(closedError())
        return new Promise<void>((resolve, reject) => acker.add({ subject, group, seq: c.seq, resolve, reject }))
      },
      async retry(c, delayMs) {
        await run('retrying', () => sql`update bus_deliveries set state = 'ready', available_at = now() + ${delayMs} * interval '1 millisecond' where ${key(c)}`.execute(db))
      },
      async deadLetter(c, reason, deliveredCount) {
        const headers = {
          ...c.headers,
          [DEAD_LETTER_HEADERS.reason]: reason,
          [DEAD_LETTER_HEADERS.subject]: subject,
          [DEAD_LETTER_HEADERS.group]: group,
          [DEAD_LETTER_HEADERS.id]: c.id,
          [DEAD_LETTER_HEADERS.deliveryCount]: String(deliveredCount),
        }
        const dlq = deadLetterSubject(subject)
        const payload = `[${JSON.stringify({ subject: dlq, id: deadLetterId(group, c.id), data: c.data ?? null, headers })}]`
        const moved = await run('dead-lettering', () =>
          db.transaction().execute(async (trx) => {
            const gone = await sql`delete from bus_deliveries where ${key(c)}`.execute(trx)
            if (gone.numAffectedRows !== 1n) return false
            await sql`select bus_publish(${payload}::jsonb)`.execute(trx)
            return true
          }),
        )
        if (moved) wakeSubject(dlq)
      },
      async extend(c, ackWaitMs) {
        await run('extending a lease', () =>
          sql`update bus_deliveries set available_at = now() + ${ackWaitMs} * interval '1 millisecond' where ${key(c)} and state = 'leased'`.execute(db),
        )
      },
      async release(c) {
        await run('releasing', () =>
          sql`update bus_deliveries set state = 'ready', available_at = now(), delivery_count = delivery_count - 1 where ${key(c)}`.execute(db),
        )
      },
      async nextDueInMs() {
        const res = await run('polling', () =>
          sql<{ ms: number | null }>`
            select (extract(epoch from (min(available_at) - clock_timestamp())) * 1000)::float8 as ms
            from bus_deliveries where subject = ${subject} and group_name = ${group}`.execute(db),
        )
        return res.rows[0]?.ms ?? null
      },
    }
  }

  const purge = async (): Promise<number> => {
    let total = 0
    for (;;) {
      const res = await run('purging', () =>
        sql`
          delete from bus_messages where seq in (
            select m.seq from bus_messages m
            where m.published_at < now() - ${dedupeWindowMs} * interval '1 millisecond'
              and exists (select 1 from bus_groups g where g.subject = m.subject)
              and not exists (select 1 from bus_deliveries d where d.seq = m.seq)
            order by m.published_at
            limit ${PURGE_BATCH}
          )`.execute(db),
      )
      const n = Number(res.numAffectedRows ?? 0n)
      total += n
      if (n < PURGE_BATCH || closing.signal.aborted) return total
    }
  }

  let purging: Promise<unknown> | null = null
  const purgeTimer = setInterval(() => {
    if (purging !== null || closing.signal.aborted) return
    purging = purge()
      .catch((err: unknown) => logger.warn({ err }, 'bus: purging done messages failed; will retry'))
      .finally(() => {
        purging = null
      })
  }, Math.max(purgeIntervalMs, 1_000))
  purgeTimer.unref()

  return {
    publish<T>(subject: string, msg: OutgoingMessage<T>, popts?: { signal?: AbortSignal }): Promise<{ duplicate: boolean }> {
      return new Promise((resolve, reject) => {
        if (closing.signal.aborted) return reject(closedError())
        const signal = popts?.signal
        if (signal?.aborted === true) return reject(abortError(signal))
        const data = encodeMessage(subject, msg)
        const head = JSON.stringify({ subject, id: msg.id, headers: msg.headers ?? {}, ...(msg.notBefore === undefined ? {} : { notBefore: msg.notBefore }) })
        const json = `${head.slice(0, -1)},"data":${data}}`
        publisher.add({ subject, id: msg.id, json, signal, resolve, reject })
      })
    },

    async consume<T>(subject: string, group: string, handler: Handler<T>, copts: ConsumeOptions): Promise<void> {
      const options = resolveConsumeOptions(copts)
      checkSubject(subject)
      checkGroup(group)
      if (closing.signal.aborted) throw closedError()
      if (options.signal.aborted) return
      await run('creating the consumer group', () => sql`select bus_ensure_group(${subject}, ${group})`.execute(db))
      let set = wakers.get(subject)
      if (set === undefined) wakers.set(subject, (set = new Set()))
      const subscribers = set
      await runConsumer({
        store: groupStore(subject, group),
        handler: handler as Handler<unknown>,
        options,
        closed: closing.signal,
        subscribe: (wake) => {
          subscribers.add(wake)
          return () => subscribers.delete(wake)
        },
        pollIntervalMs,
        logger,
        subject,
        group,
      })
    },

    purge,

    close(): Promise<void> {
      closeOnce ??= (async () => {
        closing.abort()
        clearInterval(purgeTimer)
        await publisher.idle()
        await acker.idle()
        while (inflight.size > 0) await Promise.allSettled([...inflight])
        closed = true
      })()
      return closeOnce
    },
  }
}
