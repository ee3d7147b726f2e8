import type { Delivery } from '../bus/types.js'
import { crashPoint } from '../core/crash.js'
import { errorMessage } from '../core/errors.js'
import { jobId } from '../core/ids.js'
import type { BlockMessage, StageResult } from '../core/types.js'
import type { ResolvedStage } from '../config/load.js'
import type { CollectorItem, NewJob, StoredJob } from '../state/types.js'
import { createCollector } from './collectors/index.js'
import type { ClosedGroup, Collector } from './collectors/types.js'
import { leaderAware, Serial, type PipelineContext } from './context.js'
import { dispatchJobs } from './jobs.js'
import { BLOCKS_SUBJECT } from './messages.js'

/** A stage's collector, made durable: items are stored before acks, groups commit with their job. */
export interface CollectorService {
  start(): Promise<void>
  stop(): Promise<void>
  /** Items waiting in the collector. */
  openItems(): number
  /**
   * After a reorg replaced every block from `notice.fromBlock` on (call stage by stage, in
   * pipeline order): every job of this stage that covers one of them is invalidated, whatever
   * its state; open inputs at or above it are dropped as orphaned, the still-valid inputs of
   * the invalidated jobs are re-opened, and the cursor moves back to the first invalidated job.
   * It runs in the collector's serial section, so no group can close over orphaned inputs
   * between the invalidation and the rewind. Resolves with the jobs it invalidated.
   */
  rewind(notice: { fromBlock: number; depth: number }): Promise<StoredJob[]>
}

const TICK_MS = 100
/** Deliveries taken at once; they are stored in one transaction. */
const INTAKE_CONCURRENCY = 256

/**
 * Consumes a stage's input subject, stores each message as a collector item (then acks),
 * feeds it to the collector strategy, and turns every closed group into a job in one
 * transaction (job row + items marked consumed + cursor), then publishes the job.
 */
