/**
 * Raw bus ceiling vs proofline end to end, in one run on one private nats-server:
 *
 * - raw: JetStream itself (the @nats-io client proofline uses, no proofline code): async publish
 *   (a window of publishes in flight) while a pull consumer consumes in batches and acks each
 *   message; messages/s from the first publish to the last ack.
 * - adapter: the same through proofline's `natsBus` port (publish, consume in a group, ack).
 * - end to end: the real orchestrator (`proofline run`, NATS + Postgres, synthetic source at full
 *   speed, mock provers without latency) — blocks/s from start until every stage covered every
 *   block. Each block is one message on `blocks`, plus its state rows, plus its share of range
 *   and aggregate jobs.
 *
 * fraction_of_raw = end-to-end blocks/s ÷ raw messages/s.
 */
import { jetstream, jetstreamManager, AckPolicy } from '@nats-io/jetstream'
import { connect } from '@nats-io/transport-node'
import { natsBus } from '../src/bus/nats/index.js'
import { privateNats, r3, size, type BenchOptions } from './lib.js'
import { preparePipeline, runUntil } from './pipeline.js'

const payload = (i: number): Record<string, unknown> => ({ number: i, hash: `0x${'ab'.repeat(32)}`, parentHash: `0x${'cd'.repeat(32)}`, timestamp: 1_700_000_000 + i, gasUsed: 2_000_000, cost: 2_000_000, txCount: 33 })

export async function rawJetStream(url: string, n: number): Promise<number> {
  const nc = await connect({ servers: url })
  try {
    const jsm = await jetstreamManager(nc)
    const stream = `RAW_${Date.now()}`
    await jsm.streams.add({ name: stream, subjects: [`raw${Date.now()}.>`] })
    const subject = (await jsm.streams.info(stream)).config.subjects[0]!.replace('>', 'blocks')
    await jsm.consumers.add(stream, { durable_name: 'raw', ack_policy: AckPolicy.Explicit, max_ack_pending: 20_000 })
    const js = jetstream(nc)
    const consumer = await js.consumers.get(stream, 'raw')
    let acked = 0
    let resolveDone!: () => void
    const done = new Promise<void>((r) => (resolveDone = r))
    const messages = await consumer.consume({ max_messages: 1_000 })
    const consuming = (async () => {
      for await (const m of messages) {
        m.ack()
        if (++acked === n) {
          resolveDone()
          break
        }
      }
    })()
    const enc = new TextEncoder()
    const t0 = performance.now()
    const window = 1_000
    for (let i = 0; i < n; i += window) {
      await Promise.all(Array.from({ length: Math.min(window, n - i) }, (_, k) => js.publish(subject, enc.encode(JSON.stringify({ id: `b${i + k}`, data: payload(i + k) })), { msgID: `b${i + k}` })))
    }
    await done
    const t = (performance.now() - t0) / 1000
    await messages.close()
    await consuming
    await jsm.streams.delete(stream)
    return n / t
  } finally {
    await nc.close()
  }
}

export async function adapter(url: string, n: number): Promise<number> {
  const tag = `ad${Date.now().toString(36)}`
  const bus = await natsBus({ servers: url, stream: tag.toUpperCase(), subjectPrefix: tag, logger: { warn: () => {} } })
  try {
    let seen = 0
    let resolveDone!: () => void
    const done = new Promise<void>((r) => (resolveDone = r))
    const stop = new AbortController()
    const consuming = bus.consume('blocks', 'bench', () => {
      if (++seen === n) resolveDone()
      return Promise.resolve()
    }, { signal: stop.signal, concurrency: 64 })
    const t0 = performance.now()
    for (let i = 0; i < n; i += 1_000) {
      await Promise.all(Array.from({ length: Math.min(1_000, n - i) }, (_, k) => bus.publish('blocks', { id: `b${i + k}`, data: payload(i + k) })))
    }
    await done
    const t = (performance.now() - t0) / 1000
    stop.abort()
    await consuming
    return n / t
  } finally {
    await bus.close()
  }
}

export interface BusResult {
  raw_msgs_per_s: number
  adapter_msgs_per_s: number
  e2e_blocks_per_s: number
  /** proofline end to end (NATS + Postgres) ÷ raw JetStream. */
  fraction_of_raw: number
  adapter_fraction_of_raw: number
  messages: number
  e2e_blocks: number
  e2e_summary: { ok: unknown; durationMs: unknown; jobs: Record<string, unknown> }
}

export async function busBench(opts: BenchOptions): Promise<BusResult> {
  const n = size(opts, 'bus.messages', 50_000, 2_000)
  const blocks = size(opts, 'bus.blocks', 10_000, 300)
  const nats = await privateNats()
  try {
    // One warm-up pass of each (JIT, connections, the server's first stream files), not counted.
    const warm = Math.max(500, Math.floor(n / 10))
    await rawJetStream(nats.url, warm)
    await adapter(nats.url, warm)
    opts.log(`bus: raw JetStream, ${n} messages ...`)
    const raw = await rawJetStream(nats.url, n)
    opts.log(`bus: proofline natsBus adapter, ${n} messages ...`)
    const ad = await adapter(nats.url, n)
    opts.log(`bus: proofline end to end (proofline run, NATS + Postgres), ${blocks} blocks ...`)
    const p = await preparePipeline(
      {
        pgUrl: opts.pgUrl,
        natsUrl: nats.url,
        blocksPerSecond: 0,
        seed: opts.seed,
        range: { latencyMs: { min: 0, max: 0 }, concurrency: 8, inProcess: true, timeoutMs: 500 },
        aggregate: { latencyMs: { min: 0, max: 0 }, concurrency: 8, inProcess: true, timeoutMs: 500 },
      },
      'bus',
    )
    try {
      const { summary } = await runUntil(p, blocks, opts.quick ? 120_000 : 600_000)
      const durationMs = Number(summary.durationMs)
      const e2e = blocks / (durationMs / 1000)
      const stages = summary.stages as { stage: string; blocksCovered: number; states: Record<string, number> }[]
      return {
        raw_msgs_per_s: r3(raw),
        adapter_msgs_per_s: r3(ad),
        e2e_blocks_per_s: r3(e2e),
        fraction_of_raw: r3(e2e / raw),
        adapter_fraction_of_raw: r3(ad / raw),
        messages: n,
        e2e_blocks: blocks,
        e2e_summary: { ok: summary.ok, durationMs, jobs: Object.fromEntries(stages.map((s) => [s.stage, s.states])) },
      }
    } finally {
      await p.cleanup()
    }
  } finally {
    await nats.stop()
  }
}
