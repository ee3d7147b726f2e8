/**
 * Test helper: one anvil per test file, on a free port, from the npm package's binary.
 * (`src/chain/anvil.ts`'s `startAnvil` is the product's launcher; this helper stays small and
 * adds what tests need: restart on the same port with the same state.)
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import type { BlockMessage } from '../core/types.js'
import type { BlockSourceSink, ReorgNotice } from '../sources/types.js'
import { rmSync } from 'node:fs'
import { anvilCacheDir, DEFAULT_MAX_PERSISTED_STATES } from './anvil.js'
import { httpChainRpc, rpcRequest, type ChainRpc } from './traces.js'

/** The anvil binary shipped by `@foundry-rs/anvil-linux-amd64`. */
export function anvilBinary(): string {
  const require = createRequire(import.meta.url)
  return join(dirname(require.resolve('@foundry-rs/anvil-linux-amd64/package.json')), 'bin', 'anvil')
}

import { freePort } from '../core/net.js'

export { freePort }

/** A running test anvil. */
export interface TestAnvil {
  readonly url: string
  readonly port: number
  /** A `ChainRpc` to it (no transport retries). */
  readonly rpc: ChainRpc
  /** Sends one JSON-RPC call. */
  call(method: string, params?: readonly unknown[]): Promise<unknown>
  /** Stops it (SIGTERM, so `--state` is dumped; SIGKILL after 5 s). Idempotent. */
  stop(): Promise<void>
  /** Starts it again on the same port and with the same arguments (and state file, if any). */
  restart(): Promise<void>
}

/** Options of {@link startTestAnvil}. */
export interface TestAnvilOptions {
  /** @default 901 */
  chainId?: number
  /** Passed as `--state`: loaded at start, dumped on stop (survives `restart`). */
  statePath?: string
  /** Extra anvil arguments. */
  args?: string[]
}

/** Starts anvil with `--steps-tracing` on a free port and waits until it answers. */
export async function startTestAnvil(opts: TestAnvilOptions = {}): Promise<TestAnvil> {
  const port = await freePort()
  const url = `http://127.0.0.1:${port}`
  const args = ['--host', '127.0.0.1', '--port', String(port), '--chain-id', String(opts.chainId ?? 901), '--steps-tracing', ...(opts.args ?? [])]
  if (opts.statePath !== undefined) args.push('--state', opts.statePath)
  // Its own state folder, removed once it has stopped (see anvilCacheDir).
  const cacheDir = anvilCacheDir()
  args.push('--cache-path', cacheDir, '--max-persisted-states', String(DEFAULT_MAX_PERSISTED_STATES))
  const rpc = httpChainRpc(url, { timeoutMs: 10_000 })
  let child: ChildProcess | null = null

  async function launch(): Promise<void> {
    const proc = spawn(anvilBinary(), args, { stdio: ['ignore', 'pipe', 'pipe'] })
    child = proc
    let output = ''
    // Ready when anvil itself says it listens: answering the port is not enough, since a
    // concurrent test's anvil could hold it if this one failed to bind.
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => done(new Error(`anvil on port ${port} did not start within 15 s: ${output}`)), 15_000)
      const onData = (d: Buffer): void => {
        output = (output + d.toString()).slice(-4000)
        if (output.includes(`Listening on 127.0.0.1:${port}`)) done()
      }
      const onExit = (code: number | null): void => done(new Error(`anvil exited with ${code}: ${output}`))
      function done(err?: Error): void {
        clearTimeout(timer)
        proc.stdout.off('data', onData)
        proc.stderr.off('data', onData)
        proc.off('exit', onExit)
        // Keep draining so anvil never blocks on a full pipe.
        proc.stdout.resume()
        proc.stderr.resume()
        if (err) reject(err)
        else resolve()
      }
      proc.stdout.on('data', onData)
      proc.stderr.on('data', onData)
      proc.once('exit', onExit)
    })
    await rpcRequest(rpc, 'eth_chainId', [], { timeoutMs: 5000 })
  }

  async function stop(): Promise<void> {
    const proc = child
    child = null
    if (proc === null || proc.exitCode !== null || proc.signalCode !== null) return
    const exited = new Promise<void>((r) => proc.once('exit', () => r()))
    proc.kill('SIGTERM')
    const timer = setTimeout(() => proc.kill('SIGKILL'), 5_000)
    await exited
    clearTimeout(timer)
  }

  await launch()
  return {
    url,
    port,
    rpc,
    call: (method, params = []) => rpcRequest(rpc, method, params, { timeoutMs: 10_000 }),
    async stop() {
      await stop()
      rmSync(cacheDir, { recursive: true, force: true })
    },
    async restart() {
      await stop()
      await launch()
    },
  }
}

/** One call a {@link MemorySink} received, in order. */
export type SinkEvent = { kind: 'emit'; blocks: BlockMessage[] } | { kind: 'reorg'; notice: ReorgNotice }

/** A {@link BlockSourceSink} that records everything, for tests. */
export interface MemorySink extends BlockSourceSink {
  readonly events: SinkEvent[]
  cursor: string | undefined
  /** Every emitted block, in emission order (re-emissions included). */
  emitted(): BlockMessage[]
  /** Emitted blocks after the last reorg notice (all of them when there was none). */
  emittedSinceLastReorg(): BlockMessage[]
  reorgs(): ReorgNotice[]
}

/** An in-memory sink: records emits and reorgs; the cursor is a field. */
export function memorySink(cursor?: string): MemorySink {
  const events: SinkEvent[] = []
  const sink: MemorySink = {
    events,
    cursor,
    emit(blocks) {
      events.push({ kind: 'emit', blocks: [...blocks] })
      return Promise.resolve()
    },
    reorg(notice) {
      events.push({ kind: 'reorg', notice })
      return Promise.resolve()
    },
    getCursor: () => Promise.resolve(sink.cursor),
    setCursor(value) {
      sink.cursor = value
      return Promise.resolve()
    },
    emitted: () => events.flatMap((e) => (e.kind === 'emit' ? e.blocks : [])),
    emittedSinceLastReorg() {
      const last = events.map((e) => e.kind).lastIndexOf('reorg')
      return events.slice(last + 1).flatMap((e) => (e.kind === 'emit' ? e.blocks : []))
    },
    reorgs: () => events.flatMap((e) => (e.kind === 'reorg' ? [e.notice] : [])),
  }
  return sink
}

/** Polls `cond` every 20 ms until it holds; throws after `timeoutMs`. */
export async function waitFor(cond: () => boolean | Promise<boolean>, timeoutMs = 15_000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}