export function collectorService(ctx: PipelineContext, stage: ResolvedStage): CollectorService {
  const name = stage.name
  const cursorName = `collector.${name}`
  const fromBlocks = stage.input === BLOCKS_SUBJECT
  const log = ctx.log.child({ stage: name, part: 'collector' })
  const serial = new Serial()
  const abort = new AbortController()
  const startKey = stage.collector.strategy === 'sequential' ? (stage.collector.startKey ?? ctx.config.source.startBlock) : 0
  const collector: Collector = createCollector({ ...stage.collector, startKey } as Parameters<typeof createCollector>[0])
  let loop: Promise<void> | undefined
  let ticker: NodeJS.Timeout | undefined

  function toItem(d: Delivery): CollectorItem | undefined {
    const data = d.data as Partial<BlockMessage & StageResult>
    if (fromBlocks) {
      if (!Number.isSafeInteger(data.number) || typeof data.hash !== 'string') return undefined
      return { id: d.id, start: data.number as number, end: data.number as number, cost: Number(data.cost ?? 0), data: d.data, receivedAt: ctx.now() }
    }
    if (!Number.isSafeInteger(data.first) || !Number.isSafeInteger(data.last)) return undefined
    return { id: d.id, start: data.first as number, end: data.last as number, cost: Number(data.cost ?? 0), data: d.data, receivedAt: ctx.now() }
  }

  /**
   * Memory may disagree with the store: a step after a stored write failed (a group commit, or
   * feeding stored items), and putting memory back from the store failed too (the database
   * was down). Nothing is fed or closed until a resync from the store succeeds — otherwise the
   * collector would go on past a group it never committed, and those inputs would be lost.
   */
  let stale = false

  // Deliveries waiting to be stored; one transaction stores a whole batch (group commit).
  let pending: { item: CollectorItem; done: (err?: unknown) => void }[] = []
  let flushing = false

  async function handle(d: Delivery): Promise<void> {
    const item = toItem(d)
    if (!item) {
      await d.giveUp(`not a valid ${fromBlocks ? 'block' : 'stage result'} message`)
      return
    }
    // Resolves once the item is durably stored and fed to the collector; only then is the
    // bus message acked (by the consumer, when this handler returns).
    await new Promise<void>((resolve, reject) => {
      pending.push({ item, done: (err) => (err === undefined ? resolve() : reject(err)) })
      if (!flushing) void flush()
    })
  }

  async function flush(): Promise<void> {
    flushing = true
    try {
      while (pending.length > 0) {
        const batch = pending
        pending = []
        try {
          await serial.run(() => intake(batch.map((b) => b.item)))
          for (const b of batch) b.done()
        } catch (err) {
          for (const b of batch) b.done(err)
        }
      }
    } finally {
      flushing = false
    }
  }

  async function intake(items: CollectorItem[]): Promise<void> {
    if (stale) await resync()
    const added = await ctx.state.transaction(async (tx) => {
      const ids = new Set(await tx.addCollectorItems(name, items))
      const fresh = items.filter((i) => ids.has(i.id))
      if (fresh.length > 0 && fromBlocks) {
        await tx.recordBlocks(
          fresh.map((i) => {
            const b = i.data as BlockMessage
            return { number: b.number, hash: b.hash, parentHash: b.parentHash, gasUsed: b.gasUsed, cost: b.cost, seenAt: i.receivedAt }
          }),
        )
      }
      return fresh
    })
    crashPoint('collector.after-items')
    try {
      await feed(added)
    } catch (err) {
      // Stored but maybe not fed: a redelivery would not feed them again (they are stored).
      stale = true
      throw err
    }
    await closeReady()
  }

  /** Feeds freshly stored items to the collector strategy. */
  async function feed(added: CollectorItem[]): Promise<void> {
    if (!fromBlocks) {
      // A result of a job invalidated by a reorg may still be in flight: never collect it.
      const orphaned: string[] = []
      for (const item of added) {
        const source = await ctx.state.getJob((item.data as StageResult).jobId)
        if (source?.state !== 'succeeded') orphaned.push(item.id)
      }
      if (orphaned.length > 0) {
        await ctx.state.consumeCollectorItems(name, orphaned, 'orphaned')
        log.warn({ items: orphaned.length }, 'dropped results of jobs that are no longer valid')
        const drop = new Set(orphaned)
        added.splice(0, added.length, ...added.filter((i) => !drop.has(i.id)))
      }
    }
    const now = ctx.now()
    // Items stored before (maybe already in a job) are redeliveries: not fed again.
    for (const item of added) {
      const outcome = collector.add(item, now)
      if (!outcome.accepted) {
        log.warn({ item: item.id, start: item.start, reason: outcome.reason }, 'collector rejected an input')
        await ctx.state.consumeCollectorItems(name, [item.id], `rejected:${outcome.reason}`)
      } else if (outcome.replaced) {
        log.warn({ replaced: outcome.replaced.id, by: item.id, start: item.start }, 'input replaced (reorg)')
        await ctx.state.consumeCollectorItems(name, [outcome.replaced.id], `replaced:${item.id}`)
      }
    }
  }

  async function closeReady(): Promise<void> {
    if (stale) await resync()
    const groups = collector.poll(ctx.now())
    const created: string[] = []
    try {
      for (const group of groups) created.push(await commitGroup(group))
    } catch (err) {
      if (created.length > 0) publish(created)
      // poll() already removed the groups from memory; put memory back to what is stored
      // (if that fails too, `stale` holds everything until it succeeds).
      stale = true
      await resync()
      throw err
    }
    if (created.length > 0) publish(created)
  }

  // Publishing committed jobs runs beside the serial section, so the next inputs are stored
  // while the last jobs go out. One publication at a time, in commit order.
  let publishing: Promise<void> = Promise.resolve()

  /**
   * Publishes committed jobs (together: one write records them). A job is durable before it
   * is published, so a failure here loses nothing: it stays unpublished (`dispatchedAttempt <
   * attempt`) and the orchestrator's recovery sweep publishes it.
   */
  function publish(ids: string[]): void {
    publishing = publishing.then(async () => {
      try {
        const toSend: StoredJob[] = []
        for (const id of ids) {
          const stored = await ctx.state.getJob(id)
          if (stored && stored.state === 'pending' && stored.dispatchedAttempt < stored.attempt) toSend.push(stored)
        }
        await dispatchJobs(ctx, toSend)
      } catch (err) {
        log.warn({ err: errorMessage(err), jobs: ids.length }, 'publishing new jobs failed; the recovery sweep publishes them')
      }
    })
  }

  async function resync(): Promise<void> {
    const dropped = collector.restore(await ctx.state.listOpenCollectorItems(name), await ctx.state.getCursor(cursorName))
    // Items behind the cursor or replaced by a rival: closed for good, so the store agrees.
    if (dropped.length > 0) await ctx.state.consumeCollectorItems(name, dropped.map((i) => i.id), 'dropped-on-restore')
    if (stale) log.warn({ restored: collector.size() }, 'collector memory restored from the store after a failed write')
    stale = false
  }

  /** Stores the group's job with its items consumed and the cursor moved, in one transaction; returns the job id. */
  async function commitGroup(group: ClosedGroup): Promise<string> {
    const lastData = group.items[group.items.length - 1]?.data as Partial<BlockMessage & StageResult>
    const lastHash = String(lastData.hash ?? lastData.lastHash ?? '')
    const job: NewJob = {
      id: jobId({ stage: name, first: group.first, last: group.last, lastHash, programId: stage.programId }),
      stage: name,
      first: group.first,
      last: group.last,
      lastHash,
      programId: stage.programId,
      maxAttempts: stage.retry.maxAttempts,
      inputs: group.items.map((i) => ({ id: i.id, data: i.data })),
      cost: group.cost,
      capacity: stage.collector.strategy === 'sequential' ? (stage.collector.capacity ?? null) : null,
      overCapacity: group.overCapacity,
      parentId: null,
    }
    await ctx.state.transaction(async (tx) => {
      await tx.createJobs([job])
      crashPoint('collector.mid-group-tx')
      await tx.consumeCollectorItems(name, group.items.map((i) => i.id), job.id)
      if (group.superseded?.length) await tx.consumeCollectorItems(name, group.superseded.map((i) => i.id), `superseded:${job.id}`)
      if (collector.strategy === 'sequential') await tx.setCursor(cursorName, String(group.last + 1))
      if (group.overCapacity) {
        await tx.recordEvent({ at: ctx.now(), kind: 'over-capacity', jobId: job.id, message: `input of cost ${group.cost} exceeds capacity ${String(job.capacity)}`, details: {} })
      }
    })
    crashPoint('collector.after-group-tx')
    log.info({ job: job.id, first: job.first, last: job.last, inputs: group.items.length, cost: group.cost, reason: group.reason }, 'job created')
    return job.id
  }

  /** States a reorg leaves alone: the job is already out of the way. */
  const settled: StoredJob['state'][] = ['invalidated', 'split', 'cancelled']

  /**
   * Invalidates every job of this stage whose range reaches `fromBlock`. A job that changes
   * state under the compare-and-set (a result recorded, a retry scheduled) is read again and
   * invalidated in its new state: none may stay valid over an orphaned block.
   */
  async function invalidateFrom(notice: { fromBlock: number; depth: number }): Promise<StoredJob[]> {
    const out: StoredJob[] = []
    for (let job of await ctx.state.listJobs({ stage: name, lastAtLeast: notice.fromBlock })) {
      for (;;) {
        if (settled.includes(job.state)) break
        const was = job.state
        const u = await ctx.state.transaction(async (tx) => {
          const v = await tx.updateJob(job.id, { states: [was], attempt: job.attempt }, { state: 'invalidated', leaseExpiresAt: null })
          if (v) {
            await tx.recordEvent({ at: ctx.now(), kind: 'invalidated', jobId: job.id, message: `blocks from ${notice.fromBlock} were reorged out (depth ${notice.depth})`, details: { fromBlock: notice.fromBlock, was } })
          }
          return v
        })
        if (u) {
          out.push(u)
          break
        }
        const again = await ctx.state.getJob(job.id)
        if (!again) break
        job = again
      }
    }
    return out
  }

  return {
    async start() {
      await resync()
      log.debug({ restored: collector.size() }, 'collector restored')
      loop = ctx.bus
        .consume(stage.input, `collect-${name}`, leaderAware(ctx, `collector ${name}`, handle), { signal: abort.signal, concurrency: INTAKE_CONCURRENCY, ackWaitMs: 60_000 })
        .catch((err: unknown) => ctx.fatal(err, `collector ${name}`))
      ticker = setInterval(() => {
        serial.run(closeReady).catch((err: unknown) => log.error({ err: errorMessage(err) }, 'closing a group failed'))
      }, TICK_MS)
    },
    async stop() {
      abort.abort()
      if (ticker) clearInterval(ticker)
      await loop
      await serial.run(() => Promise.resolve())
      await publishing
    },
    openItems: () => collector.size(),
    rewind: (notice) =>
      serial.run(async () => {
        const fromBlock = notice.fromBlock
        const mine = (await invalidateFrom(notice)).sort((a, b) => a.first - b.first)
        const open = await ctx.state.listOpenCollectorItems(name)
        const orphaned = open.filter((i) => i.end >= fromBlock).map((i) => i.id)
        const reopened: CollectorItem[] = []
        const now = ctx.now()
        for (const job of mine) {
          for (const input of job.inputs) {
            const item = toItem({ id: `${input.id}~${job.id}`, data: input.data } as Delivery)
            if (!item || item.end >= fromBlock) continue
            if (!fromBlocks) {
              const source = await ctx.state.getJob((input.data as StageResult).jobId)
              if (source?.state !== 'succeeded') continue
            }
            reopened.push({ ...item, receivedAt: now })
          }
        }
        await ctx.state.transaction(async (tx) => {
          if (orphaned.length > 0) await tx.consumeCollectorItems(name, orphaned, 'orphaned')
          if (reopened.length > 0) await tx.addCollectorItems(name, reopened)
          const first = mine[0]
          if (first && collector.strategy === 'sequential') {
            const cursor = Number((await tx.getCursor(cursorName)) ?? first.first)
            if (first.first < cursor) await tx.setCursor(cursorName, String(first.first))
          }
        })
        await resync()
        log.warn({ fromBlock, invalidatedJobs: mine.length, reopened: reopened.length, orphaned: orphaned.length }, 'collector rewound after a reorg')
        return mine
      }),
  }
}
