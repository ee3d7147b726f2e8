import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Hex } from 'viem'
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest'
import { fsArtifacts } from '../artifacts/fs/fs-artifacts.js'
import type { ArtifactStore } from '../artifacts/types.js'
import type { BlockMessage } from '../core/types.js'
import { estimateCost, type CostModel } from './cost.js'
import { installMessagePasser } from './load.js'
import { memorySink, startTestAnvil, waitFor, type MemorySink, type TestAnvil } from './test-anvil.js'
import { MESSAGE_PASSER_ADDRESS, readBlockTrace, rpcErrorCode, type ChainRpc } from './traces.js'
import { l2Watcher, parseWatcherCursor, type L2WatcherOptions, type WatcherLogger } from './watcher.js'

const DEV0 = '0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266'
const DEV1 = '0x70997970C51812dc3A010C7d01b50e0d17dc79C8'
const COST: CostModel = { base: 1_000, perGas: 1, perTx: 500, perTraceByte: 0.25 }
const quiet: WatcherLogger =
  process.env.PROOFLINE_TEST_VERBOSE === '1'
    ? { info: (o, m) => console.log(m, o), warn: (o, m) => console.warn(m, o), error: (o, m) => console.error(m, o) }
    : { info() {}, warn() {}, error() {} }

let dir: string
let artifacts: ArtifactStore

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'proofline-watcher-'))
  artifacts = fsArtifacts({ dir })
})
afterAll(async () => {
  await artifacts.close()
  await rm(dir, { recursive: true, force: true })
})

async function anvil(opts: Parameters<typeof startTestAnvil>[0] = {}): Promise<TestAnvil> {
  const a = await startTestAnvil(opts)
  onTestFinished(() => a.stop())
  return a
}

function watcher(a: { rpc: ChainRpc }, sink: MemorySink, over: Partial<L2WatcherOptions> = {}): ReturnType<typeof l2Watcher> {
  const w = l2Watcher({
    client: a.rpc,
    artifacts,
    sink,
    safety: { kind: 'latest', confirmations: 0 },
    startBlock: 1,
    pollIntervalMs: 30,
    cost: COST,
    retry: { initialMs: 20, maxMs: 200 },
    log: quiet,
    ...over,
  })
  onTestFinished(() => w.stop())
  return w
}

/** Sends a transfer and waits until it is mined (anvil's automine mines in the background). */
async function sendTx(a: TestAnvil, value: number, from: Hex = DEV0): Promise<void> {
  const hash = await a.call('eth_sendTransaction', [{ from, to: from === DEV0 ? DEV1 : DEV0, value: `0x${value.toString(16)}` }])
  await waitFor(async () => (await a.call('eth_getTransactionReceipt', [hash])) !== null, 5_000, 'the receipt')
}

async function canonicalHash(a: TestAnvil, n: number): Promise<Hex> {
  const b = (await a.call('eth_getBlockByNumber', [`0x${n.toString(16)}`, false])) as { hash: Hex }
  return b.hash
}

async function headNumber(a: TestAnvil): Promise<number> {
  return Number(BigInt((await a.call('eth_blockNumber')) as Hex))
}

/** Emitted blocks form one chain: contiguous numbers, each parentHash the previous hash. */
function expectLinked(blocks: BlockMessage[]): void {
  for (let i = 1; i < blocks.length; i++) {
    const [prev, cur] = [blocks[i - 1] as BlockMessage, blocks[i] as BlockMessage]
    expect(cur.number).toBe(prev.number + 1)
    expect(cur.parentHash).toBe(prev.hash)
  }
}

