/**
 * Test fixture: a JSON-RPC proxy in front of a dev anvil that keeps block production away from
 * state lookups, and notices when the node stops answering.
 *
 * Why: anvil ≥ 1.1 (1.7.1 here) can deadlock when `evm_mine` arrives while it serves state
 * lookups (foundry-rs/foundry#10452). Under the chaos run's load — the watcher fetching blocks,
 * receipts and `eth_getProof` concurrently while the load mines as fast as it can — the L2 node
 * stopped answering every RPC for good. The gate is a readers–writer lock over the node:
 *
 * - *writers* are the calls that produce or rewrite blocks (`evm_mine`, `anvil_mine`,
 *   `anvil_reorg`, …): one at a time, each only once no other call is in flight at the node,
 *   and at least `minMiningIntervalMs` after the previous one ended;
 * - every other call is a *reader*; readers run concurrently with each other, never with a
 *   writer. A waiting writer holds back new readers, so mining is not starved.
 *
 * Every forwarded call has a deadline (`upstreamTimeoutMs`, answered 504 to the client): a hung
 * node never hangs the gate. `stuckFor()` says how long the oldest call has been waiting on the
 * node, so a watchdog can tell a hung node from a slow one.
 */
import { createServer, request as httpRequest, Agent, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { freePort } from '../../src/core/net.js'

/** Calls that produce or rewrite blocks. */
const WRITERS = new Set([
  'evm_mine',
  'anvil_mine',
  'hardhat_mine',
  'anvil_reorg',
  'anvil_rollback',
  'evm_revert',
  'evm_snapshot',
  'evm_setAutomine',
  'anvil_setAutomine',
  'evm_setIntervalMining',
  'anvil_setIntervalMining',
])

/** Options of {@link miningGate}. */
export interface MiningGateOptions {
  /** The node, e.g. `http://127.0.0.1:8545`. */
  target: string
  /** Least time between the end of one writer call and the start of the next. @default 50 */
  minMiningIntervalMs?: number
  /** A forwarded call that gets no answer within this is answered 504. @default 60000 */
  upstreamTimeoutMs?: number
}

/** Counters of a {@link MiningGate}. */
export interface MiningGateStats {
  readers: number
  writers: number
  /** Calls answered 504 because the node did not answer in time. */
  timeouts: number
  /** Calls answered 502 because the node refused or reset the connection. */
  failures: number
  /** Total time writers waited for in-flight readers and the mining interval (ms). */
  writerWaitMs: number
}

/** A running gate. */
export interface MiningGate {
  /** `http://127.0.0.1:<port>`: give this to every client instead of the node's URL. */
  readonly url: string
  stats(): MiningGateStats
  /** How long (ms) the oldest call still waiting on the node has waited, with its method; undefined if none. */
  stuckFor(): { ms: number; method: string } | undefined
  /**
   * Runs `fn` as a writer (the harness's own mining, e.g. through a client of the node itself).
   * Resolves with its result.
   */
  exclusive<T>(fn: () => Promise<T>): Promise<T>
  close(): Promise<void>
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

/** Starts a gate in front of `opts.target`. */
export async function miningGate(opts: MiningGateOptions): Promise<MiningGate> {
  const target = new URL(opts.target)
  const minGap = opts.minMiningIntervalMs ?? 50
  const upstreamTimeoutMs = opts.upstreamTimeoutMs ?? 60_000
  const agent = new Agent({ keepAlive: true, maxSockets: 64 })
  const stats: MiningGateStats = { readers: 0, writers: 0, timeouts: 0, failures: 0, writerWaitMs: 0 }

  // --- the lock -------------------------------------------------------------------------------
  let readers = 0
  let writing = false
  let writersWaiting = 0
  let lastWriteEnd = 0
  const wake: (() => void)[] = []
  const notify = (): void => {
    for (const w of wake.splice(0)) w()
  }
  const until = async (ok: () => boolean): Promise<void> => {
    while (!ok()) await new Promise<void>((r) => wake.push(r))
  }
  const asReader = async <T>(fn: () => Promise<T>): Promise<T> => {
    await until(() => !writing && writersWaiting === 0)
    readers++
    try {
      return await fn()
    } finally {
      readers--
      notify()
    }
  }
  // Writers queue behind each other in arrival order.
  let writerTail: Promise<unknown> = Promise.resolve()
  const asWriter = <T>(fn: () => Promise<T>): Promise<T> => {
    const run = async (): Promise<T> => {
      const t = Date.now()
      // The interval first (readers go on meanwhile), then hold back new readers until the
      // ones in flight are answered.
      const gap = lastWriteEnd + minGap - Date.now()
      if (gap > 0) await sleep(gap)
      writersWaiting++
      try {
        await until(() => readers === 0 && !writing)
        writing = true
      } finally {
        writersWaiting--
      }
      stats.writerWaitMs += Date.now() - t
      try {
        return await fn()
      } finally {
        writing = false
        lastWriteEnd = Date.now()
        notify()
      }
    }
    const p = writerTail.then(run, run)
    writerTail = p.catch(() => undefined)
    return p
  }

  // --- forwarding -----------------------------------------------------------------------------
  const pending = new Map<number, { since: number; method: string }>()
  let nextId = 0
  const forward = (body: Buffer, method: string): Promise<{ status: number; body: Buffer }> =>
    new Promise((resolve) => {
      const id = nextId++
      pending.set(id, { since: Date.now(), method })
      const done = (r: { status: number; body: Buffer }): void => {
        pending.delete(id)
        clearTimeout(timer)
        resolve(r)
      }
      const err = (status: number, message: string): void => done({ status, body: Buffer.from(JSON.stringify({ jsonrpc: '2.0', id: null, error: { code: -32000, message } })) })
      const req = httpRequest(
        { host: target.hostname, port: target.port, path: target.pathname, method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': body.length } },
        (res: IncomingMessage) => {
          const chunks: Buffer[] = []
          res.on('data', (c: Buffer) => chunks.push(c))
          res.on('end', () => done({ status: res.statusCode ?? 502, body: Buffer.concat(chunks) }))
          res.on('error', () => {
            stats.failures++
            err(502, `mining gate: ${method}: the node reset the connection`)
          })
        },
      )
      const timer = setTimeout(() => {
        stats.timeouts++
        req.destroy()
        err(504, `mining gate: ${method}: the node did not answer within ${upstreamTimeoutMs} ms`)
      }, upstreamTimeoutMs)
      req.on('error', (e) => {
        if (!pending.has(id)) return
        stats.failures++
        err(502, `mining gate: ${method}: ${e.message}`)
      })
      req.end(body)
    })

  const methodsOf = (body: Buffer): string[] => {
    try {
      const j = JSON.parse(body.toString('utf8')) as { method?: unknown } | { method?: unknown }[]
      return (Array.isArray(j) ? j : [j]).map((m) => (typeof m.method === 'string' ? m.method : '?'))
    } catch {
      return ['?']
    }
  }

  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const body = Buffer.concat(chunks)
      const methods = methodsOf(body)
      const writer = methods.some((m) => WRITERS.has(m))
      const method = methods.join(',')
      if (writer) stats.writers++
      else stats.readers++
      const go = (): Promise<{ status: number; body: Buffer }> => forward(body, method)
      void (writer ? asWriter(go) : asReader(go)).then((r) => {
        res.writeHead(r.status, { 'content-type': 'application/json', 'content-length': r.body.length })
        res.end(r.body)
      })
    })
  }

  const port = await freePort()
  const server: Server = createServer(handle)
  server.keepAliveTimeout = 60_000
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, '127.0.0.1', () => resolve())
  })

  return {
    url: `http://127.0.0.1:${port}`,
    stats: () => ({ ...stats }),
    stuckFor() {
      let oldest: { since: number; method: string } | undefined
      for (const p of pending.values()) if (oldest === undefined || p.since < oldest.since) oldest = p
      return oldest === undefined ? undefined : { ms: Date.now() - oldest.since, method: oldest.method }
    },
    exclusive: asWriter,
    async close() {
      const closed = new Promise<void>((r) => server.close(() => r()))
      server.closeAllConnections()
      agent.destroy()
      await closed
    },
  }
}
