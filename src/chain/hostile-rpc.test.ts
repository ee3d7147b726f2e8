import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createPublicClient, http, type Hex } from 'viem'
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest'
import { fsArtifacts } from '../artifacts/fs/fs-artifacts.js'
import type { ArtifactStore } from '../artifacts/types.js'
import { ProoflineError } from '../core/errors.js'
import { hostileRpc, type HostileRpc } from './hostile-rpc.fixture.js'
import { installMessagePasser } from './load.js'
import { outputRootAt } from './output-root.js'
import { memorySink, startTestAnvil, type TestAnvil } from './test-anvil.js'
import { httpChainRpc, readBlockTrace } from './traces.js'
import { l2Watcher } from './watcher.js'

/**
 * A broken or hostile L2 RPC endpoint: made-up block hashes, a made-up storage root, a block
 * with another number, truncated JSON and a 32 MiB answer. The watcher and the output-root
 * code must reject every spoiled answer (never emit or commit to it), keep running, and take
 * the honest answer when it comes.
 */
let anvil: TestAnvil
let dir: string
let artifacts: ArtifactStore
const DEV0 = '0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266'

beforeAll(async () => {
  anvil = await startTestAnvil()
  dir = await mkdtemp(join(tmpdir(), 'proofline-hostile-'))
  artifacts = fsArtifacts({ dir })
  await installMessagePasser(anvil.rpc)
  for (let i = 0; i < 6; i++) await anvil.call('eth_sendTransaction', [{ from: DEV0, to: '0x000000000000000000000000000000000000dEaD', value: '0x1' }])
}, 60_000)
afterAll(async () => {
  await anvil?.stop()
  await artifacts?.close()
  if (dir) await rm(dir, { recursive: true, force: true })
})

async function hostile(): Promise<HostileRpc> {
  const h = await hostileRpc(anvil.url)
  onTestFinished(() => h.close())
  return h
}
const blockParam = (n: number) => (params: unknown[]): boolean => params[0] === `0x${n.toString(16)}`
const canonical = async (n: number): Promise<Hex> => ((await anvil.call('eth_getBlockByNumber', [`0x${n.toString(16)}`, false])) as { hash: Hex }).hash

