/**
 * Throughput of the bus adapters: `npx tsx src/bus/bench.ts [messages] [pg-url]`.
 * Publishes N messages into one subject and measures publish → handler through one group.
 */
import { randomBytes } from 'node:crypto'
import { sql } from 'kysely'
import { openPostgres } from '../state/sql/database.js'
import { localBus } from './local/local-bus.js'
import { memoryBus } from './memory/memory-bus.js'
import type { Bus } from './types.js'

const N = Number(process.argv[2] ?? 10_000)
const PG_URL = process.argv[3] ?? 'postgres://root@127.0.0.1:5432/test'

const payload = (i: number) => ({ number: i, hash: `0x${'ab'.repeat(32)}`, parentHash: `0x${'cd'.repeat(32)}`, cost: 21_000, txCount: 3 })

/** Consumes N messages; resolves with the time the last one was handled. */
function drain(bus: Bus, subject: string, concurrency: number): { done: Promise<number>; stop: () => void } {
  const stop = new AbortController()
  let seen = 0
  let resolveDone!: (t: number) => void
  const done = new Promise<number>((r) => (resolveDone = r))
  const consuming = bus.consume(subject, 'bench', async () => {
    if (++seen === N) resolveDone(performance.now())
  }, { signal: stop.signal, concurrency })
  return {
    done,
    stop: () => {
      stop.abort()
      consuming.catch((err: unknown) => console.error(err))
    },
  }
}

async function scenario(label: string, make: () => Promise<{ bus: Bus; cleanup: () => Promise<void> }>, concurrency: number, mode: 'pipelined' | 'sequential' | 'backlog'): Promise<void> {
  const { bus, cleanup } = await make()
  const subject = 'bench.blocks'
  try {
    const t0 = performance.now()
    let consumer: ReturnType<typeof drain> | null = mode === 'backlog' ? null : drain(bus, subject, concurrency)
    if (mode === 'sequential') {
      for (let i = 0; i < N; i++) await bus.publish(subject, { id: `b${i}`, data: payload(i) })
    } else {
      // Many publishes in flight, like many producers: 1000 at a time.
      for (let i = 0; i < N; i += 1000) {
        await Promise.all(Array.from({ length: Math.min(1000, N - i) }, (_, j) => bus.publish(subject, { id: `b${i + j}`, data: payload(i + j) })))
      }
    }
    const published = performance.now()
    const tc = performance.now()
    consumer ??= drain(bus, subject, concurrency)
    const end = await consumer.done
    consumer.stop()
    const pubRate = N / ((published - t0) / 1000)
    const e2e = mode === 'backlog' ? N / ((end - tc) / 1000) : N / ((end - t0) / 1000)
    console.log(`${label.padEnd(8)} ${mode.padEnd(10)} concurrency ${String(concurrency).padStart(3)}: publish ${Math.round(pubRate).toString().padStart(7)} msg/s, ${mode === 'backlog' ? 'drain' : 'publish→handler'} ${Math.round(e2e)} msg/s`)
  } finally {
    await bus.close()
    await cleanup()
  }
}

const memory = () => Promise.resolve({ bus: memoryBus(), cleanup: () => Promise.resolve() })
const local = async () => {
  const database = await openPostgres(PG_URL, `bus_bench_${randomBytes(4).toString('hex')}`, 10)
  const bus = await localBus({ database })
  return {
    bus,
    cleanup: async () => {
      await sql`drop schema ${sql.id(database.schema)} cascade`.execute(database.db)
      await database.close()
    },
  }
}

for (const [label, make] of [['memory', memory], ['local', local]] as const) {
  for (const mode of ['pipelined', 'sequential', 'backlog'] as const) {
    for (const concurrency of [1, 64]) await scenario(label, make, concurrency, mode)
  }
}
