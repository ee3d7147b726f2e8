import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it, onTestFinished } from 'vitest'
import { fsArtifacts } from '../artifacts/fs/fs-artifacts.js'
import { memorySink, startTestAnvil, waitFor } from './test-anvil.js'
import { parseWatcherCursor, l2Watcher } from './watcher.js'

const dirs: string[] = []
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true })
})

describe('the watcher cursor under a failing store', () => {
  it('behavior: a cursor write that failed is retried on the next tick even when no new block comes', { timeout: 60_000 }, async () => {
    const anvil = await startTestAnvil()
    onTestFinished(() => anvil.stop())
    const dir = await mkdtemp(join(tmpdir(), 'proofline-cursor-'))
    dirs.push(dir)
    await anvil.call('anvil_mine', ['0x5'])
    const sink = memorySink()
    // The store is down for the first cursor write (a Postgres restart), then back.
    let failures = 1
    const setCursor = sink.setCursor.bind(sink)
    sink.setCursor = (value) => (failures-- > 0 ? Promise.reject(new Error('the database system is starting up')) : setCursor(value))
    const w = l2Watcher({
      client: anvil.rpc,
      artifacts: fsArtifacts({ dir }),
      sink,
      safety: { kind: 'latest', confirmations: 0 },
      startBlock: 1,
      pollIntervalMs: 30,
      traces: 'none',
      cost: { base: 0, perGas: 1, perTx: 0, perTraceByte: 0 },
      retry: { initialMs: 20, maxMs: 100 },
      log: { info() {}, warn() {}, error() {} },
    })
    onTestFinished(() => w.stop())
    w.start()
    // Blocks 1..5 are emitted once; the chain then stays still.
    await waitFor(() => sink.emitted().length >= 5, 20_000, 'blocks 1..5 emitted')
    await waitFor(() => sink.cursor !== undefined && parseWatcherCursor(sink.cursor).next === 6, 10_000, 'the cursor stored at 6')
    expect(w.stats().errors).toBe(1)
    expect(sink.emitted().map((b) => b.number)).toEqual([1, 2, 3, 4, 5])
  })
})