describe('hostile L2 RPC answers', () => {
  async function runWatcher(fetchConcurrency: number): Promise<{ h: HostileRpc; sink: ReturnType<typeof memorySink>; errors: string[]; errorTicks: number }> {
    const h = await hostile()
    // Each spoiled answer aimed at its own block.
    const byHash = async (n: number): Promise<(params: unknown[]) => boolean> => {
      const hash = await canonical(n)
      return (params) => JSON.stringify(params).includes(hash)
    }
    h.arm('eth_getBlockReceipts', 'truncate', 2, await byHash(2))
    h.arm('eth_getBlockByNumber', 'wrong-hash', 2, blockParam(3))
    h.arm('eth_getBlockByNumber', 'wrong-number', 1, blockParam(4))
    h.arm('eth_getProof', 'wrong-storage', 2, await byHash(5))
    h.arm('debug_traceBlockByHash', 'huge', 1, await byHash(6))
    const sink = memorySink()
    const errors: string[] = []
    const w = l2Watcher({
      client: httpChainRpc(h.url, { timeoutMs: 20_000 }),
      artifacts,
      sink,
      safety: { kind: 'latest', confirmations: 0 },
      startBlock: 1,
      untilBlock: 6,
      pollIntervalMs: 30,
      fetchConcurrency,
      cost: { base: 0, perGas: 1, perTx: 0, perTraceByte: 0 },
      retry: { initialMs: 20, maxMs: 100 },
      log: { info() {}, warn: (o) => void errors.push(String(o.err)), error: (o) => void errors.push(String(o.err)) },
    })
    onTestFinished(() => w.stop())
    w.start()
    await w.finished
    expect(h.remaining()).toBe(0)
    expect(h.spoiled).toEqual({ 'wrong-hash': 2, 'wrong-number': 1, 'wrong-storage': 2, truncate: 2, huge: 1 })
    // Only real blocks were emitted, in order, each with its real hash and storage root; no reorg was reported.
    const emitted = sink.events.flatMap((e) => (e.kind === 'emit' ? e.blocks : []))
    expect(sink.events.some((e) => e.kind === 'reorg')).toBe(false)
    const unique = new Map(emitted.map((b) => [b.number, b]))
    expect([...unique.keys()].sort((a, b) => a - b)).toEqual([1, 2, 3, 4, 5, 6])
    for (const b of unique.values()) {
      expect(b.hash).toBe(await canonical(b.number))
      const trace = await readBlockTrace(artifacts, b.trace as NonNullable<typeof b.trace>)
      const real = (await anvil.call('eth_getProof', ['0x4200000000000000000000000000000000000016', [], { blockHash: b.hash }])) as { storageHash: string }
      expect(trace.messagePasser.storageHash).toBe(real.storageHash)
    }
    return { h, sink, errors, errorTicks: w.stats().errors }
  }

  it('behavior: the watcher rejects made-up hashes, a wrong block number, a made-up storage root, truncated JSON and a huge body, and emits only the real blocks', { timeout: 120_000 }, async () => {
    // One block at a time: every spoiled answer fails its own tick with a typed, clear error.
    const { errors, errorTicks } = await runWatcher(1)
    expect(errorTicks).toBe(8)
    // A made-up hash, and a block claiming another number, fail the header hash check.
    expect(errors.filter((e) => /^eth_getBlockByNumber\(3\) returned block 0xabab.*, which is not its header's hash/.test(e))).toHaveLength(2)
    expect(errors.filter((e) => /^eth_getBlockByNumber\(4\) returned block .*, which is not its header's hash/.test(e))).toHaveLength(1)
    expect(errors.filter((e) => /^eth_getProof returned an invalid result: storageHash 0xcdcd.* is not the one the account proof gives/.test(e))).toHaveLength(2)
    expect(errors.filter((e) => /^eth_getBlockReceipts failed: HTTP request failed/.test(e))).toHaveLength(2)
    expect(errors.filter((e) => /^debug_traceBlockByHash failed: .*(too large|exceed|size)/i.test(e))).toHaveLength(1)
  })

  it('behavior: with concurrent fetching (the default), spoiled answers are rejected just the same', { timeout: 120_000 }, async () => {
    const { errorTicks } = await runWatcher(8)
    expect(errorTicks).toBeGreaterThan(0)
  })

  it('behavior: outputRootAt refuses a made-up block hash and a made-up storage root, and fails retryably on truncated JSON and a huge body', { timeout: 60_000 }, async () => {
    const h = await hostile()
    const client = createPublicClient({ transport: http(h.url, { retryCount: 0 }) })
    const honest = await outputRootAt(client, 4n)
    expect(honest.blockHash).toBe(await canonical(4))

    h.arm('eth_getBlockByNumber', 'wrong-hash', 1)
    const e1 = await outputRootAt(client, 4n).catch((e: unknown) => e)
    expect(e1).toMatchObject({ code: 'OUTPUT_HEADER_INVALID', retryable: false })
    expect((e1 as Error).message).toMatch(/block 4 is not what its hash says/)

    h.arm('eth_getProof', 'wrong-storage', 1)
    expect(await outputRootAt(client, 4n).catch((e: unknown) => e)).toMatchObject({ code: 'OUTPUT_PROOF_INVALID', retryable: false })

    for (const how of ['truncate', 'huge'] as const) {
      h.arm('eth_getBlockByNumber', how, 1)
      const e = await outputRootAt(client, 4n).catch((x: unknown) => x)
      expect(e, how).toBeInstanceOf(ProoflineError)
      expect(e, how).toMatchObject({ code: 'OUTPUT_BLOCK_NOT_FOUND', retryable: true })
    }
    // The node answers honestly again: the same root as before.
    expect((await outputRootAt(client, 4n)).outputRoot).toBe(honest.outputRoot)
  })
})