describe('l2Watcher on anvil', () => {
  it('behavior: emits contiguous linked blocks with a stored trace artifact (block, receipts, prestate, predeploy proof) and model cost', async () => {
    const a = await anvil()
    await installMessagePasser(a.rpc) // block-less: setCode does not mine
    for (let i = 1; i <= 5; i++) await sendTx(a, i) // automine: blocks 1..5, one tx each
    await a.call('evm_mine') // block 6, empty
    const sink = memorySink()
    const w = watcher(a, sink, { untilBlock: 6, maxBlocksPerTick: 4 })
    w.start()
    await w.finished
    const blocks = sink.emitted()
    expect(blocks.map((b) => b.number)).toEqual([1, 2, 3, 4, 5, 6])
    expectLinked(blocks)
    for (const b of blocks) expect(b.hash).toBe(await canonicalHash(a, b.number))
    expect(w.stats()).toMatchObject({ emitted: 6, rewinds: 0, orphaned: 0, next: 7 })
    expect(w.state()).toBe('finished')

    const first = blocks[0] as BlockMessage
    expect(first.trace?.key).toMatch(/^traces\/[0-9a-f]{64}$/)
    const art = await readBlockTrace(artifacts, first.trace as NonNullable<BlockMessage['trace']>)
    expect(art.number).toBe(1)
    expect(art.hash).toBe(first.hash)
    expect(art.block.hash).toBe(first.hash)
    expect(art.block.stateRoot).toMatch(/^0x[0-9a-f]{64}$/)
    expect(art.block.receiptsRoot).toMatch(/^0x[0-9a-f]{64}$/)
    expect(art.block.transactions).toHaveLength(1)
    expect(art.receipts).toHaveLength(1)
    expect(art.receipts[0]?.blockHash).toBe(first.hash)
    expect(art.tracer).toBe('prestateTracer')
    expect(art.prestate).toHaveLength(1)
    // The prestate of the transfer holds the sender's account.
    expect(JSON.stringify(art.prestate).toLowerCase()).toContain(DEV0.toLowerCase())
    expect(art.messagePasser.address.toLowerCase()).toBe(MESSAGE_PASSER_ADDRESS)
    expect(art.messagePasser.storageHash).toMatch(/^0x[0-9a-f]{64}$/)
    expect(art.messagePasser.accountProof.length).toBeGreaterThan(0)

    for (const b of blocks) {
      expect(b.trace).toBeDefined()
      expect(b.cost).toBe(estimateCost(COST, { gasUsed: b.gasUsed, txCount: b.txCount, traceBytes: b.trace?.size ?? -1 }))
      expect(b.cost).toBeGreaterThan(1_000)
    }
    expect(blocks.slice(0, 5).every((b) => b.txCount === 1 && b.gasUsed === 21_000)).toBe(true)
    expect(blocks[5]).toMatchObject({ txCount: 0, gasUsed: 0 })
    const cursor = parseWatcherCursor(sink.cursor ?? '')
    expect(cursor.next).toBe(7)
    expect(cursor.hashes).toEqual(blocks.map((b) => b.hash))
  })

  it("behavior: traces 'none' stores header, receipts and proof without calling the debug API", async () => {
    const a = await anvil()
    await sendTx(a, 1)
    const calls: string[] = []
    const rpc: ChainRpc = {
      request: (args) => {
        calls.push(args.method)
        return a.rpc.request(args)
      },
    }
    const sink = memorySink()
    const w = watcher({ rpc }, sink, { untilBlock: 1, traces: 'none' })
    w.start()
    await w.finished
    const art = await readBlockTrace(artifacts, sink.emitted()[0]?.trace as NonNullable<BlockMessage['trace']>)
    expect(art.tracer).toBeNull()
    expect(art.prestate).toBeNull()
    expect(art.receipts).toHaveLength(1)
    expect(calls.some((m) => m.startsWith('debug_'))).toBe(false)
  })

  it('behavior: latest+N stays N blocks behind the head', async () => {
    const a = await anvil()
    await a.call('anvil_mine', ['0x6'])
    const sink = memorySink()
    const w = watcher(a, sink, { safety: { kind: 'latest', confirmations: 2 } })
    w.start()
    await waitFor(() => w.stats().next === 5, 10_000, 'block 4')
    await new Promise((r) => setTimeout(r, 150))
    expect(sink.emitted().map((b) => b.number)).toEqual([1, 2, 3, 4])
    expect(w.stats().head).toBe(4)
    await a.call('evm_mine')
    await waitFor(() => w.stats().next === 6, 10_000, 'block 5')
  })

  it("behavior: 'safe' follows the node's safe tag; a node without the tag is a clear non-retryable error", async () => {
    const a = await anvil()
    await a.call('anvil_mine', ['0x24']) // 36 blocks; anvil's safe block is head − 32 = 4
    const sink = memorySink()
    const w = watcher(a, sink, { safety: { kind: 'safe' } })
    w.start()
    await waitFor(() => w.stats().next === 5, 10_000, 'safe block 4')
    await new Promise((r) => setTimeout(r, 150))
    expect(sink.emitted().map((b) => b.number)).toEqual([1, 2, 3, 4])
    await w.stop()

    const noTags: ChainRpc = {
      request: (args) => {
        const p = args.params as unknown[] | undefined
        if (args.method === 'eth_getBlockByNumber' && p?.[0] === 'finalized') {
          return Promise.reject(Object.assign(new Error('invalid block tag'), { code: -32602 }))
        }
        return a.rpc.request(args)
      },
    }
    const w2 = watcher({ rpc: noTags }, memorySink(), { safety: { kind: 'finalized' } })
    w2.start()
    const err = await w2.finished.then(
      () => null,
      (e: unknown) => e,
    )
    expect(err).toMatchObject({ code: 'CHAIN_RPC_UNSUPPORTED', retryable: false })
    expect(String((err as Error).message)).toMatch(/'finalized' block tag.*kind: 'latest'/)
    expect(w2.state()).toBe('failed')
  })

  it('behavior: a reorg at the same height (anvil_reorg) is reported with the orphaned hashes, then the new chain is emitted', async () => {
    const a = await anvil()
    for (let i = 1; i <= 6; i++) await sendTx(a, i) // blocks 1..6
    const sink = memorySink()
    const w = watcher(a, sink, { safety: { kind: 'latest', confirmations: 1 } })
    w.start()
    await waitFor(() => w.stats().next === 6, 10_000, 'blocks 1..5')
    const old = sink.emitted()
    expect(old.map((b) => b.number)).toEqual([1, 2, 3, 4, 5])

    // Replace blocks 3..6 (depth 4) with blocks carrying different transactions.
    await a.call('anvil_reorg', [4, [[{ from: DEV1, to: DEV0, value: '0x7' }, 0], [{ from: DEV1, to: DEV0, value: '0x8' }, 2]]])
    expect(await canonicalHash(a, 3)).not.toBe(old[2]?.hash)
    await waitFor(() => sink.reorgs().length === 1 && w.stats().next === 6, 10_000, 'the rewind and re-emission')

    const [notice] = sink.reorgs()
    expect(notice).toEqual({
      fromBlock: 3,
      depth: 3,
      orphaned: old.slice(2).map((b) => ({ number: b.number, hash: b.hash })),
    })
    const after = sink.emittedSinceLastReorg()
    expect(after.map((b) => b.number)).toEqual([3, 4, 5])
    expect(after[0]?.parentHash).toBe(old[1]?.hash)
    expectLinked(after)
    for (const b of after) expect(b.hash).toBe(await canonicalHash(a, b.number))
    const orphanedHashes = new Set(notice?.orphaned.map((o) => o.hash))
    expect(after.some((b) => orphanedHashes.has(b.hash))).toBe(false)
    expect(w.stats()).toMatchObject({ rewinds: 1, orphaned: 3 })
    // The cursor forgot the orphaned hashes.
    expect(parseWatcherCursor(sink.cursor ?? '').hashes).toEqual([old[0]?.hash, old[1]?.hash, ...after.map((b) => b.hash)])
  })

  it('behavior: evm_revert to a snapshot and a different, longer chain → rewind from the fork, nothing orphaned emitted after the notice', async () => {
    const a = await anvil()
    for (let i = 1; i <= 3; i++) await sendTx(a, i) // blocks 1..3
    const snap = await a.call('evm_snapshot')
    for (let i = 4; i <= 7; i++) await sendTx(a, i) // blocks 4..7 (to be orphaned)
    const sink = memorySink()
    const w = watcher(a, sink, { safety: { kind: 'latest', confirmations: 1 } })
    w.start()
    await waitFor(() => w.stats().next === 7, 10_000, 'blocks 1..6')
    const old = sink.emitted()

    expect(await a.call('evm_revert', [snap])).toBe(true)
    // A different chain: other sender, other values, one more block than before.
    for (let i = 0; i < 6; i++) await sendTx(a, 100 + i, DEV1)
    expect(await headNumber(a)).toBe(9)
    await waitFor(() => w.stats().next === 9, 10_000, 'the new chain up to block 8')

    const reorgs = sink.reorgs()
    expect(reorgs).toHaveLength(1)
    expect(reorgs[0]?.fromBlock).toBe(4)
    expect(reorgs[0]?.orphaned).toEqual(old.filter((b) => b.number >= 4).map((b) => ({ number: b.number, hash: b.hash })))
    expect(reorgs[0]?.depth).toBe(3)
    // Everything before the notice was the old chain, everything after is the new one.
    const after = sink.emittedSinceLastReorg()
    expect(after.map((b) => b.number)).toEqual([4, 5, 6, 7, 8])
    expect(after[0]?.parentHash).toBe(old[2]?.hash)
    expectLinked(after)
    for (const b of after) expect(b.hash).toBe(await canonicalHash(a, b.number))
    const orphaned = new Set(reorgs[0]?.orphaned.map((o) => o.hash))
    expect(after.filter((b) => orphaned.has(b.hash))).toEqual([])
    expect(w.stats().rewinds).toBe(1)
  })

  it('behavior: a head that moves backwards below the emitted tip (anvil_rollback) is a rewind', async () => {
    const a = await anvil()
    await a.call('anvil_mine', ['0x5'])
    const sink = memorySink()
    const w = watcher(a, sink)
    w.start()
    await waitFor(() => w.stats().next === 6, 10_000, 'blocks 1..5')
    const old = sink.emitted()
    await a.call('anvil_rollback', [2]) // head back to 3
    await waitFor(() => sink.reorgs().length === 1, 10_000, 'the rewind')
    expect(sink.reorgs()[0]).toEqual({ fromBlock: 4, depth: 2, orphaned: old.slice(3).map((b) => ({ number: b.number, hash: b.hash })) })
    expect(w.stats().next).toBe(4)
    await sendTx(a, 9) // a new block 4
    await waitFor(() => w.stats().next === 5, 10_000, 'the new block 4')
    const after = sink.emittedSinceLastReorg()
    expect(after.map((b) => [b.number, b.txCount])).toEqual([[4, 1]])
    expect(after[0]?.parentHash).toBe(old[2]?.hash)
  })

  it('behavior: a restarted watcher resumes from the cursor without gaps or repeats and detects a reorg that spans the restart', async () => {
    const a = await anvil()
    for (let i = 1; i <= 8; i++) await sendTx(a, i) // blocks 1..8
    const sink = memorySink()
    const opts = { safety: { kind: 'latest', confirmations: 1 } as const }

    const w1 = watcher(a, sink, { ...opts, untilBlock: 4 })
    w1.start()
    await w1.finished
    const w2 = watcher(a, sink, opts)
    w2.start()
    await waitFor(() => w2.stats().next === 8, 10_000, 'blocks 5..7')
    await w2.stop()
    const beforeReorg = sink.emitted()
    expect(beforeReorg.map((b) => b.number)).toEqual([1, 2, 3, 4, 5, 6, 7])
    expectLinked(beforeReorg)

    // While no watcher runs, blocks 6..8 are replaced.
    await a.call('anvil_reorg', [3, [[{ from: DEV1, to: DEV0, value: '0x42' }, 0]]])
    const w3 = watcher(a, sink, opts)
    w3.start()
    await waitFor(() => sink.reorgs().length === 1 && w3.stats().next === 8, 10_000, 'the rewind after restart')
    expect(sink.reorgs()[0]).toEqual({
      fromBlock: 6,
      depth: 2,
      orphaned: beforeReorg.slice(5).map((b) => ({ number: b.number, hash: b.hash })),
    })
    const after = sink.emittedSinceLastReorg()
    expect(after.map((b) => b.number)).toEqual([6, 7])
    expect(after[0]?.parentHash).toBe(beforeReorg[4]?.hash)
    for (const b of after) expect(b.hash).toBe(await canonicalHash(a, b.number))
    expect(w3.stats()).toMatchObject({ rewinds: 1, orphaned: 2, emitted: 2 })
  })

  it('behavior: the node going down and coming back (same state) → retries, no crash, no skipped or repeated block', async () => {
    const stateDir = await mkdtemp(join(tmpdir(), 'proofline-anvil-state-'))
    onTestFinished(() => rm(stateDir, { recursive: true, force: true }))
    const a = await anvil({ statePath: join(stateDir, 'state.json') })
    for (let i = 1; i <= 3; i++) await sendTx(a, i)
    const sink = memorySink()
    const w = watcher(a, sink)
    w.start()
    await waitFor(() => w.stats().next === 4, 10_000, 'blocks 1..3')
    await a.stop()
    await waitFor(() => w.stats().errors >= 3, 10_000, 'failed ticks while the node is down')
    expect(w.state()).toBe('running')
    expect(w.stats().next).toBe(4)
    await a.restart()
    for (let i = 4; i <= 6; i++) await sendTx(a, i)
    await waitFor(() => w.stats().next === 7, 15_000, 'blocks 4..6 after the restart')
    const blocks = sink.emitted()
    expect(blocks.map((b) => b.number)).toEqual([1, 2, 3, 4, 5, 6])
    expectLinked(blocks)
    expect(sink.reorgs()).toEqual([])
  })

  it('behavior: a flaky node (a quarter of calls fail) → every block emitted exactly once, in order', async () => {
    const a = await anvil()
    for (let i = 1; i <= 10; i++) await sendTx(a, i)
    let seed = 7
    const rand = (): number => ((seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31)
    const flaky: ChainRpc = {
      request: (args) => (rand() < 0.25 ? Promise.reject(new Error('HTTP request failed: socket hang up')) : a.rpc.request(args)),
    }
    const sink = memorySink()
    const w = watcher({ rpc: flaky }, sink, { untilBlock: 10, maxBlocksPerTick: 3, retry: { initialMs: 1, maxMs: 5 } })
    w.start()
    await w.finished
    const blocks = sink.emitted()
    expect(blocks.map((b) => b.number)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    expectLinked(blocks)
    expect(w.stats().errors).toBeGreaterThan(0)
  })

  it('behavior: stop() is prompt even while an RPC call hangs', async () => {
    const hanging: ChainRpc = { request: () => new Promise(() => {}) }
    const w = watcher({ rpc: hanging }, memorySink())
    w.start()
    await new Promise((r) => setTimeout(r, 50))
    const t0 = Date.now()
    await w.stop()
    expect(Date.now() - t0).toBeLessThan(200)
    expect(w.state()).toBe('stopped')
    await w.finished
  })

  it('behavior: a reorg deeper than maxReorgDepth stops the watcher with WATCHER_REORG_TOO_DEEP', async () => {
    const a = await anvil()
    await a.call('anvil_mine', ['0x8'])
    const sink = memorySink()
    const w = watcher(a, sink, { maxReorgDepth: 2 })
    w.start()
    await waitFor(() => w.stats().next === 9, 10_000, 'blocks 1..8')
    await a.call('anvil_reorg', [5, [[{ from: DEV1, to: DEV0, value: '0x1' }, 0]]])
    const err = await w.finished.then(
      () => null,
      (e: unknown) => e,
    )
    expect(err).toMatchObject({ code: 'WATCHER_REORG_TOO_DEEP', retryable: false })
    expect(sink.reorgs()).toEqual([])
  })

  it('behavior: a node without debug_traceBlockByHash is a clear non-retryable error pointing at traces: none', async () => {
    const a = await anvil()
    await a.call('evm_mine')
    const noDebug: ChainRpc = {
      request: (args) =>
        args.method.startsWith('debug_') ? Promise.reject(Object.assign(new Error('Method not found'), { code: -32601 })) : a.rpc.request(args),
    }
    const w = watcher({ rpc: noDebug }, memorySink())
    w.start()
    const err = await w.finished.then(
      () => null,
      (e: unknown) => e,
    )
    expect(err).toMatchObject({ code: 'CHAIN_RPC_UNSUPPORTED', retryable: false })
    expect(rpcErrorCode(err)).toBe(-32601)
    expect((err as Error).message).toMatch(/traces to 'none'/)
  })
})

describe('parseWatcherCursor', () => {
  it('behavior: a malformed cursor is refused with WATCHER_BAD_CURSOR', () => {
    expect(() => parseWatcherCursor('nope')).toThrow(expect.objectContaining({ code: 'WATCHER_BAD_CURSOR' }) as Error)
    expect(() => parseWatcherCursor(JSON.stringify({ v: 1, next: 3, start: 5, hashes: [] }))).toThrow(/malformed/)
    expect(() => parseWatcherCursor(JSON.stringify({ v: 1, next: 3, start: 1, hashes: ['0x12'] }))).toThrow(/malformed/)
    const ok = { v: 1, next: 3, start: 1, hashes: [`0x${'ab'.repeat(32)}`] }
    expect(parseWatcherCursor(JSON.stringify(ok))).toEqual(ok)
  })
})
